"""The census of a seeded fleet, exactly: through the function on a live snapshot (and the
metrics it publishes) and through `spot-rebalancer census --kubeconfig ... --json`."""

from __future__ import annotations

import json

import pytest

from spot_rebalancer.cli import main
from spot_rebalancer.config import Settings
from spot_rebalancer.rebalance import CensusRow
from spot_rebalancer.rebalancer import Rebalancer
from spot_rebalancer.telemetry import MetricsRecorder
from tests.kube.workloads import deployment, pods, preferred_affinity, running, wait_for

CAPACITY = "eks.amazonaws.com/capacityType"
CLUSTER = "test"
MI, GI = 2**20, 2**30


def required(**labels: str) -> dict:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": k, "operator": "In", "values": [v]} for k, v in labels.items()]}]}}}


@pytest.fixture
def fleet(api, namespace, nodes):
    """One on-demand amd64 node holding two pods that prefer spot (added before spot, so they are
    misplaced), two spot amd64 nodes with two pinned pods, one spot arm64 node with two."""
    nodes(lifecycle="on-demand", cpu="4", memory="16Gi")
    deployment(api, namespace, "web", replicas=2, cpu="250m", memory="256Mi",
               affinity=preferred_affinity(CAPACITY, ["SPOT"]))
    wait_for(lambda: len(running(pods(api, namespace, "web"))) == 2, "web on on-demand")
    for _ in range(2):
        nodes(lifecycle="spot", cpu="4", memory="16Gi")
    nodes(lifecycle="spot", arch="arm64", cpu="2", memory="8Gi")
    deployment(api, namespace, "batch", replicas=2, cpu="1", memory="1Gi",
               affinity=required(**{CAPACITY: "SPOT", "kubernetes.io/arch": "amd64"}))
    deployment(api, namespace, "arm", replicas=2, cpu="500m", memory="512Mi",
               affinity=required(**{"kubernetes.io/arch": "arm64"}))
    wait_for(lambda: len(running(pods(api, namespace))) == 6, "every pod running")


ROWS = (CensusRow("on-demand", "amd64", 1, 4000, 16 * GI, 500, 512 * MI),
        CensusRow("spot", "amd64", 2, 8000, 32 * GI, 2000, 2 * GI),
        CensusRow("spot", "arm64", 1, 2000, 8 * GI, 1000, 1 * GI))


def test_census_of_a_live_snapshot_and_its_metrics(fleet, kube):
    metrics = MetricsRecorder()
    result = Rebalancer(Settings(cluster_name=CLUSTER), kube, metrics, None).census()
    assert result.rows == ROWS
    assert result.spot_cpu_share == 3000 / 3500
    assert (result.pods_with_preferences, result.misplaced_pods) == (2, 2)

    by_name: dict[str, dict] = {}
    for point in metrics.points:
        by_name.setdefault(point.name, {})[point.dimensions] = (point.value, point.unit)
    arm_spot = (("Architecture", "arm64"), ("CapacityType", "spot"), ("ClusterName", CLUSTER))
    assert by_name["Nodes"][arm_spot] == (1, "Count")
    assert by_name["AllocatableCpu"][arm_spot] == (2, "Count")
    assert by_name["RequestedCpu"][arm_spot] == (1, "Count")
    assert by_name["AllocatableMemory"][arm_spot] == (8 * GI, "Bytes")
    assert by_name["RequestedMemory"][arm_spot] == (GI, "Bytes")
    assert all(len(points) == 3 for name, points in by_name.items()
               if name in ("Nodes", "AllocatableCpu", "AllocatableMemory", "RequestedCpu", "RequestedMemory"))
    cluster_only = (("ClusterName", CLUSTER),)
    assert by_name["SpotShareRequestedCpu"] == {cluster_only: (pytest.approx(300 / 3.5), "Percent")}
    assert by_name["MisplacedPods"] == {cluster_only: (2, "Count")}


def test_census_command_on_the_live_cluster(fleet, cluster, capsys):
    assert main(["census", "--kubeconfig", str(cluster.kubeconfig), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [tuple(row.values()) for row in out["rows"]] == [tuple(
        getattr(row, f) for f in CensusRow.__dataclass_fields__) for row in ROWS]
    assert out["spot_cpu_share"] == pytest.approx(3000 / 3500)
    assert (out["pods_with_preferences"], out["misplaced_pods"]) == (2, 2)


def test_plan_command_on_the_live_cluster_moves_the_misplaced_pods(fleet, cluster, namespace, capsys,
                                                                 monkeypatch):
    monkeypatch.setenv("MIN_POD_AGE_SECONDS", "0")
    assert main(["plan", "--kubeconfig", str(cluster.kubeconfig), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # One replica of a workload moves per cycle. (Earlier tests' namespaces may still be going.)
    assert [(e["namespace"], e["name"].split("-")[0], e["score_gain"]) for e in out["evictions"]] == [
        (namespace, "web", 100)]
    assert [(c["name"].split("-")[0], c["code"]) for c in out["considered"]
            if c["namespace"] == namespace] == [("web", "workload-cap")]
