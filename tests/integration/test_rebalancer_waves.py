"""Waves, node order and single replicas on the real control plane: a cycle given time moves a share
of each workload per wave, waits for the replacements to be Ready where predicted and plans again
from fresh state, within budgets; it empties whole on-demand nodes rather than half of each; and it
leaves a workload's only replica alone unless told otherwise."""

from __future__ import annotations

import time
from dataclasses import replace

import boto3
import pytest
from moto import mock_aws

from spot_rebalancer.config import Settings
from spot_rebalancer.kube import KubeClient
from spot_rebalancer.rebalance import SkipCode
from spot_rebalancer.rebalancer import CycleEnd, Rebalancer
from spot_rebalancer.state import HistoryStore
from spot_rebalancer.telemetry import MetricsRecorder
from tests.kube.ready_watch import ReadyWatch
from tests.kube.workloads import deployment, pdb, pods, preferred_affinity, running, wait_for
from tests.state_table import create_state_table

CAPACITY = "eks.amazonaws.com/capacityType"
CLUSTER = "test"
TABLE = "state"
SETTINGS = Settings(cluster_name=CLUSTER, state_table=TABLE, min_pod_age_seconds=0,
                    max_evictions_per_cycle=100, max_evictions_per_node=100, max_evictions_per_namespace=100)


@pytest.fixture
def store():
    with mock_aws():
        client = boto3.client("dynamodb", region_name="eu-west-1")
        create_state_table(client, TABLE)
        yield HistoryStore(client, TABLE)


def nodes_of(api, namespace: str, app: str) -> list[str]:
    return sorted(p["spec"]["nodeName"] for p in running(pods(api, namespace, app)))


