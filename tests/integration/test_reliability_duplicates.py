"""EventBridge delivers at least once: 100 deliveries of one terminate lifecycle action, through
the events function as deployed (powertools idempotency on DynamoDB), act exactly once on the
local control plane: one cordon patch, each pod evicted once, one lifecycle completion. Ten of
the copies arrive while the first is still draining: they are handed back to SQS, and that
invocation is neither an error nor a failed record. Copies in one batch, beside another event
for the same instance, act once too."""

from __future__ import annotations

import json

import boto3
import pytest

from tests.ec2 import launch_instance
from tests.events_function import REGION, events_function, published, sample_event
from tests.kube.workloads import busy_spot_node, pods

DELIVERIES = 100
BATCH = 10  # the most records SQS hands one invocation
REPLICAS = 3


@pytest.fixture
def function(kube, monkeypatch):
    with events_function(monkeypatch, lambda _cluster: kube, POWERTOOLS_METRICS_DISABLED="false") as deployed:
        yield deployed


def test_a_hundred_deliveries_of_one_lifecycle_action_act_once(api, cluster, namespace, nodes, function,
                                                                capsys):
    instance = launch_instance(boto3.client("ec2", region_name=REGION))
    node, on_node = busy_spot_node(api, namespace, nodes, instance, REPLICAS)
    body = sample_event("lifecycle-terminate.json", instance)
    ids = [f"copy-{n}" for n in range(1, DELIVERIES + 1)]
    in_flight: list[dict] = []

    def copies_while_draining(method: str, path: str) -> None:
        # SQS hands copies to another invocation while the first still works on the event.
        if method == "PATCH" and path == f"/api/v1/nodes/{node}" and not in_flight:
            in_flight.append(function.invoke([body] * BATCH, ids[1:1 + BATCH]))
        return None

    cluster.proxy.reset_counts()
    cluster.proxy.set_fault(copies_while_draining)
    try:
        first = function.invoke([body], ids[:1])
    finally:
        cluster.proxy.set_fault(None)
    # SQS delivers the refused copies again after their visibility timeout, with the rest.
    chunks = [ids[:1]] + [ids[start:start + BATCH] for start in range(1, DELIVERIES, BATCH)]
    later = [function.invoke([body] * len(chunk), chunk) for chunk in chunks[1:]]

    failed = {f["itemIdentifier"] for result in (first, *later) for f in result["batchItemFailures"]}
    acknowledged = {message_id for chunk in chunks for message_id in chunk} - failed
    assert first == {"batchItemFailures": []}
    (refused,) = in_flight
    assert [f["itemIdentifier"] for f in refused["batchItemFailures"]] == ids[1:1 + BATCH], \
        "copies in flight are handed back, to be retried"
    assert published(capsys.readouterr().out)["RecordsFailed"] == 0, "and they are no failure"
    assert all(result == {"batchItemFailures": []} for result in later)
    assert acknowledged == set(ids), "a delivery was lost"
    requests = cluster.proxy.requests
    evictions = {path.split("/")[-2]: n for (method, path), n in requests.items()
                 if method == "POST" and path.endswith("/eviction")}
    assert requests[("PATCH", f"/api/v1/nodes/{node}")] == 1, "one cordon"
    assert evictions == dict.fromkeys(on_node, 1), "each pod evicted once"
    completions = function.autoscaling.calls("CompleteLifecycleAction")
    assert [c["LifecycleActionResult"] for c in completions] == ["CONTINUE"], "one lifecycle call"
    heartbeats = function.autoscaling.calls("RecordLifecycleActionHeartbeat")
    assert len(heartbeats) == 1, "one heartbeat, by the one delivery that acted, before its drain"
    assert function.queued() == [], "nothing continued"
    (record,) = function.idempotency_records()
    assert record["status"]["S"] == "COMPLETED"
    assert "complete-lifecycle" in {s["action"] for s in json.loads(record["data"]["S"])["steps"]}
    assert not [p for p in pods(api, namespace) if p["spec"].get("nodeName") == node]
    print(f"\nduplicates: {DELIVERIES} deliveries of one event ({BATCH} while it was acting, refused and "
          f"delivered again), {len(acknowledged)} acknowledged, {DELIVERIES - len(acknowledged)} lost -> "
          f"{requests[('PATCH', f'/api/v1/nodes/{node}')]} cordon patch, {sum(evictions.values())} "
          f"evictions of {len(on_node)} pods, {len(completions)} lifecycle completion")


def test_copies_and_other_events_for_one_instance_in_one_batch_act_once(api, cluster, namespace, nodes,
                                                                         function):
    """One batch holding a spot warning twice and the instance's terminate lifecycle action: every
    record is acknowledged (a copy is no failure to retry), the warning acts once, the two events
    never drain the node at once, so each pod is evicted once, and the hook is completed once."""
    instance = launch_instance(boto3.client("ec2", region_name=REGION))
    node, on_node = busy_spot_node(api, namespace, nodes, instance, REPLICAS)
    warning = sample_event("spot-interruption-terminate.json", instance)
    hook = sample_event("lifecycle-terminate.json", instance)
    cluster.proxy.reset_counts()

    result = function.invoke([warning, hook, warning], ["warning", "hook", "warning-copy"])

    assert result == {"batchItemFailures": []}
    evictions = {path.split("/")[-2]: n for (method, path), n in cluster.proxy.requests.items()
                 if method == "POST" and path.endswith("/eviction")}
    assert evictions == dict.fromkeys(on_node, 1), "each pod evicted once"
    completions = function.autoscaling.calls("CompleteLifecycleAction")
    assert [c["LifecycleActionResult"] for c in completions] == ["CONTINUE"]
    assert len(function.idempotency_records()) == 2, "the warning and the hook, each acted on once"
    assert function.queued() == []
    assert not [p for p in pods(api, namespace) if p["spec"].get("nodeName") == node]
