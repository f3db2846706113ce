"""API-request benchmark: what one rebalance cycle asks of the Kubernetes API, counted through the
local cluster's loopback proxy.

A fleet of on-demand nodes runs enough pods, all preferring spot, that the pod list takes several
pages at the product's page size. Counted side by side in one run:
- a cycle with nothing to move (no spot node yet), `Rebalancer.cycle` alone;
- the schedule function's whole invocation ("schedule fn") in that state (sweep, snapshot, census,
  cycle), through its Lambda handler with moto for AWS;
- a cycle with moves, once spot nodes with room join.
Goal: a cycle reads at most 3 + its continuation pages (one list per kind it needs: nodes, pods,
PodDisruptionBudgets, plus the further pages of each), and writes only its evictions and Events.
Run: .venv/bin/python bench/api_requests.py
"""

from __future__ import annotations

import os
import re
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).parents[1]))

import boto3
from moto import mock_aws

import spot_rebalancer.eks_auth
from spot_rebalancer.config import Settings
from spot_rebalancer.handlers import schedule
from spot_rebalancer.kube import PAGE_SIZE, KubeClient
from spot_rebalancer.rebalancer import Rebalancer
from spot_rebalancer.state import HistoryStore
from spot_rebalancer.telemetry import MetricsRecorder
from tests.kube.cluster import LocalCluster
from tests.kube.workloads import deployment, pdb, pods, preferred_affinity, running, wait_for
from tests.state_table import create_state_table

T = TypeVar("T")

NAMESPACE = "bench"
APPS = 11
REPLICAS = 100  # 1,100 pods: three pages of pods at the product's page size
ON_DEMAND_NODES = 12
SPOT_NODES = 2
REGION = "eu-west-1"
CLUSTER = "bench"
TABLE = "state"
# The lists a cycle cannot do without; every other read is beyond the goal.
SNAPSHOT_LISTS = ("/api/v1/nodes", "/api/v1/pods", "/apis/policy/v1/poddisruptionbudgets")
# Object names in paths, so that requests to alike objects count together.
NAMES = ((re.compile(r"/namespaces/[^/]+"), "/namespaces/{ns}"),
         (re.compile(r"/pods/[^/]+/eviction$"), "/pods/{pod}/eviction"),
         (re.compile(r"^/api/v1/nodes/[^/]+"), "/api/v1/nodes/{node}"))


class Requests:
    """The requests the proxy forwards while counting: its fault hook, answering None to each."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bool]] = []  # method, path without names, continuation page

    def __call__(self, method: str, path: str) -> None:
        url = urlsplit(path)
        plain = url.path
        for pattern, placeholder in NAMES:
            plain = pattern.sub(placeholder, plain)
        self.seen.append((method, plain, "continue" in parse_qs(url.query)))

    @property
    def by_path(self) -> Counter[tuple[str, str]]:
        return Counter((method, path) for method, path, _ in self.seen)

    @property
    def reads(self) -> int:
        return sum(method == "GET" for method, _, _ in self.seen)

    @property
    def continuations(self) -> int:
        return sum(continued for _, _, continued in self.seen)

    def beyond_goal(self) -> Counter[tuple[str, str]]:
        """Reads other than the snapshot's lists and their pages, and lists repeated."""
        extra = Counter()
        for method, path in self.by_path:
            if method != "GET":
                continue
            first_pages = sum(not c for m, p, c in self.seen if (m, p) == (method, path))
            allowed = 1 if path in SNAPSHOT_LISTS else 0
            if first_pages > allowed:
                extra[(method, path)] = first_pages - allowed
        return extra


def counted(cluster: LocalCluster, run: Callable[[], T]) -> tuple[Requests, T]:
    """The requests `run` sends, and what it returns."""
    requests = Requests()
    cluster.proxy.set_fault(requests)
    try:
        return requests, run()
    finally:
        cluster.proxy.set_fault(None)


