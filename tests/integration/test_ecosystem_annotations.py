"""The marks platform teams already put on pods and nodes for Karpenter and the cluster autoscaler,
honoured on the local control plane: a voluntary drain and the rebalancer never evict a pod marked
do-not-disrupt; a forced drain evicts it last and says so in its Event; the rebalancer empties no
node marked scale-down-disabled or do-not-disrupt, and still moves pods onto it."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from spot_rebalancer.aws import AutoScaling, Ec2
from spot_rebalancer.config import Settings
from spot_rebalancer.drain import DrainService
from spot_rebalancer.events import parse_event
from spot_rebalancer.rebalance import SkipCode
from spot_rebalancer.rebalancer import Rebalancer
from spot_rebalancer.state import HistoryStore
from spot_rebalancer.telemetry import MetricsRecorder
from tests.ec2 import launch_instance
from tests.events_function import REGION, sample_event
from tests.kube.workloads import deployment, pods, preferred_affinity, running, wait_for
from tests.state_table import create_state_table

KARPENTER = {"karpenter.sh/do-not-disrupt": "true"}
AUTOSCALER = {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}
CAPACITY = "eks.amazonaws.com/capacityType"


def evictions_sent(cluster) -> list[str]:
    """The pods the product sent an eviction for since the last reset, in order."""
    return [path.split("/")[6] for (method, path) in cluster.proxy.requests
            if method == "POST" and path.endswith("/eviction")]


@pytest.mark.parametrize(("sample", "settings", "marked_evicted"), [
    ("spot-interruption-terminate.json", {}, True),
    ("rebalance-recommendation.json", {"recommendation_default": "drain"}, False),
], ids=["forced drain", "voluntary drain"])
@pytest.mark.parametrize("marks", [KARPENTER, AUTOSCALER], ids=["karpenter", "cluster autoscaler"])
def test_drains_and_do_not_disrupt_pods(api, cluster, kube, namespace, nodes, sample, settings,
                                        marked_evicted, marks):
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        instance = launch_instance(ec2)
        nodes(lifecycle="spot", instance_id=instance)
        deployment(api, namespace, "web", replicas=2)
        deployment(api, namespace, "marked", annotations=marks)
        wait_for(lambda: len(running(pods(api, namespace))) == 3, "web and the marked pod on the node")
        nodes(lifecycle="on-demand")
        marked = {p["metadata"]["name"] for p in pods(api, namespace, "marked")}
        cluster.proxy.reset_counts()
        drains = DrainService(Settings(cluster_name="test", drain_timeout_seconds=60, **settings), Ec2(ec2),
                              AutoScaling(boto3.client("autoscaling", region_name=REGION)),
                              lambda _cluster: kube, MetricsRecorder())
        for event in parse_event(sample_event(sample, instance)):
            drains.handle(event, budget_seconds=100)

    sent = evictions_sent(cluster)
    assert len([p for p in sent if p not in marked]) == 2, sent
    if not marked_evicted:
        assert not set(sent) & marked
        assert {p["metadata"]["name"] for p in running(pods(api, namespace, "marked"))} == marked
        return
    assert sent[-1] in marked and len(sent) == 3, "the marked pod goes last"
    key = next(iter(marks))
    messages = [e["message"] for e in api.get(f"/api/v1/namespaces/{namespace}/events")["items"]
                if e["involvedObject"]["name"] in marked and e["reason"] == "Evicted"]
    assert messages == [f"Evicted by spot-rebalancer: spot-interruption; its annotation {key}={marks[key]} "
                        f"overridden by a forced drain"]


def test_the_rebalancer_moves_no_marked_pod_and_empties_no_marked_node(api, cluster, kube, namespace, nodes):
    prefers_spot = preferred_affinity(CAPACITY, ["SPOT"])
    protected = nodes(lifecycle="on-demand", cpu="4").name
    api.patch(f"/api/v1/nodes/{protected}", {"metadata": {"annotations": {
        "cluster-autoscaler.kubernetes.io/scale-down-disabled": "true"}}})
    deployment(api, namespace, "kept-by-node", replicas=2, affinity=prefers_spot)
    wait_for(lambda: len(running(pods(api, namespace))) == 2, "pods on the protected node")
    free = nodes(lifecycle="on-demand", cpu="4").name
    api.patch(f"/api/v1/nodes/{protected}", {"spec": {"unschedulable": True}})  # the next pods elsewhere
    deployment(api, namespace, "marked", replicas=1, affinity=prefers_spot, annotations=KARPENTER)
    deployment(api, namespace, "web", replicas=2, affinity=prefers_spot)
    wait_for(lambda: len(running(pods(api, namespace))) == 5, "the others on the second node")
    api.patch(f"/api/v1/nodes/{protected}", {"spec": {"unschedulable": False}})
    spot = nodes(lifecycle="spot", cpu="4").name
    api.patch(f"/api/v1/nodes/{spot}", {"metadata": {"annotations": KARPENTER}})  # may still take pods
    settings = Settings(cluster_name="test", state_table="state", min_pod_age_seconds=0,
                        max_evictions_per_node=10)
    cluster.proxy.reset_counts()

    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        create_state_table(dynamodb)
        result = Rebalancer(settings, kube, MetricsRecorder(), HistoryStore(dynamodb, "state")).cycle()

    skipped = {s.name: s.code for s in result.plan.skipped}
    assert result.evicted, "the rebalancer moved nothing: the test would prove nothing"
    assert {e.from_node for e in result.evicted} == {free}
    assert {e.to_node for e in result.evicted} == {spot}, "onto the marked node: it may take pods"
    assert {code for name, code in skipped.items() if name.startswith("marked")} == {SkipCode.DO_NOT_DISRUPT}
    assert {code for name, code in skipped.items() if name.startswith("kept-by-node")} == {
        SkipCode.NODE_PROTECTED}
