"""What a rebalance cycle publishes about the budgets that refuse it."""

from __future__ import annotations

from datetime import UTC, datetime

from spot_rebalancer.config import Settings
from spot_rebalancer.rebalancer import Rebalancer, SnapshotView
from spot_rebalancer.snapshot import ClusterSnapshot
from spot_rebalancer.telemetry import MetricsRecorder
from tests.unit.builders import PREFER_SPOT, make_pdb, make_pod, on_demand_node, spot_node


def test_budgets_that_refuse_moves_are_counted_every_cycle_with_source_move():
    pods = [make_pod(f"{app}-1", "od-1", labels={"app": app}, preferred=[PREFER_SPOT],
                     owner=("ReplicaSet", app)) for app in ("web", "api", "db")]
    snapshot = ClusterSnapshot(nodes=[on_demand_node("od-1"), spot_node("spot-1")], pods=pods,
                               pdbs=[make_pdb("api", {"app": "api"}, 0), make_pdb("db", {"app": "db"}, 0),
                                     make_pdb("web", {"app": "web"}, 1)])
    metrics = MetricsRecorder()
    settings = Settings(cluster_name="prod", dry_run=True, move_single_replica_workloads=True)
    rebalancer = Rebalancer(settings, None, metrics, None,
                            view=SnapshotView(snapshot), now=lambda: datetime(2024, 5, 1, 12, tzinfo=UTC))
    for _ in range(2):
        rebalancer.cycle()
    blocked = [p for p in metrics.points if p.name == "EvictionsBlockedByPdb"]
    assert [(p.value, dict(p.dimensions)) for p in blocked] == [
        (2, {"ClusterName": "prod", "Source": "move"})] * 2