def fill(cluster: LocalCluster) -> None:
    api = cluster.admin
    api.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    cluster.nodes.add_nodes(ON_DEMAND_NODES, lifecycle="on-demand", cpu="32", memory="128Gi",
                            lifecycle_label=True)
    for n in range(APPS):
        deployment(api, NAMESPACE, f"app{n}", replicas=REPLICAS, cpu="10m", memory="16Mi",
                   affinity=preferred_affinity("eks.amazonaws.com/capacityType", ["SPOT"]))
        pdb(api, NAMESPACE, f"app{n}", f"app{n}", max_unavailable=5)
    total = APPS * REPLICAS
    wait_for(lambda: len(running(pods(api, NAMESPACE))) == total, f"{total} pods running",
             timeout=600, interval=2)


def invoke_schedule() -> dict:
    return schedule.handler({"source": "aws.events", "detail-type": "Scheduled Event"}, None)


def main() -> int:
    cluster = LocalCluster().start()
    try:
        fill(cluster)
        kube = KubeClient.from_kubeconfig(str(cluster.kubeconfig))
        with mock_aws():
            create_state_table(boto3.client("dynamodb", region_name=REGION), TABLE)
            os.environ.update({"AWS_DEFAULT_REGION": REGION, "CLUSTER_NAME": CLUSTER, "STATE_TABLE": TABLE,
                               "MIN_POD_AGE_SECONDS": "0", "POWERTOOLS_METRICS_DISABLED": "true",
                               "POWERTOOLS_LOG_LEVEL": "WARNING"})
            # Only the EKS endpoint and token are replaced: the local apiserver takes the kubeconfig's.
            spot_rebalancer.eks_auth.client_for_cluster = lambda _name: kube
            store = HistoryStore(boto3.client("dynamodb", region_name=REGION), TABLE)
            rebalancer = Rebalancer(Settings.from_env(), kube, MetricsRecorder(), store)

            idle_cycle, idle = counted(cluster, lambda: rebalancer.cycle())
            idle_invocation, _ = counted(cluster, invoke_schedule)
            cluster.nodes.add_nodes(SPOT_NODES, lifecycle="spot", cpu="32", memory="128Gi",
                                    lifecycle_label=True)
            moving_cycle, moved = counted(cluster, lambda: rebalancer.cycle())

        report({"cycle, idle": idle_cycle, "schedule fn, idle": idle_invocation,
                "cycle, moves": moving_cycle})
        print(f"planned: {len(idle.plan.evictions)} with nothing to move, {len(moved.plan.evictions)} "
              f"with spot room ({len(moved.evicted)} evictions accepted)")
        return 0
    finally:
        cluster.stop()


def report(columns: dict[str, Requests]) -> None:
    print(f"Kubernetes API requests per rebalance cycle, through the proxy ({APPS * REPLICAS} pods on "
          f"{ON_DEMAND_NODES} on-demand nodes, page size {PAGE_SIZE})")
    rows = sorted({key for requests in columns.values() for key in requests.by_path},
                  key=lambda key: (key[0] != "GET", key))
    lines = [(f"{method} {path}", [r.by_path[(method, path)] for r in columns.values()])
             for method, path in rows]
    lines += [("reads", [r.reads for r in columns.values()]),
              ("  of which continuation pages", [r.continuations for r in columns.values()]),
              ("writes", [len(r.seen) - r.reads for r in columns.values()])]
    first = max(len(label) for label, _ in lines) + 2
    width = max(len(name) for name in columns) + 2
    print(" " * first + "".join(f"{name:>{width}}" for name in columns))
    for label, counts in lines:
        print(f"{label:{first}}" + "".join(f"{count:>{width}}" for count in counts))
    for name, requests in columns.items():
        budget = 3 + requests.continuations
        extra = requests.beyond_goal()
        verdict = "met" if requests.reads <= budget else "missed"
        detail = ", ".join(f"{m} {p} x{n}" for (m, p), n in extra.items()) or "none"
        print(f"goal, {name}: reads {requests.reads} <= 3 + {requests.continuations} pages: {verdict}; "
              f"reads beyond it: {detail}")


if __name__ == "__main__":
    sys.exit(main())
