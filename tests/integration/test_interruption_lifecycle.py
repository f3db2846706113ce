"""Auto Scaling terminate lifecycle hooks on the local control plane and moto EC2: the hook is
completed exactly once, with the right parameters, only once the node is empty, with the configured
result when the drain runs out of time, and heartbeated on every delivery (the first, a retry, a
continuation) before its drain.
Events for instances that are not our nodes are ignored, but their hooks are still completed.
(moto has no CompleteLifecycleAction or RecordLifecycleActionHeartbeat: a Stubber answers them.)"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from infra.config import SpotRebalancerConfig
from spot_rebalancer.aws import AutoScaling, Ec2
from spot_rebalancer.config import Settings
from spot_rebalancer.drain import DrainJob, DrainService, lifecycle_action
from spot_rebalancer.events import LifecycleHook, parse_event
from spot_rebalancer.results import HandleResult
from spot_rebalancer.telemetry import MetricsRecorder
from tests.ec2 import launched_ago
from tests.kube.workloads import deployment, pdb, pods, running, wait_for

SAMPLE = Path(__file__).parents[1] / "events" / "lifecycle-terminate.json"
REGION = "eu-west-1"
INSTANCE_ID = re.compile(r"i-[0-9a-f]{17}\b")


@dataclass
class Aws:
    ec2: object
    autoscaling: object
    stub: Stubber

    def instance(self, cluster: str = "test") -> str:
        image = self.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        return self.ec2.run_instances(
            ImageId=image, MinCount=1, MaxCount=1, InstanceType="m6g.large",
            TagSpecifications=[{"ResourceType": "instance",
                                "Tags": [{"Key": "eks:cluster-name", "Value": cluster}]}],
        )["Instances"][0]["InstanceId"]

    def expect(self, operation: str, hook: LifecycleHook, **extra: str) -> None:
        self.stub.add_response(operation, {}, {
            "AutoScalingGroupName": hook.group, "LifecycleHookName": hook.hook,
            "LifecycleActionToken": hook.token, "InstanceId": hook.instance_id, **extra})


@pytest.fixture
def aws() -> Iterator[Aws]:
    with mock_aws():
        autoscaling = boto3.client("autoscaling", region_name=REGION)
        with Stubber(autoscaling) as stub:
            yield Aws(boto3.client("ec2", region_name=REGION), autoscaling, stub)
            stub.assert_no_pending_responses()


def hook_for(instance_id: str) -> LifecycleHook:
    raw = json.loads(INSTANCE_ID.sub(instance_id, SAMPLE.read_text()))
    raw["time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    (event,) = parse_event(raw)
    assert isinstance(event, LifecycleHook)
    return event


def handler_for(aws: Aws, kube, metrics: MetricsRecorder, **settings) -> DrainService:
    return DrainService(Settings(cluster_name="test", **settings), Ec2(aws.ec2),
                               AutoScaling(aws.autoscaling), lambda _cluster: kube, metrics)


def pods_on(api, namespace: str, node: str) -> list[dict]:
    return [p for p in pods(api, namespace) if p["spec"].get("nodeName") == node]


def busy_node(api, namespace: str, nodes, instance_id: str, replicas: int = 2):
    """A spot node running `replicas` web pods, and an on-demand node with room for them."""
    node = nodes(lifecycle="spot", instance_id=instance_id)
    deployment(api, namespace, "web", replicas=replicas)
    wait_for(lambda: len(running(pods(api, namespace, "web"))) == replicas, "web pods running")
    nodes(lifecycle="on-demand")
    return node


def test_the_hook_is_completed_with_continue_only_once_the_node_is_empty(api, kube, namespace, nodes, aws):
    instance = aws.instance()
    node = busy_node(api, namespace, nodes, instance)
    hook = hook_for(instance)
    left_at: dict[str, list[list[dict]]] = {"heartbeat": [], "completion": []}
    for operation, when in (("RecordLifecycleActionHeartbeat", "heartbeat"),
                            ("CompleteLifecycleAction", "completion")):
        aws.autoscaling.meta.events.register(
            f"before-parameter-build.autoscaling.{operation}",
            lambda when=when, **_: left_at[when].append(pods_on(api, namespace, node.name)))
    aws.expect("record_lifecycle_action_heartbeat", hook)
    aws.expect("complete_lifecycle_action", hook, LifecycleActionResult="CONTINUE")

    metrics = MetricsRecorder()
    result = handler_for(aws, kube, metrics, drain_timeout_seconds=20).handle(hook, budget_seconds=100)

    assert [len(left) for left in left_at["heartbeat"]] == [2], "the first delivery heartbeats, then drains"
    assert left_at["completion"] == [[]], "the hook was completed while pods were still on the node"
    assert result.continue_at is None
    assert metrics.total("PodsEvicted") == 2
    assert [s.outcome for s in result.steps if s.action == "complete-lifecycle"] == ["CONTINUE"]


@pytest.mark.parametrize("timeout_result", ["ABANDON", "CONTINUE"])
def test_a_budget_that_never_allows_eviction_ends_in_the_configured_result_at_the_deadline(
        api, kube, namespace, nodes, aws, timeout_result):
    instance = aws.instance()
    node = busy_node(api, namespace, nodes, instance, replicas=1)
    pdb(api, namespace, "web", "web", min_available=1)
    wait_for(lambda: api.get(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/web")
             ["status"].get("observedGeneration"), "the PDB to be observed")
    hook = hook_for(instance)
    aws.expect("record_lifecycle_action_heartbeat", hook)
    aws.expect("complete_lifecycle_action", hook, LifecycleActionResult=timeout_result)

    metrics = MetricsRecorder()
    handler = handler_for(aws, kube, metrics, drain_timeout_seconds=4,
                          lifecycle_default_result=timeout_result)
    result = handler.handle(hook, budget_seconds=100)

    assert result.continue_at is None, "a drain past its deadline must not be continued"
    assert metrics.total("EvictionsBlockedByPdb") == 1
    assert metrics.total("DeadlineMissed") == 1
    blocked = [s for s in result.steps if s.action == "blocked"]
    assert len(blocked) == 1 and "web (0 disruptions allowed" in blocked[0].reason
    assert len(running(pods_on(api, namespace, node.name))) == 1, "the PDB held"


def test_a_drain_longer_than_the_invocation_continues_heartbeats_and_finishes(
        api, kube, cluster, namespace, nodes, aws, monkeypatch):
    instance = aws.instance()
    node = busy_node(api, namespace, nodes, instance)
    # Pods take 4 s to stop; the first invocation has 12 s, 10 of which it keeps in reserve.
    monkeypatch.setattr(cluster.nodes, "deletion_delay", 4)
    hook = hook_for(instance)
    metrics = MetricsRecorder()
    handler = handler_for(aws, kube, metrics, drain_timeout_seconds=20)

    aws.expect("record_lifecycle_action_heartbeat", hook)
    first = handler.handle(hook, budget_seconds=12)
    started = datetime.now(UTC)

    assert first.continue_at is not None
    assert [s.action for s in first.steps if s.action == "complete-lifecycle"] == []
    assert pods_on(api, namespace, node.name), "the pods were still stopping"

    aws.expect("record_lifecycle_action_heartbeat", hook)
    aws.expect("complete_lifecycle_action", hook, LifecycleActionResult="CONTINUE")
    second = handler.handle(hook, budget_seconds=100, started_at=started)

    assert second.continue_at is None
    assert pods_on(api, namespace, node.name) == []
    assert {s.action for s in second.steps} >= {"wait", "complete-lifecycle"}
    assert metrics.total("PodsEvicted") == 2, "the continuation waited; it did not evict again"


def test_a_retry_late_in_the_hooks_timeout_heartbeats_first_and_plans_no_drain_past_the_hook(
        api, kube, namespace, nodes, aws):
    """A failed first delivery came back after the queue's visibility timeout (660 s): the hook,
    deployed with the drain timeout plus a margin as its heartbeat timeout, had a minute left, and
    a drain planned from then (the drain timeout) would outlive it. The retry's heartbeat restarts
    the hook's timeout before the drain, so the plan ends within it."""
    deployed = SpotRebalancerConfig(cluster_name="test")
    instance = aws.instance()
    launched_ago(instance, 3600)
    busy_node(api, namespace, nodes, instance)
    hook = replace(hook_for(instance), time=datetime.now(UTC) - timedelta(seconds=660))
    hook_timeout = timedelta(seconds=deployed.lifecycle_heartbeat_seconds)
    heartbeats: list[datetime] = []
    aws.autoscaling.meta.events.register(
        "before-parameter-build.autoscaling.RecordLifecycleActionHeartbeat",
        lambda **_: heartbeats.append(datetime.now(UTC)))
    aws.expect("record_lifecycle_action_heartbeat", hook)
    drains = DrainService(deployed, Ec2(aws.ec2), AutoScaling(aws.autoscaling), lambda _cluster: kube,
                          MetricsRecorder())

    job = drains.begin(hook, lifecycle_action(hook), None, HandleResult())

    assert isinstance(job, DrainJob), job
    assert hook.time + hook_timeout < job.plan.deadline, "without a heartbeat the hook would end first"
    (heartbeat_at,) = heartbeats
    assert job.plan.deadline <= heartbeat_at + hook_timeout, "the drain outlives the hook"


