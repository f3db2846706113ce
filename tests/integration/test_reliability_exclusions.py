"""Excluded namespaces and the opt-out annotation on the local control plane, for every drain
reason through the events function as deployed, and for the rebalancer: a pod annotated
`spot-rebalancer.io/disable: "true"` is never evicted; a pod in an excluded namespace is evicted
only by a drain whose instance goes away whatever we do (drain_policy.py says why), never by a
rebalance recommendation's drain or by the rebalancer. No eviction of a kept pod is even sent."""

from __future__ import annotations

import itertools

import boto3
import pytest
from moto import mock_aws

from spot_rebalancer.config import Settings
from spot_rebalancer.rebalance import SkipCode
from spot_rebalancer.rebalancer import Rebalancer
from spot_rebalancer.state import HistoryStore
from spot_rebalancer.telemetry import MetricsRecorder
from tests.ec2 import launch_instance
from tests.events_function import REGION, events_function, sample_event
from tests.kube.workloads import deployment, pods, preferred_affinity, running, wait_for
from tests.state_table import create_state_table

OPT_OUT = {"spot-rebalancer.io/disable": "true"}
CAPACITY = "eks.amazonaws.com/capacityType"
_excluded = itertools.count(1)

# Every drain reason: its sample event, and whether the excluded namespace's pod is evicted.
REASONS = {
    "spot-interruption": ("spot-interruption-terminate.json", True),
    "rebalance-recommendation": ("rebalance-recommendation.json", False),
    "asg-termination": ("lifecycle-terminate.json", True),
    "spot-stop": ("spot-interruption-hibernate.json", True),
    "instance-stopping": ("state-change-stopping.json", True),
    "instance-shutting-down": ("state-change-shutting-down.json", True),
    "scheduled-retirement": ("health-instance-retirement.json", True),
    "scheduled-maintenance": ("health-reboot-maintenance.json", True),
    "degraded-hardware": ("health-store-drive-degraded-backup.json", True),
}


@pytest.fixture
def excluded(api):
    """A namespace the settings exclude, deleted after the test."""
    name = f"excluded{next(_excluded)}"
    api.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    api.delete(f"/api/v1/namespaces/{name}")


def evicted_pods(cluster) -> set[str]:
    """Pods the product sent an eviction for since the last reset, as namespace/name."""
    return {"/".join(path.split("/")[4:7:2]) for (method, path) in cluster.proxy.requests
            if method == "POST" and path.endswith("/eviction")}


def names(api, namespace: str, app: str) -> set[str]:
    return {f"{namespace}/{p['metadata']['name']}" for p in pods(api, namespace, app)}


@pytest.mark.parametrize("reason", REASONS)
def test_every_drain_keeps_opted_out_pods_and_excluded_namespaces_only_when_discretionary(
        api, cluster, kube, namespace, excluded, nodes, monkeypatch, reason):
    sample, excluded_evicted = REASONS[reason]
    with events_function(monkeypatch, lambda _cluster: kube, EXCLUDED_NAMESPACES=excluded,
                         RECOMMENDATION_DEFAULT="drain") as function:
        instance = launch_instance(boto3.client("ec2", region_name=REGION))
        node = nodes(lifecycle="spot", instance_id=instance).name
        deployment(api, namespace, "web")
        deployment(api, namespace, "keep", annotations=OPT_OUT)
        deployment(api, excluded, "system")
        wait_for(lambda: len(running(pods(api, namespace))) == 2 and running(pods(api, excluded)),
                 "the three pods running on the node")
        nodes(lifecycle="on-demand")
        web, keep = names(api, namespace, "web"), names(api, namespace, "keep")
        system = names(api, excluded, "system")
        cluster.proxy.reset_counts()

        assert function.invoke([sample_event(sample, instance)]) == {"batchItemFailures": []}
        completions = function.autoscaling.calls("CompleteLifecycleAction")

    left = ({f"{namespace}/{p['metadata']['name']}" for p in running(pods(api, namespace))}
            | {f"{excluded}/{p['metadata']['name']}" for p in running(pods(api, excluded))
               if p["spec"].get("nodeName") == node})
    assert evicted_pods(cluster) == web | (system if excluded_evicted else set())
    assert keep <= left, "the opted-out pod was evicted"
    assert (system <= left) is not excluded_evicted
    assert not web & left
    node_spec = api.get(f"/api/v1/nodes/{node}")["spec"]
    assert node_spec["unschedulable"] is True, "the node is still cordoned around the kept pods"
    if reason == "asg-termination":  # the kept pods do not hold the instance back
        assert [c["LifecycleActionResult"] for c in completions] == ["CONTINUE"]


def test_the_rebalancer_never_moves_opted_out_pods_or_excluded_namespaces(api, cluster, kube, namespace,
                                                                         excluded, nodes):
    prefers_spot = preferred_affinity(CAPACITY, ["SPOT"])
    nodes(lifecycle="on-demand", cpu="4")
    for ns, app, marks in ((namespace, "web", {}), (namespace, "keep", OPT_OUT), (excluded, "system", {})):
        deployment(api, ns, app, replicas=2, affinity=prefers_spot, annotations=marks)
    wait_for(lambda: len(running(pods(api, namespace))) == 4 and len(running(pods(api, excluded))) == 2,
             "every pod on on-demand")
    nodes(lifecycle="spot", cpu="4")  # spot capacity with room for all of them
    keep, system = names(api, namespace, "keep"), names(api, excluded, "system")
    settings = Settings(cluster_name="test", state_table="state", min_pod_age_seconds=0,
                        excluded_namespaces=(excluded,), max_evictions_per_node=10)
    cluster.proxy.reset_counts()

    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        create_state_table(dynamodb)
        result = Rebalancer(settings, kube, MetricsRecorder(), HistoryStore(dynamodb, "state")).cycle()

    skipped = {f"{s.namespace}/{s.name}": s.code for s in result.plan.skipped}
    assert result.evicted, "the rebalancer moved nothing: the test would prove nothing"
    assert {e.namespace for e in result.evicted} == {namespace}
    assert {skipped.get(pod) for pod in keep} == {SkipCode.OPTED_OUT}
    assert {skipped.get(pod) for pod in system} == {SkipCode.EXCLUDED_NAMESPACE}
    assert not evicted_pods(cluster) & (keep | system)