def test_a_cycle_moves_in_waves_within_its_budget_until_nothing_is_left(cluster, api, kube, namespace,
                                                                         nodes, store):
    od = nodes(lifecycle="on-demand", cpu="8")
    deployment(api, namespace, "web", replicas=8, cpu="200m", affinity=preferred_affinity(CAPACITY, ["SPOT"]))
    pdb(api, namespace, "web", "web", max_unavailable=2)
    wait_for(lambda: nodes_of(api, namespace, "web") == [od.name] * 8, "eight replicas on on-demand")
    spot = nodes(lifecycle="spot", cpu="8")
    wait_for(lambda: api.get(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/web")["status"]
             .get("disruptionsAllowed") == 2, "the budget allowing two")

    metrics = MetricsRecorder()
    rebalancer = Rebalancer(SETTINGS, kube, metrics, store)
    with ReadyWatch(KubeClient.from_kubeconfig(str(cluster.kubeconfig)), namespace) as watch:
        result = rebalancer.cycle(until=time.monotonic() + 120)

    # 25% of eight replicas a wave: four waves of two, each waited for, then one that finds nothing.
    assert [len(w.evicted) for w in result.waves] == [2, 2, 2, 2, 0], result.summary()
    assert all(w.seconds_to_ready is not None for w in result.waves[:4])
    assert result.ended is CycleEnd.NOTHING_LEFT
    assert not result.refused
    uids = [e.uid for e in result.evicted]
    assert len(uids) == len(set(uids)) == 8, "each pod moved once"
    wait_for(lambda: nodes_of(api, namespace, "web") == [spot.name] * 8, "all eight on spot")
    assert result.emptied == (od.name,), "the last wave left the on-demand node empty"
    # Each wave's moves were judged before the next wave was planned: all succeeded, in this cycle.
    assert metrics.total("MovesSucceeded", ClusterName=CLUSTER) == 8
    assert metrics.total("MovesFailed", ClusterName=CLUSTER) == 0
    assert store.load(CLUSTER).history.in_flight == ()
    assert len(watch.polls) >= 3 and watch.fewest(["web"])["web"] >= 6, watch.fewest()  # two down at most


def test_a_cycle_without_time_to_wait_ends_after_its_first_wave(api, kube, namespace, nodes, store):
    nodes(lifecycle="on-demand", cpu="8")
    deployment(api, namespace, "web", replicas=4, cpu="200m", affinity=preferred_affinity(CAPACITY, ["SPOT"]))
    wait_for(lambda: len(running(pods(api, namespace, "web"))) == 4, "web on on-demand")
    nodes(lifecycle="spot", cpu="8")
    result = Rebalancer(SETTINGS, kube, MetricsRecorder(), store).cycle(until=time.monotonic())
    assert [len(w.evicted) for w in result.waves] == [1]
    assert (result.ended, result.waves[0].seconds_to_ready) == (CycleEnd.TIME_UP, None)
    assert len(store.load(CLUSTER).history.in_flight) == 1, "judged next cycle"


def test_whole_on_demand_nodes_are_emptied_where_gain_order_would_leave_each_half_full(api, kube, namespace,
                                                                                      nodes, store):
    """Two on-demand nodes each run a replica gaining 100 and one gaining 50; spot has room for two.
    By gain alone the two 100s would go, one off each node, and both nodes would stay."""
    first = nodes(lifecycle="on-demand", cpu="1")
    for app, weight in (("a", 100), ("c", 50)):
        deployment(api, namespace, app, cpu="400m", affinity=preferred_affinity(CAPACITY, ["SPOT"], weight))
    wait_for(lambda: nodes_of(api, namespace, "a") + nodes_of(api, namespace, "c") == [first.name] * 2,
             "a and c on the first on-demand node")
    second = nodes(lifecycle="on-demand", cpu="1")
    for app, weight in (("b", 100), ("d", 50)):
        deployment(api, namespace, app, cpu="400m", affinity=preferred_affinity(CAPACITY, ["SPOT"], weight))
    wait_for(lambda: nodes_of(api, namespace, "b") + nodes_of(api, namespace, "d") == [second.name] * 2,
             "b and d on the second")
    spot = nodes(lifecycle="spot", cpu="1")

    settings = replace(SETTINGS, move_single_replica_workloads=True)
    result = Rebalancer(settings, kube, MetricsRecorder(), store).cycle()

    assert sorted(e.workload.name.split("-")[0] for e in result.evicted) == ["a", "c"]
    assert result.plan.emptying == (first.name,)
    assert result.emptied == (first.name,)
    skipped = {s.name.split("-")[0]: s.code for s in result.plan.skipped if s.namespace == namespace}
    assert skipped == {"b": SkipCode.NO_ROOM, "d": SkipCode.NO_ROOM}
    wait_for(lambda: nodes_of(api, namespace, "a") + nodes_of(api, namespace, "c") == [spot.name] * 2,
             "a and c replaced on spot, as predicted")
    assert not [p for p in pods(api, namespace) if p["spec"].get("nodeName") == first.name]


def test_the_only_replica_of_a_workload_stays_unless_allowed(api, kube, namespace, nodes, store):
    nodes(lifecycle="on-demand", cpu="4")
    prefer_spot = preferred_affinity(CAPACITY, ["SPOT"])
    deployment(api, namespace, "solo", affinity=prefer_spot)
    deployment(api, namespace, "pair", replicas=2, affinity=prefer_spot)
    wait_for(lambda: len(running(pods(api, namespace))) == 3, "three pods on on-demand")
    nodes(lifecycle="spot", cpu="4")
    solo = running(pods(api, namespace, "solo"))[0]["metadata"]["name"]

    result = Rebalancer(SETTINGS, kube, MetricsRecorder(), store).cycle()
    assert {e.workload.name.split("-")[0] for e in result.evicted} == {"pair"}
    skipped = {(s.namespace, s.name): s.code for s in result.plan.skipped}
    assert skipped[namespace, solo] is SkipCode.SINGLE_REPLICA
    assert [p["metadata"]["name"] for p in running(pods(api, namespace, "solo"))] == [solo]

    allowed = replace(SETTINGS, move_single_replica_workloads=True, dry_run=True)
    planned = Rebalancer(allowed, kube, MetricsRecorder(), store).cycle().plan
    assert solo in {e.name for e in planned.evictions}
