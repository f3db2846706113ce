"""Every interruption signal, end to end: an AWS sample event for a real (moto) instance whose node
runs on the local control plane goes through DrainService; the node's taints and cordon,
the pods gone or kept, and the Auto Scaling calls made are checked against the real cluster."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from spot_rebalancer.aws import AutoScaling, Ec2
from spot_rebalancer.config import Settings
from spot_rebalancer.drain import DrainService
from spot_rebalancer.events import parse_event
from spot_rebalancer.telemetry import MetricsRecorder
from tests.ec2 import launch_instance
from tests.kube.workloads import daemonset, deployment, pods, running, wait_for

EVENTS = Path(__file__).parents[1] / "events"
REGION = "eu-west-1"
SETTINGS = Settings(cluster_name="test", drain_timeout_seconds=60)
INSTANCE_ID = re.compile(r"i-[0-9a-f]{17}\b|i-[0-9a-f]{8}\b")


def event_for(sample: str, instance_id: str) -> dict:
    """The AWS sample with its instance id(s) replaced by ours and the time set to now."""
    text = INSTANCE_ID.sub(instance_id, (EVENTS / sample).read_text())
    raw = json.loads(text)
    raw["time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return raw


CASES = {
    # sample, settings change, taint effect (None: no taint), cordoned, pods evicted
    "spot warning": ("spot-interruption-terminate.json", {}, ("spot-interruption", "NoSchedule"), True, True),
    "recommendation, taint": ("rebalance-recommendation.json", {"recommendation_default": "taint"},
                              ("rebalance-recommendation", "PreferNoSchedule"), False, False),
    "recommendation, cordon": ("rebalance-recommendation.json", {"recommendation_default": "cordon"},
                               ("rebalance-recommendation", "NoSchedule"), True, False),
    "recommendation, drain": ("rebalance-recommendation.json", {"recommendation_default": "drain"},
                              ("rebalance-recommendation", "NoSchedule"), True, True),
    "recommendation, none": ("rebalance-recommendation.json", {"recommendation_default": "none"},
                             None, False, False),
    "asg terminate": ("lifecycle-terminate.json", {}, ("asg-termination", "NoSchedule"), True, True),
    "stopping": ("state-change-stopping.json", {}, ("instance-stopping", "NoSchedule"), True, True),
    "shutting-down": ("state-change-shutting-down.json", {}, ("instance-shutting-down", "NoSchedule"), True,
                      True),
    "spot hibernation": ("spot-interruption-hibernate.json", {}, ("spot-stop", "NoSchedule"), True,
                         True),
    "health reboot maintenance": ("health-reboot-maintenance.json", {},
                                  ("scheduled-maintenance", "NoSchedule"), True, True),
    "health retirement": ("health-instance-retirement.json", {}, ("scheduled-retirement", "NoSchedule"),
                          True, True),
    "health degraded": ("health-store-drive-degraded-backup.json", {},
                        ("degraded-hardware", "NoSchedule"), True, True),
    "capacity reservation interruption": ("capacity-reservation-interruption.json", {},
                                          ("capacity-reservation-interruption", "NoSchedule"), True, True),
    "asg terminate into the warm pool": ("lifecycle-terminate-warm-pool.json", {},
                                         ("asg-warm-pool", "NoSchedule"), True, True),
    # Backstops: the earlier event was lost and the node still has pods.
    "stopped": ("state-change-stopped.json", {}, ("instance-stopped", "NoSchedule"), True, True),
    "terminated": ("state-change-terminated.json", {}, ("instance-terminated", "NoSchedule"), True, True),
}


@pytest.mark.parametrize("case", CASES)
def test_event_end_to_end(api, kube, namespace, nodes, case):
    sample, changes, taint, cordoned, evicts = CASES[case]
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        instance = launch_instance(ec2)
        node = nodes(lifecycle="spot", instance_id=instance)
        deployment(api, namespace, "web", replicas=2)
        daemonset(api, namespace, "agent")
        wait_for(lambda: len(running(pods(api, namespace))) == 3, "web and the agent on the node")
        nodes(lifecycle="on-demand")  # room for the replacements
        wait_for(lambda: len(running(pods(api, namespace, "agent"))) == 2, "the agent on both nodes")

        raw = event_for(sample, instance)
        asg_client = boto3.client("autoscaling", region_name=REGION)
        metrics = MetricsRecorder()
        handler = DrainService(replace(SETTINGS, **changes), Ec2(ec2), AutoScaling(asg_client),
                                      lambda _cluster: kube, metrics)
        with Stubber(asg_client) as lifecycle_calls:
            if raw["detail-type"] == "EC2 Instance-terminate Lifecycle Action":
                detail = raw["detail"]
                action = {"AutoScalingGroupName": detail["AutoScalingGroupName"],
                          "LifecycleHookName": detail["LifecycleHookName"],
                          "LifecycleActionToken": detail["LifecycleActionToken"], "InstanceId": instance}
                # Heartbeated before the drain, completed after it.
                lifecycle_calls.add_response("record_lifecycle_action_heartbeat", {}, action)
                lifecycle_calls.add_response("complete_lifecycle_action", {},
                                             {**action, "LifecycleActionResult": "CONTINUE"})
            results = [handler.handle(event, budget_seconds=100) for event in parse_event(raw)]
            lifecycle_calls.assert_no_pending_responses()

    after = api.get(f"/api/v1/nodes/{node.name}")
    taints = [(t["key"], t["effect"]) for t in after["spec"].get("taints", [])]
    assert taints == ([(f"spot-rebalancer/{taint[0]}", taint[1])] if taint else [])
    assert bool(after["spec"].get("unschedulable")) is cordoned
    on_node = {p["metadata"]["labels"]["app"] for p in pods(api, namespace)
               if p["spec"].get("nodeName") == node.name and not p["metadata"].get("deletionTimestamp")}
    assert on_node == ({"agent"} if evicts else {"web", "agent"}), "DaemonSet pods always stay"
    assert all(r.continue_at is None for r in results)
    if evicts:
        assert metrics.total("PodsEvicted", Source="drain") == 2
        assert metrics.total("PodsEvicted", Source="move") == 0
        assert metrics.total("EventToCordonLatency") > 0
        wait_for(lambda: len(running(pods(api, namespace, "web"))) == 2, "replacements elsewhere")
    if taint is None:
        assert metrics.total("PodsEvicted") == 0