@pytest.mark.parametrize("case", ["another cluster", "instance gone", "not a node"])
def test_hooks_of_instances_that_are_not_our_nodes_are_completed_and_ignored(api, kube, nodes, aws, case):
    instance = {"another cluster": lambda: aws.instance(cluster="other"),
                "instance gone": lambda: "i-0123456789abcdef0",
                "not a node": aws.instance}[case]()
    bystander = nodes(lifecycle="spot", instance_id="i-0fedcba9876543210")
    hook = hook_for(instance)
    aws.expect("complete_lifecycle_action", hook, LifecycleActionResult="CONTINUE")
    metrics = MetricsRecorder()
    result = handler_for(aws, kube, metrics).handle(hook, budget_seconds=100)

    assert metrics.total("EventsIgnored") == 1
    assert [s.action for s in result.steps] == ["ignore", "complete-lifecycle"]  # decided, then finished
    after = api.get(f"/api/v1/nodes/{bystander.name}")
    assert not after["spec"].get("unschedulable") and not after["spec"].get("taints")


def test_a_hook_that_already_ended_is_no_failure_and_the_drain_goes_on(
        api, kube, cluster, namespace, nodes, aws, monkeypatch):
    """Auto Scaling answers calls on an action that is over (timed out, completed by someone else)
    with a ValidationError: retrying cannot help, so the drain finishes and the event is done."""
    instance = aws.instance()
    node = busy_node(api, namespace, nodes, instance)
    hook = hook_for(instance)
    ended = f"No active Lifecycle Action found with instance ID {instance}"
    for operation in ("record_lifecycle_action_heartbeat", "complete_lifecycle_action"):
        aws.stub.add_client_error(operation, service_error_code="ValidationError",
                                  service_message=ended, http_status_code=400)

    metrics = MetricsRecorder()
    result = handler_for(aws, kube, metrics, drain_timeout_seconds=20).handle(
        hook, budget_seconds=100, started_at=datetime.now(UTC))  # a continuation: it heartbeats first

    assert pods_on(api, namespace, node.name) == []
    assert metrics.total("PodsEvicted") == 2
    assert [s.outcome for s in result.steps if s.action == "complete-lifecycle"] == ["already-ended"]
    assert result.continue_at is None
