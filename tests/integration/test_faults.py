"""Drains under an unreliable apiserver: a fault-injecting proxy answers a share of requests with
5xx or 429, resets connections and adds latency. Drains still finish before their deadline where
the faults allow, PodDisruptionBudgets hold, and no pod is evicted twice."""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from spot_rebalancer.aws import AutoScaling, Ec2
from spot_rebalancer.config import Settings
from spot_rebalancer.drain import DrainService
from spot_rebalancer.events import parse_event
from spot_rebalancer.telemetry import MetricsRecorder
from tests.ec2 import launch_instance
from tests.kube.workloads import deployment, pdb, pods, running, wait_for

SAMPLE = Path(__file__).parents[1] / "events" / "spot-interruption-terminate.json"
MIN_AVAILABLE = 3
REPLICAS = 6
STATUS_BODY = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                          "message": "injected fault"}).encode()


class Faults:
    """A seeded share of injected failures on the product's evictions and reads."""

    def __init__(self, seed: int, share: float, delay: float) -> None:
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.share = share
        self.delay = delay
        self.injected: Counter[str] = Counter()

    def __call__(self, method: str, path: str):
        threading.Event().wait(self.delay)
        if not (path.endswith("/eviction") or path.startswith("/api/v1/pods") or "/api/v1/nodes" in path):
            return None
        # Only the product's requests draw from the seed, so the test's own polling, whose count
        # depends on timing, never changes which of them fail.
        with self._lock:
            roll = self._random.random()
            kind = self._random.choice(("503", "500", "429", "reset"))
        if roll >= self.share:
            return None
        self.injected[kind] += 1
        return "reset" if kind == "reset" else (int(kind), STATUS_BODY)


class ReadyFloor(threading.Thread):
    """The fewest Ready, not terminating pods of the app seen while the drain runs."""

    def __init__(self, api, namespace: str) -> None:
        super().__init__(daemon=True)
        self.api, self.namespace = api, namespace
        self.fewest = REPLICAS
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            self.fewest = min(self.fewest, len(running(pods(self.api, self.namespace, "web"))))


@pytest.mark.parametrize("seed", [1, 2])
def test_a_drain_under_faults_finishes_in_time_without_violating_the_budget(
        cluster, api, kube, namespace, nodes, seed):
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="eu-west-1")
        instance = launch_instance(ec2)
        doomed = nodes(lifecycle="spot", instance_id=instance)
        deployment(api, namespace, "web", replicas=REPLICAS)
        wait_for(lambda: len(running(pods(api, namespace, "web"))) == REPLICAS, "web running")
        nodes(lifecycle="on-demand")
        pdb(api, namespace, "web", "web", min_available=MIN_AVAILABLE)
        wait_for(lambda: api.get(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/web")
                 ["status"].get("disruptionsAllowed") == REPLICAS - MIN_AVAILABLE, "the budget")

        raw = json.loads(SAMPLE.read_text())
        raw["detail"]["instance-id"] = instance
        raw["time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = parse_event(raw)[0]
        handler = DrainService(Settings(cluster_name="test"), Ec2(ec2),
                                      AutoScaling(boto3.client("autoscaling", region_name="eu-west-1")),
                                      lambda _: kube, MetricsRecorder())
        faults = Faults(seed, share=0.25, delay=0.02)
        floor = ReadyFloor(api, namespace)
        cluster.proxy.reset_counts()
        floor.start()
        cluster.proxy.set_fault(faults)
        try:
            result = None
            deliveries = 0
            while result is None and deliveries < 3:
                deliveries += 1  # a failed read aborts an invocation; the queue delivers it again
                try:
                    result = handler.handle(event, budget_seconds=100)
                except Exception as exc:  # any failure is delivered again, like SQS would
                    assert "injected fault" in str(exc) or "HTTP 0" in str(exc), exc
        finally:
            cluster.proxy.set_fault(None)
            floor.stop.set()
            floor.join()

    assert result is not None, "three deliveries in a row failed"
    assert sum(faults.injected.values()) > 0, "no fault was injected: the test proves nothing"
    assert datetime.now(UTC) < event.deadline, "the drain ran past the 2-minute notice"
    assert not [p for p in pods(api, namespace) if p["spec"].get("nodeName") == doomed.name]
    assert result.continue_at is None
    assert floor.fewest >= MIN_AVAILABLE, f"the budget was violated: {floor.fewest} Ready"
    accepted = Counter(path for (method, path, status), n in cluster.proxy.responses.items()
                       for _ in range(n) if path.endswith("/eviction") and status == 201)
    assert accepted and max(accepted.values()) == 1, f"a pod was evicted twice: {accepted}"
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(faults.injected.items()))
    print(f"\nfaults (seed {seed}): {sum(faults.injected.values())} injected ({kinds}); drain completed "
          f"before the deadline in {deliveries} deliveries; fewest Ready {floor.fewest} of {REPLICAS} "
          f"(minAvailable {MIN_AVAILABLE}): 0 PDB violations; {len(accepted)} pods evicted, each once")
