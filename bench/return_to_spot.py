"""Back to spot after a storm, through the real schedule handler: the new rails against the old.

On the local control plane (tests/kube) with moto for the history table: 20 spot-preferring
Deployments (1 to 20 replicas, 210 pods, every fourth with a budget of maxUnavailable 1) run on
spot; a storm takes every spot node away and the pods fall back to on-demand nodes; spot capacity
comes back; then schedule invocations (the Lambda handler, with a Lambda context giving it 270 s)
run one after the other. Per cycle it prints the spot-preferring pods back on spot, the on-demand
nodes left with no pods, the evictions, the budget violations seen (a poll every 0.2 s of the Ready
pods of each budgeted workload), and the fleet's cost per hour once the emptied nodes are gone, by
the product's own cost function, with list prices given as priceOverrides. The same run is then
repeated with what a team that wants the whole saving sets, moveSingleReplicaWorkloads=true (by
default the single-replica workload stays on its on-demand node, which therefore stays), and with the
old rails (maxEvictionsPerWorkload=1, maxEvictionsPerCycle=10, 3 a node, 5 a namespace); "new rails"
are the defaults. The goals are checked on the defaults, the cost goal on both.

`.venv/bin/python bench/return_to_spot.py [cycles]` (default 3). Not a test: nothing is asserted.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

from lambda_context import LambdaContext

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "lambdas"), str(REPO)]

REGION = "eu-west-1"
TABLE = "state"
CLUSTER = "bench"
CAPACITY = "eks.amazonaws.com/capacityType"
WORKLOADS = 20
NODES = 11  # of 4 CPUs, per capacity type: 210 pods of 200m need 42 CPUs
PRICES = {"m6i.xlarge": {"onDemand": 0.192, "spot": 0.0768}}
INVOCATION_SECONDS = 270  # the schedule function's timeout at a 5-minute period
RAILS = {
    "new rails": {},  # the defaults
    "singles": {"MOVE_SINGLE_REPLICA_WORKLOADS": "true"},  # the defaults, single replicas moved too
    "old rails": {"MAX_EVICTIONS_PER_WORKLOAD": "1", "MAX_EVICTIONS_PER_CYCLE": "10",
                  "MAX_EVICTIONS_PER_NODE": "3", "MAX_EVICTIONS_PER_NAMESPACE": "5"},
}


def run(rails: str, cycles: int, cluster, kube) -> list[dict]:
    from spot_rebalancer.config import Settings
    from spot_rebalancer.handlers import schedule
    from spot_rebalancer.rebalance import PriceBook, fleet_cost
    from tests.kube.ready_watch import ReadyWatch
    from tests.kube.workloads import deployment, pdb, pods, preferred_affinity, running, wait_for

    for name in {name for changes in RAILS.values() for name in changes}:
        os.environ.pop(name, None)
    os.environ.update(RAILS[rails])
    schedule._runtime.cache_clear()
    settings = Settings.from_env()
    api, simulator = cluster.admin, cluster.nodes
    namespace = f"shop-{rails.split()[0]}"
    api.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    mine = {"lifecycle": "spot", "cpu": "4", "memory": "16Gi", "labels": {"bench": namespace}}
    spot = [simulator.add_node(**mine) for _ in range(NODES)]
    budgeted = {}
    for w in range(1, WORKLOADS + 1):
        app = f"app{w:02d}"
        deployment(api, namespace, app, replicas=w, cpu="200m", memory="128Mi",
                   affinity=preferred_affinity(CAPACITY, ["SPOT"]))
        if w % 4 == 0:
            pdb(api, namespace, app, app, max_unavailable=1)
            budgeted[app] = w
    total = WORKLOADS * (WORKLOADS + 1) // 2
    wait_for(lambda: len(running(pods(api, namespace))) == total, f"{total} pods on spot", timeout=300)
    book = PriceBook(overrides=dict(settings.price_overrides))

    def fleet() -> tuple[int, int, int, float]:
        """Pods on spot; on-demand nodes with no pod left, and those that can be emptied (not holding
        a single replica, which stays); the cost per hour without the empty ones."""
        nodes = [n for n in kube.list_nodes() if n.metadata.labels.get("bench") == namespace]
        placed = Counter(p.spec.node_name for p in kube.list_pods(namespace=namespace)
                         if p.metadata.deletion_timestamp is None and p.status.phase == "Running")
        spot_names = {n.metadata.name for n in nodes if n.metadata.labels.get(CAPACITY) == "SPOT"}
        empty = [n for n in nodes
                 if n.metadata.labels.get(CAPACITY) == "ON_DEMAND" and not placed[n.metadata.name]]
        kept = [n for n in nodes if n not in empty]
        pinned = set() if settings.move_single_replica_workloads else {
            p.spec.node_name for p in kube.list_pods(namespace=namespace)
            if p.metadata.labels.get("app") == "app01"}
        emptiable = sum(1 for n in nodes if n.metadata.labels.get(CAPACITY) == "ON_DEMAND"
                        and n.metadata.name not in pinned)
        return (sum(c for name, c in placed.items() if name in spot_names), len(empty), emptiable,
                fleet_cost(kept, book).per_hour)

    pre_storm = fleet()[3]
    # The storm: spot goes, on-demand capacity arrives (as an autoscaler would bring it), the pods
    # fall back to it; then spot capacity comes back.
    on_demand = [simulator.add_node(**{**mine, "lifecycle": "on-demand"}) for _ in range(NODES)]
    for node in spot:
        simulator.remove_node(node.name)
    wait_for(lambda: len(running(pods(api, namespace))) == total == len(pods(api, namespace)),
             "every pod back on on-demand", timeout=300)
    returned = [simulator.add_node(**mine) for _ in range(NODES)]
    time.sleep(2)  # the budgets' status catches up with the fallback
    on_spot, emptied, emptiable, cost = fleet()
    rows = [{"cycle": 0, "on_spot": on_spot, "emptied": emptied, "emptiable": emptiable, "evictions": 0,
             "violations": 0, "cost": cost, "waves": 0, "seconds": 0.0, "ended": "after the storm"}]
    def violations() -> int:  # the budgets are maxUnavailable 1
        return sum(watch.times_below(app, replicas - 1) for app, replicas in budgeted.items())

    with ReadyWatch(kube, namespace, interval=0.2) as watch:
        for cycle in range(1, cycles + 1):
            started = time.monotonic()
            summary = schedule.handler({}, LambdaContext(INVOCATION_SECONDS))
            seconds = time.monotonic() - started
            time.sleep(2)  # the last wave's replacements start
            on_spot, emptied, emptiable, cost = fleet()
            rows.append({"cycle": cycle, "on_spot": on_spot, "emptied": emptied, "emptiable": emptiable,
                         "evictions": summary["evicted"],
                         "violations": violations(), "cost": cost,
                         "waves": len(summary["waves"]), "seconds": seconds, "ended": summary["ended"]})
    for row in rows:
        row["total"], row["pre_storm_cost"] = total, pre_storm
    for node in on_demand + returned:
        simulator.remove_node(node.name)
    api.delete(f"/api/v1/namespaces/{namespace}")
    return rows


def main() -> int:
    import boto3
    from moto import mock_aws

    from spot_rebalancer import eks_auth
    from spot_rebalancer.kube import KubeClient
    from tests.kube.cluster import LocalCluster
    from tests.state_table import create_state_table

    cycles = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    cluster = LocalCluster().start()
    mock = mock_aws()
    mock.start()
    try:
        kube = KubeClient.from_kubeconfig(str(cluster.kubeconfig))
        eks_auth.client_for_cluster = lambda _name: kube
        os.environ.update({"AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, "CLUSTER_NAME": CLUSTER,
                           "STATE_TABLE": TABLE, "POWERTOOLS_METRICS_DISABLED": "true",
                           "POWERTOOLS_LOG_LEVEL": "WARNING", "MIN_POD_AGE_SECONDS": "0",
                           "PRICE_OVERRIDES": json.dumps(PRICES)})
        create_state_table(boto3.client("dynamodb", region_name=REGION), TABLE)
        results = {rails: run(rails, cycles, cluster, kube) for rails in RAILS}
    finally:
        mock.stop()
        cluster.stop()
    report(results)
    return 0


def report(results: dict[str, list[dict]]) -> None:
    print("return to spot: 20 workloads, 210 pods, after a storm; one row per schedule invocation")
    print(f"{'rails':<10} {'cycle':>5} {'on spot':>9} {'od emptied':>10} {'evictions':>9} {'violations':>10} "
          f"{'$/hour':>8} {'waves':>5} {'seconds':>7}  ended")
    for rails, rows in results.items():
        for r in rows:
            print(f"{rails:<10} {r['cycle']:>5} {r['on_spot']:>4}/{r['total']:<4} "
                  f"{r['emptied']:>4}/{r['emptiable']:<5} {r['evictions']:>9} {r['violations']:>10} "
                  f"{r['cost']:>8.3f} {r['waves']:>5} {r['seconds']:>7.1f}  {r['ended']}")
    print(f"pre-storm cost per hour: ${results['new rails'][0]['pre_storm_cost']:.3f}")
    for rails in ("new rails", "singles"):
        rows = results[rails]
        last, total = rows[-1], rows[-1]["total"]
        evictions = sum(r["evictions"] for r in rows)
        goals = [
            ("spot-preferring pods back within 3 cycles >= 95%", last["on_spot"] >= 0.95 * total,
             f"{last['on_spot'] / total:.1%}"),
            ("emptiable on-demand nodes emptied within 3 cycles", last["emptied"] >= last["emptiable"],
             f"{last['emptied']}/{last['emptiable']}"),
            ("<= 1 eviction per pod", evictions <= total, f"{evictions} evictions for {total} pods"),
            ("0 budget violations", last["violations"] == 0, str(last["violations"])),
            ("cost per hour within 5% of pre-storm once emptied nodes are gone",
             last["cost"] <= 1.05 * last["pre_storm_cost"],
             f"${last['cost']:.3f} vs ${last['pre_storm_cost']:.3f}"),
        ]
        for goal, met, figure in goals:
            print(f"{rails}: goal: {goal}: {'met' if met else 'NOT met'} ({figure})")


if __name__ == "__main__":
    sys.exit(main())
