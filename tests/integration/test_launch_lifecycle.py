"""Opt-in launch lifecycle: the action is completed with CONTINUE once the instance's node is Ready;
before that the hook is heartbeated and the event continued later."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import boto3
from botocore.stub import Stubber
from moto import mock_aws

from spot_rebalancer.aws import AutoScaling, Ec2
from spot_rebalancer.config import Settings
from spot_rebalancer.events import parse_event
from spot_rebalancer.tagging import LaunchCompleter
from tests.ec2 import launch_instance

EVENTS = Path(__file__).parents[1] / "events"
SAMPLE = EVENTS / "lifecycle-launch.json"
SETTINGS = Settings(cluster_name="test", launch_lifecycle_hook=True)


def launch_event(instance_id: str, sample: Path = SAMPLE):
    raw = json.loads(sample.read_text())
    raw["detail"]["EC2InstanceId"] = instance_id
    raw["time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return parse_event(raw)[0]


def test_launch_is_completed_once_the_node_is_ready_and_heartbeated_before(kube, nodes):
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="eu-west-1")
        instance = launch_instance(ec2)
        event = launch_event(instance)
        client = boto3.client("autoscaling", region_name="eu-west-1")
        completer = LaunchCompleter(SETTINGS, Ec2(ec2), AutoScaling(client), lambda _cluster: kube)
        action = {"AutoScalingGroupName": event.group, "LifecycleHookName": event.hook,
                  "LifecycleActionToken": event.token, "InstanceId": instance}
        with Stubber(client) as calls:
            calls.add_response("record_lifecycle_action_heartbeat", {}, action)
            waiting = completer.handle(event)  # the instance runs; its node has not joined yet
            calls.assert_no_pending_responses()
            nodes(lifecycle="spot", instance_id=instance)
            calls.add_response("complete_lifecycle_action", {},
                               {**action, "LifecycleActionResult": "CONTINUE"})
            done = completer.handle(event, attempt=1)
            calls.assert_no_pending_responses()

    assert waiting.continue_at is not None
    assert done.continue_at is None
    assert [s.outcome for s in done.steps if s.action == "complete-lifecycle"] == ["CONTINUE"]


def test_a_launch_into_the_warm_pool_completes_at_once_and_one_from_it_waits_for_the_node(kube, nodes):
    """An instance launched into the warm pool is stopped there: no node will join, and waiting for
    one held the group's warm-up for the hook's whole timeout."""
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="eu-west-1")
        instance = launch_instance(ec2)
        client = boto3.client("autoscaling", region_name="eu-west-1")
        completer = LaunchCompleter(SETTINGS, Ec2(ec2), AutoScaling(client), lambda _cluster: kube)
        into = launch_event(instance, EVENTS / "lifecycle-launch-warm-pool.json")
        out_of = launch_event(instance, EVENTS / "lifecycle-launch-from-warm-pool.json")
        action = {"AutoScalingGroupName": into.group, "LifecycleHookName": into.hook, "InstanceId": instance}
        with Stubber(client) as calls:
            calls.add_response("complete_lifecycle_action", {}, {
                **action, "LifecycleActionToken": into.token, "LifecycleActionResult": "CONTINUE"})
            pooled = completer.handle(into)  # no node, and none coming
            calls.add_response("record_lifecycle_action_heartbeat", {},
                               {**action, "LifecycleActionToken": out_of.token})
            joining = completer.handle(out_of)
            calls.assert_no_pending_responses()

    assert pooled.continue_at is None
    assert [(s.action, s.outcome) for s in pooled.steps] == [("complete-lifecycle", "CONTINUE")]
    assert joining.continue_at is not None, "into the group: waits for its node as any launch"


def test_without_the_opt_in_nothing_is_called(kube):
    with mock_aws():
        client = boto3.client("autoscaling", region_name="eu-west-1")
        completer = LaunchCompleter(replace(SETTINGS, launch_lifecycle_hook=False),
                                    Ec2(boto3.client("ec2", region_name="eu-west-1")),
                                    AutoScaling(client), lambda _cluster: kube)
        with Stubber(client):  # any call would fail: no response is queued
            result = completer.handle(launch_event("i-0123456789abcdef0"))
    assert [s.action for s in result.steps] == ["ignore"]
