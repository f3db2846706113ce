"""EventBridge does not keep order: a spot warning may arrive after its instance's `terminated`
state change, or for an instance that is long gone. The events function as deployed acknowledges
such events quietly (no failure for SQS to retry, no continuation, an `EventsIgnored` metric) and
writes nothing to the cluster."""

from __future__ import annotations

import json

import boto3
import pytest

from spot_rebalancer.drain_policy import ACTION_ANNOTATION
from tests.ec2 import launch_instance
from tests.events_function import REGION, events_function, published, sample_event
from tests.kube.workloads import deployment, pods, running, wait_for

GONE = "i-0123456789abcdef0"  # never launched: EC2 no longer knows it


@pytest.fixture
def function(kube, monkeypatch):
    with events_function(monkeypatch, lambda _cluster: kube, POWERTOOLS_METRICS_DISABLED="false") as deployed:
        yield deployed


def drain_marks(api) -> dict[str, tuple]:
    """What a drain writes on each node: the cordon, the taints and the product's action record.
    (Not the resourceVersion: the controller-manager annotates new nodes on its own.)"""
    return {n["metadata"]["name"]: (n["spec"].get("unschedulable", False), n["spec"].get("taints", []),
                                    n["metadata"].get("annotations", {}).get(ACTION_ANNOTATION))
            for n in api.get("/api/v1/nodes")["items"]}


@pytest.mark.parametrize("case", ["terminated, node still listed", "terminated, node gone",
                                  "running, never a node", "unknown to EC2"])
def test_a_late_warning_is_acknowledged_quietly_and_changes_nothing(api, cluster, namespace, nodes, function,
                                                                    capsys, case):
    ec2 = boto3.client("ec2", region_name=REGION)
    instance = GONE if case == "unknown to EC2" else launch_instance(ec2)
    bystander = nodes(lifecycle="spot")  # must stay as it is whatever the product decides
    node = None
    if case.startswith("terminated"):
        node = nodes(lifecycle="spot", instance_id=instance)
        deployment(api, namespace, "web", replicas=2)
        wait_for(lambda: len(running(pods(api, namespace, "web"))) == 2, "web pods running")
        ec2.terminate_instances(InstanceIds=[instance])
        if case == "terminated, node gone":
            cluster.nodes.remove_node(node.name)
            node = None
    before = drain_marks(api)
    web = {p["metadata"]["name"] for p in pods(api, namespace, "web")}
    deliveries = [sample_event("spot-interruption-terminate.json", instance)]
    if case == "terminated, node gone":
        # With its node still listed, the state change is a backstop that drains it
        # (tests/integration/test_survivable_events.py); with the node gone, nothing is left to do.
        deliveries.insert(0, sample_event("state-change-terminated.json", instance))
    capsys.readouterr()
    cluster.proxy.reset_counts()

    results = [function.invoke([body]) for body in deliveries]

    writes = {key: n for key, n in cluster.proxy.requests.items() if key[0] != "GET"}
    assert results == [{"batchItemFailures": []}] * len(deliveries), "a failure would be retried"
    assert writes == {}, f"the product wrote to the cluster: {writes}"
    assert function.queued() == [], "nothing continued"
    assert published(capsys.readouterr().out)["EventsIgnored"] == len(deliveries)
    after = drain_marks(api)
    assert after[bystander.name] == before[bystander.name]
    if node is not None:
        assert after[node.name] == before[node.name], "the lingering node was changed"
        assert {p["metadata"]["name"] for p in running(pods(api, namespace, "web"))} == web


@pytest.mark.parametrize("sample", ["spot-interruption-terminate.json", "rebalance-recommendation.json",
                                    "state-change-stopping.json"],
                         ids=["spot warning", "rebalance recommendation", "stopping"])
def test_an_event_from_before_the_instances_current_run_is_stale(api, cluster, namespace, nodes, function,
                                                                  capsys, sample):
    """A delivery from the dead-letter queue, replayed a day later: the instance has been stopped and
    started since (its LaunchTime is after the event), so draining it now would be about a run that is
    over. It is acknowledged, counted as ignored, and nothing is written to the cluster."""
    instance = launch_instance(boto3.client("ec2", region_name=REGION))
    node = nodes(lifecycle="spot", instance_id=instance)
    deployment(api, namespace, "web", replicas=2)
    wait_for(lambda: len(running(pods(api, namespace, "web"))) == 2, "web pods running")
    event = json.loads(sample_event(sample, instance))
    event["time"] = "2020-01-01T00:00:00Z"
    before = drain_marks(api)
    capsys.readouterr()
    cluster.proxy.reset_counts()

    assert function.invoke([json.dumps(event)]) == {"batchItemFailures": []}

    assert {key: n for key, n in cluster.proxy.requests.items() if key[0] != "GET"} == {}
    assert drain_marks(api)[node.name] == before[node.name]
    assert published(capsys.readouterr().out)["EventsIgnored"] == 1
    assert function.queued() == []
