"""The rebalance cycle against the real control plane: pods pushed onto on-demand by a spot
interruption go back to spot once spot returns, within budgets, each pod moved once, and last
cycle's moves judged in the next; a full spot fleet means no evictions at all."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import boto3
import pytest
from moto import mock_aws

from spot_rebalancer.config import Settings
from spot_rebalancer.kube import KubeClient
from spot_rebalancer.rebalance import SkipCode
from spot_rebalancer.rebalancer import Rebalancer
from spot_rebalancer.state import HistoryStore
from spot_rebalancer.telemetry import MetricsRecorder
from tests.kube.ready_watch import ReadyWatch
from tests.kube.workloads import deployment, pdb, pods, preferred_affinity, running, statefulset, wait_for
from tests.state_table import create_state_table

CAPACITY = "eks.amazonaws.com/capacityType"
CLUSTER = "test"
TABLE = "state"
APPS = ("web", "api", "cart", "search")
REPLICAS = 2
MIN_AVAILABLE = 1
# Replacements in the simulator start within seconds, so judging a move needs no long wait, and
# pods just started may be moved (the test does not want to wait five minutes). Most workloads
# here have one replica.
SETTINGS = Settings(cluster_name=CLUSTER, state_table=TABLE, min_pod_age_seconds=0,
                    max_evictions_per_node=10, max_evictions_per_namespace=10,
                    move_single_replica_workloads=True)


SNAPSHOT_LISTS = ("/api/v1/nodes", "/api/v1/pods", "/apis/policy/v1/poddisruptionbudgets",
                  "/api/v1/persistentvolumes", "/api/v1/persistentvolumeclaims")

@pytest.fixture
def store():
    with mock_aws():
        client = boto3.client("dynamodb", region_name="eu-west-1")
        create_state_table(client, TABLE)
        yield HistoryStore(client, TABLE)


def settled(api, namespace: str) -> bool:
    """Every app has all its replicas Running and Ready, nothing terminating, and every budget has
    seen the current pods (so the next snapshot's disruptionsAllowed is true)."""
    items = pods(api, namespace)
    if len(items) != len(APPS) * REPLICAS or len(running(items)) != len(items):
        return False
    budgets = api.get(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets")["items"]
    return all(b["status"].get("observedGeneration") == b["metadata"]["generation"]
               and b["status"].get("currentHealthy") == REPLICAS
               and b["status"].get("disruptionsAllowed") == REPLICAS - MIN_AVAILABLE for b in budgets)


def on_spot(api, namespace: str, spot_names: set[str]) -> int:
    return sum(p["spec"]["nodeName"] in spot_names for p in running(pods(api, namespace)))


def test_pods_return_to_spot_after_an_interruption_within_budgets(cluster, api, kube, namespace, nodes,
                                                                  store):
    first_spot = [nodes(lifecycle="spot", cpu="2") for _ in range(2)]
    on_demand = {nodes(lifecycle="on-demand", cpu="4").name for _ in range(2)}
    for app in APPS:
        deployment(api, namespace, app, replicas=REPLICAS, cpu="200m",
                   affinity=preferred_affinity(CAPACITY, ["SPOT"]))
        pdb(api, namespace, app, app, min_available=MIN_AVAILABLE)
    wait_for(lambda: on_spot(api, namespace, {n.name for n in first_spot}) == len(APPS) * REPLICAS,
             "every pod on spot")

    for node in first_spot:  # the interruption: the instances are gone, the pods fall back
        cluster.nodes.remove_node(node.name)
    # A replacement bound to the second spot node as it went is cleaned up by the pod GC.
    wait_for(lambda: settled(api, namespace)
             and {p["spec"].get("nodeName") for p in pods(api, namespace)} <= on_demand,
             "every pod back on on-demand", timeout=90)
    spot = {nodes(lifecycle="spot", cpu="2").name for _ in range(2)}  # spot capacity returns

    metrics = MetricsRecorder()
    rebalancer = Rebalancer(SETTINGS, kube, metrics, store)
    evicted_uids: list[str] = []
    with ReadyWatch(KubeClient.from_kubeconfig(str(cluster.kubeconfig)), namespace) as watch:
        for _ in range(3):
            result = rebalancer.cycle()
            evicted_uids.extend(e.uid for e in result.evicted)
            assert not result.refused, result.refused
            wait_for(lambda: settled(api, namespace), "replacements running", timeout=60)
            if not result.plan.evictions:
                break

    total = len(APPS) * REPLICAS
    assert on_spot(api, namespace, spot) >= 0.95 * total
    assert len(evicted_uids) == len(set(evicted_uids)) == total, "each pod moved exactly once"
    # The watch must have looked (a few polls even on a loaded machine) and never seen a budget
    # broken; whether it caught the brief dip to minAvailable depends on timing.
    assert len(watch.polls) >= 3, len(watch.polls)
    fewest = watch.fewest(APPS)
    assert all(fewest[app] >= MIN_AVAILABLE for app in APPS), fewest
    # Each move was judged in the cycle after it: all of them succeeded.
    assert metrics.total("MovesSucceeded", ClusterName=CLUSTER) == total
    assert metrics.total("MovesFailed", ClusterName=CLUSTER) == 0
    assert metrics.total("PodsEvicted", ClusterName=CLUSTER, Source="move") == total
    assert metrics.total("PodsEvicted", Source="drain") == 0
    assert metrics.total("MovesPlanned", ClusterName=CLUSTER) == total
    assert store.load(CLUSTER).history.in_flight == ()
    events = api.get(f"/api/v1/namespaces/{namespace}/events")["items"]
    messages = {e["involvedObject"]["uid"]: e["message"] for e in events
                if e.get("source", {}).get("component") == "spot-rebalancer"}
    assert set(messages) == set(evicted_uids)
    assert all(m.startswith("Evicted by spot-rebalancer: preferred node affinity better met on ")
               for m in messages.values())


def test_a_full_spot_fleet_means_no_evictions_even_with_free_on_demand(cluster, api, kube, namespace,
                                                                      nodes, store):
    """descheduler #1707: evicting a pod whose better node is full only puts it back where it was."""
    spot = nodes(lifecycle="spot", cpu="1")
    deployment(api, namespace, "filler", cpu="900m")
    wait_for(lambda: [p for p in running(pods(api, namespace, "filler"))
                      if p["spec"]["nodeName"] == spot.name], "the filler on spot")
    first = nodes(lifecycle="on-demand", cpu="2")
    deployment(api, namespace, "web", cpu="500m", affinity=preferred_affinity(CAPACITY, ["SPOT"]))
    web = wait_for(lambda: running(pods(api, namespace, "web")), "web running")[0]
    assert web["spec"]["nodeName"] == first.name
    nodes(lifecycle="on-demand", cpu="2")  # free room, but no better than where web is

    cluster.proxy.reset_counts()
    result = Rebalancer(SETTINGS, kube, MetricsRecorder(), store).cycle()
    assert result.plan.evictions == ()
    skips = {(s.namespace, s.name): s.code for s in result.plan.skipped}
    assert skips[(namespace, web["metadata"]["name"])] is SkipCode.NO_ROOM
    assert not [path for (method, path) in cluster.proxy.requests if path.endswith("/eviction")]
    # Nothing to do: one list each of nodes, pods, budgets, volumes and claims (one page each here),
    # and no more.
    assert cluster.proxy.requests == Counter({("GET", path): 1 for path in SNAPSHOT_LISTS})
    assert running(pods(api, namespace, "web"))[0]["metadata"]["uid"] == web["metadata"]["uid"]


def test_dry_run_plans_but_evicts_and_records_nothing(cluster, api, kube, namespace, nodes, store):
    nodes(lifecycle="on-demand")
    deployment(api, namespace, "web", affinity=preferred_affinity(CAPACITY, ["SPOT"]))
    web = wait_for(lambda: running(pods(api, namespace, "web")), "web running")[0]
    nodes(lifecycle="spot")
    metrics = MetricsRecorder()
    cluster.proxy.reset_counts()
    result = Rebalancer(replace(SETTINGS, dry_run=True), kube, metrics, store).cycle()
    # Something to move: the controllers of the kind moved are read too (metadata only), for
    # workload opt-outs and floors.
    assert cluster.proxy.requests == Counter({
        ("GET", path): 1 for path in (*SNAPSHOT_LISTS, "/apis/apps/v1/replicasets")})
    assert [e.name for e in result.plan.evictions] == [web["metadata"]["name"]]
    assert result.evicted == ()
    assert metrics.total("MovesPlanned", ClusterName=CLUSTER) == 1
    assert store.load(CLUSTER).version == 0
    assert running(pods(api, namespace, "web"))[0]["metadata"]["uid"] == web["metadata"]["uid"]


def test_controller_annotations_hold_moves_back(cluster, api, kube, namespace, nodes, store):
    """A Deployment's opt-out (copied to its ReplicaSet) and a StatefulSet's on-demand floor,
    read from metadata-only lists of the kinds the plan would move."""
    nodes(lifecycle="on-demand")
    spot_preferring = {"affinity": preferred_affinity(CAPACITY, ["SPOT"])}
    for name in ("kept", "moved"):
        deployment(api, namespace, name, **spot_preferring)
    api.patch(f"/apis/apps/v1/namespaces/{namespace}/deployments/kept",
              {"metadata": {"annotations": {"spot-rebalancer.io/disable": "true"}}})
    statefulset(api, namespace, "db", **spot_preferring)
    api.patch(f"/apis/apps/v1/namespaces/{namespace}/statefulsets/db",
              {"metadata": {"annotations": {"spot-rebalancer.io/min-on-demand": "100%"}}})
    wait_for(lambda: len(running(pods(api, namespace))) == 3, "three pods running")
    wait_for(lambda: [rs for rs in api.get(f"/apis/apps/v1/namespaces/{namespace}/replicasets")["items"]
                      if rs["metadata"]["name"].startswith("kept-") and rs["metadata"].get("annotations", {})
                      .get("spot-rebalancer.io/disable") == "true"], "the opt-out copied to the ReplicaSet")
    nodes(lifecycle="spot")

    cluster.proxy.reset_counts()
    result = Rebalancer(replace(SETTINGS, dry_run=True), kube, MetricsRecorder(), store).cycle()
    assert [e.name.split("-")[0] for e in result.plan.evictions] == ["moved"]
    skips = {s.name.split("-")[0]: s.code for s in result.plan.skipped if s.namespace == namespace}
    assert skips == {"kept": SkipCode.OPTED_OUT, "db": SkipCode.ON_DEMAND_FLOOR}
    reads = {path for (method, path) in cluster.proxy.requests if method == "GET"}
    assert {"/apis/apps/v1/replicasets", "/apis/apps/v1/statefulsets"} <= reads


@pytest.mark.parametrize("inside", [False, True], ids=["outside the window", "inside the window"])
def test_the_rebalancer_moves_pods_only_inside_a_window(cluster, api, kube, namespace, nodes, store, inside):
    from datetime import UTC, datetime, timedelta

    from spot_rebalancer.config import Window

    nodes(lifecycle="on-demand")
    deployment(api, namespace, "web", affinity=preferred_affinity(CAPACITY, ["SPOT"]))
    web = wait_for(lambda: running(pods(api, namespace, "web")), "web running")[0]
    nodes(lifecycle="spot")
    # A daily window that opened a minute ago, or one that opens twelve hours from now.
    opened = datetime.now(UTC) - timedelta(minutes=1) if inside else datetime.now(UTC) + timedelta(hours=12)
    window = Window(f"{opened.minute} {opened.hour} * * *", 60)
    cluster.proxy.reset_counts()

    settings = replace(SETTINGS, rebalance_windows=(window,))
    result = Rebalancer(settings, kube, MetricsRecorder(), store).cycle()

    evictions = [path for (method, path) in cluster.proxy.requests if path.endswith("/eviction")]
    assert result.window_open is inside
    assert [e.name for e in result.evicted] == ([web["metadata"]["name"]] if inside else [])
    assert len(evictions) == (1 if inside else 0)
    assert store.load(CLUSTER).version == 1, "the reviewed history is kept either way"
