"""AWS throttling, through the events function as deployed: its own EC2 and Auto Scaling clients
are refused with each service's throttling error where their requests leave botocore, so
botocore's standard retry mode handles every refusal. A throttled call is retried and takes effect
once; a call throttled past its retries fails the message loudly, leaving nothing half-done that
the redelivery does not finish, and the redelivery repeats nothing that already happened."""

from __future__ import annotations

import json

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from spot_rebalancer.aws import RETRY_CONFIG
from tests.ec2 import launch_instance
from tests.events_function import REGION, events_function, sample_event
from tests.kube.workloads import deployment, pods, running, wait_for

LABEL = "node.kubernetes.io/lifecycle"
ATTEMPTS = 1 + RETRY_CONFIG["max_attempts"]  # botocore's max_attempts counts the retries
COMPLETE, HEARTBEAT = "CompleteLifecycleAction", "RecordLifecycleActionHeartbeat"


@pytest.fixture
def function(kube, monkeypatch):
    # botocore waits up to 20 s between attempts; what matters here is the attempts.
    monkeypatch.setattr("botocore.retries.standard.ExponentialBackoff.delay_amount", lambda *_: 0)
    with events_function(monkeypatch, lambda _cluster: kube) as deployed:
        yield deployed


def lifecycle_tag(instance: str) -> str | None:
    described = boto3.client("ec2", region_name=REGION).describe_instances(InstanceIds=[instance])
    tags = described["Reservations"][0]["Instances"][0].get("Tags", [])
    return {t["Key"]: t["Value"] for t in tags}.get("Lifecycle")


def failure_of(function, body: str) -> str:
    """The invocation's failure, which SQS answers by delivering the message again."""
    with pytest.raises(BatchProcessingError) as failed:
        function.invoke([body])
    (child,) = failed.value.child_exceptions
    return f"{child[0].__name__}: {child[1]}"


def evictions(cluster) -> dict[str, int]:
    return {path.split("/")[-2]: n for (method, path), n in cluster.proxy.requests.items()
            if method == "POST" and path.endswith("/eviction")}


def busy_node(api, namespace, nodes, instance: str, replicas: int = 2) -> tuple[str, set[str]]:
    node = nodes(lifecycle="spot", instance_id=instance).name
    deployment(api, namespace, "web", replicas=replicas)
    wait_for(lambda: len(running(pods(api, namespace, "web"))) == replicas, "web pods running")
    nodes(lifecycle="on-demand")
    return node, {p["metadata"]["name"] for p in pods(api, namespace, "web")}


def test_create_tags_throttled_twice_is_retried_and_tags_once(api, nodes, function):
    instance = launch_instance(boto3.client("ec2", region_name=REGION))
    node = nodes(lifecycle="on-demand", instance_id=instance, capacity_label=False).name
    function.ec2.throttle("CreateTags", 2)

    assert function.invoke([sample_event("state-change-running.json", instance)]) == {"batchItemFailures": []}

    assert function.ec2.sends == {("CreateTags", "throttled"): 2, ("CreateTags", "accepted"): 1}
    assert lifecycle_tag(instance) == "on-demand"
    assert api.get(f"/api/v1/nodes/{node}")["metadata"]["labels"][LABEL] == "on-demand"


def test_create_tags_throttled_past_its_retries_fails_loudly_and_labels_nothing(api, nodes, function):
    instance = launch_instance(boto3.client("ec2", region_name=REGION))
    node = nodes(lifecycle="on-demand", instance_id=instance, capacity_label=False).name
    body = sample_event("state-change-running.json", instance)
    function.ec2.throttle("CreateTags", ATTEMPTS)

    assert "RequestLimitExceeded" in failure_of(function, body)
    assert function.ec2.sends == {("CreateTags", "throttled"): ATTEMPTS}
    assert lifecycle_tag(instance) is None
    assert LABEL not in api.get(f"/api/v1/nodes/{node}")["metadata"]["labels"], "labelled untagged"

    assert function.invoke([body]) == {"batchItemFailures": []}, "the redelivery"
    assert function.ec2.sends[("CreateTags", "accepted")] == 1
    assert lifecycle_tag(instance) == "on-demand"
    assert api.get(f"/api/v1/nodes/{node}")["metadata"]["labels"][LABEL] == "on-demand"


def test_a_completion_throttled_past_its_retries_fails_loudly_and_the_redelivery_completes_once(
        api, cluster, namespace, nodes, function):
    instance = launch_instance(boto3.client("ec2", region_name=REGION))
    node, web = busy_node(api, namespace, nodes, instance)
    body = sample_event("lifecycle-terminate.json", instance)
    function.autoscaling.throttle(COMPLETE, ATTEMPTS + 2)  # the redelivery meets two refusals too
    cluster.proxy.reset_counts()

    assert "Throttling" in failure_of(function, body)
    assert function.autoscaling.calls(COMPLETE) == []
    assert not [p for p in pods(api, namespace) if p["spec"].get("nodeName") == node], "drained"

    assert function.invoke([body]) == {"batchItemFailures": []}, "the redelivery"
    # Each delivery heartbeats the hook before its drain; the completion is sent once.
    assert function.autoscaling.sends == {(HEARTBEAT, "accepted"): 2,
                                          (COMPLETE, "throttled"): ATTEMPTS + 2, (COMPLETE, "accepted"): 1}
    assert [c["LifecycleActionResult"] for c in function.autoscaling.calls(COMPLETE)] == ["CONTINUE"]
    assert evictions(cluster) == dict.fromkeys(web, 1), "the redelivery evicted nothing again"


def test_throttled_heartbeat_and_completion_of_a_continued_drain(api, cluster, namespace, nodes, function,
                                                                  monkeypatch):
    instance = launch_instance(boto3.client("ec2", region_name=REGION))
    node, web = busy_node(api, namespace, nodes, instance)
    monkeypatch.setattr(cluster.nodes, "deletion_delay", 4)  # pods outlast the first invocation
    cluster.proxy.reset_counts()
    assert function.invoke([sample_event("lifecycle-terminate.json", instance)],
                           remaining_ms=12_000) == {"batchItemFailures": []}
    (continuation,) = function.queued()
    assert json.loads(continuation)["continuation"]["attempt"] == 1
    assert [op for op, _ in function.autoscaling.accepted] == [HEARTBEAT], "the first delivery's"

    # Throttled past its retries, the heartbeat fails the continuation before it does anything.
    function.autoscaling.throttle(HEARTBEAT, ATTEMPTS)
    written = sum(n for (method, _), n in cluster.proxy.requests.items() if method != "GET")
    assert "Throttling" in failure_of(function, continuation)
    assert sum(n for (method, _), n in cluster.proxy.requests.items() if method != "GET") == written
    assert [op for op, _ in function.autoscaling.accepted] == [HEARTBEAT], "nothing more was accepted"

    function.autoscaling.throttle(HEARTBEAT, 2)
    function.autoscaling.throttle(COMPLETE, 2)
    assert function.invoke([continuation]) == {"batchItemFailures": []}, "the redelivery"

    assert function.autoscaling.sends == {(HEARTBEAT, "throttled"): ATTEMPTS + 2, (HEARTBEAT, "accepted"): 2,
                                          (COMPLETE, "throttled"): 2, (COMPLETE, "accepted"): 1}
    assert [op for op, _ in function.autoscaling.accepted] == [HEARTBEAT, HEARTBEAT, COMPLETE]
    assert not [p for p in pods(api, namespace) if p["spec"].get("nodeName") == node]
    assert evictions(cluster) == dict.fromkeys(web, 1)
    assert function.queued() == []
