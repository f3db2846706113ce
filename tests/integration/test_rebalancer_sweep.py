"""The sweep and the schedule function on the real control plane: an expired rebalance
recommendation's taint is undone, a fresh one kept, and one handler call runs sweep, census and
cycle with DynamoDB on moto."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto import mock_aws

from spot_rebalancer.config import Settings
from spot_rebalancer.drain_policy import ACTION_ANNOTATION, DrainReason, node_drain_patch
from spot_rebalancer.rebalancer import Rebalancer
from spot_rebalancer.telemetry import MetricsRecorder
from tests.kube.workloads import deployment, pods, preferred_affinity, running, wait_for
from tests.state_table import create_state_table

CLUSTER = "test"
TTL = 1800
LABEL = "node.kubernetes.io/lifecycle"


def recommend(kube, name: str, at: datetime) -> None:
    """What the events function does on a rebalance recommendation (taint only, by default)."""
    patch = node_drain_patch(kube.get_node(name), DrainReason.REBALANCE_RECOMMENDATION, Settings(), at)
    kube.patch_node(patch.node_name, patch.body)


def test_the_sweep_undoes_only_expired_recommendations(api, kube, nodes):
    now = datetime.now(UTC)
    expired, fresh = nodes(lifecycle="spot"), nodes(lifecycle="spot")
    recommend(kube, expired.name, now - timedelta(seconds=TTL + 60))
    recommend(kube, fresh.name, now - timedelta(seconds=60))

    settings = Settings(cluster_name=CLUSTER, recommendation_ttl_seconds=TTL)
    steps = Rebalancer(settings, kube, MetricsRecorder(), None, now=lambda: now).sweep().steps
    assert [(s.action, s.node, s.outcome) for s in steps] == [("revert", expired.name, "reverted")]
    node = api.get(f"/api/v1/nodes/{expired.name}")
    assert not node["spec"].get("taints") and not node["spec"].get("unschedulable")
    assert ACTION_ANNOTATION not in node["metadata"].get("annotations", {})
    assert [t["key"] for t in api.get(f"/api/v1/nodes/{fresh.name}")["spec"]["taints"]] == [
        DrainReason.REBALANCE_RECOMMENDATION.taint_key]


def test_one_unreadable_node_does_not_stop_the_sweep_census_or_cycle(api, kube, nodes):
    """A recorded action whose time has no zone once raised TypeError out of the sweep, and the whole
    schedule function failed every period. Now that node is left alone and the rest goes on."""
    now = datetime.now(UTC)
    garbled, expired = nodes(lifecycle="spot"), nodes(lifecycle="spot")
    recommend(kube, garbled.name, now - timedelta(days=1))
    recommend(kube, expired.name, now - timedelta(days=1))
    record = api.get(f"/api/v1/nodes/{garbled.name}")["metadata"]["annotations"][ACTION_ANNOTATION]
    naive = record.replace("+00:00", "").replace("Z", "")
    assert naive != record
    kube.patch_node(garbled.name, {"metadata": {"annotations": {ACTION_ANNOTATION: naive}}})

    settings = Settings(cluster_name=CLUSTER, recommendation_ttl_seconds=TTL)
    result = Rebalancer(settings, kube, MetricsRecorder(), None, now=lambda: now).tick()

    reverted = [(s.node, s.outcome) for s in result.sweep.steps if s.action == "revert"]
    assert reverted == [(expired.name, "reverted")]
    assert [t["key"] for t in api.get(f"/api/v1/nodes/{garbled.name}")["spec"]["taints"]] == [
        DrainReason.REBALANCE_RECOMMENDATION.taint_key], "an unreadable record is never undone"
    assert result.census.rows, "the census ran"
    assert result.cycle.plan is not None, "and the cycle"


@pytest.fixture
def schedule_env(monkeypatch, kube):
    from spot_rebalancer import eks_auth
    from spot_rebalancer.handlers import schedule

    with mock_aws():
        create_state_table(boto3.client("dynamodb", region_name="eu-west-1"))
        for name, value in {"CLUSTER_NAME": CLUSTER, "STATE_TABLE": "state", "MIN_POD_AGE_SECONDS": "0",
                            "MOVE_SINGLE_REPLICA_WORKLOADS": "true",
                            "AWS_DEFAULT_REGION": "eu-west-1"}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(eks_auth, "client_for_cluster", lambda cluster: kube)
        schedule._runtime.cache_clear()
        yield schedule
        schedule._runtime.cache_clear()


def test_the_schedule_function_sweeps_counts_and_moves(api, cluster, namespace, nodes, schedule_env, capsys):
    """The pod prefers our own lifecycle label, which the spot node only gets from the sweep: the
    cycle sees the sweep's work."""
    nodes(lifecycle="on-demand")
    deployment(api, namespace, "web", affinity=preferred_affinity(LABEL, ["spot"]))
    web = wait_for(lambda: running(pods(api, namespace, "web")), "web running")[0]
    spot = nodes(lifecycle="spot", capacity_label=False, labels={"karpenter.sh/capacity-type": "spot"})

    summary = schedule_env.handler({}, None)
    assert summary["cluster"] == CLUSTER
    assert ("label", spot.name) in {(s["action"], s["node"]) for s in summary["sweep"]}
    assert summary["misplacedPods"] == 1
    assert summary["evicted"] == 1
    assert api.get(f"/api/v1/nodes/{spot.name}")["metadata"]["labels"][LABEL] == "spot"
    wait_for(lambda: [p for p in running(pods(api, namespace, "web")) if p["spec"]["nodeName"] == spot.name
                      and p["metadata"]["uid"] != web["metadata"]["uid"]], "web moved to spot")
    emf = capsys.readouterr().out
    assert '"MovesPlanned"' in emf and '"SpotShareRequestedCpu"' in emf

    # The next run has nothing to change or move (web's move is judged): one list each of nodes,
    # pods, budgets, volumes and claims serves the sweep, the census and the cycle.
    cluster.proxy.reset_counts()
    summary = schedule_env.handler({}, None)
    assert (summary["sweep"], summary["planned"]) == ([], 0)
    assert cluster.proxy.requests == Counter({("GET", path): 1 for path in (
        "/api/v1/nodes", "/api/v1/pods", "/apis/policy/v1/poddisruptionbudgets", "/api/v1/persistentvolumes",
        "/api/v1/persistentvolumeclaims")})
