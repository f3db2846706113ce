"""Interruption storms on the local control plane and moto: a batch of spot warnings cordons every
node before any drain waits on a budget, a budget that blocks a low-priority pod does not keep the
system-critical pods from their eviction, and forceAtDeadline deletes what budgets still block at
the end (or, off, reports it)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from spot_rebalancer.aws import AutoScaling, Ec2
from spot_rebalancer.config import Settings
from spot_rebalancer.drain import DrainService
from spot_rebalancer.drain_policy import GRACE_SAFETY_MARGIN_SECONDS
from spot_rebalancer.events import parse_event
from spot_rebalancer.telemetry import MetricsRecorder
from tests.ec2 import launch_instance, launched_ago
from tests.events_function import REGION, events_function, sample_event
from tests.kube.workloads import bare_pod, pdb, pods, running, wait_for

EVENTS = Path(__file__).parents[1] / "events"
INSTANCE_ID = re.compile(r"i-[0-9a-f]{17}\b")


def pods_on(api, namespace: str, node: str) -> list[dict]:
    return [p for p in pods(api, namespace) if p["spec"].get("nodeName") == node]


def blocked_pod(api, namespace: str, name: str, node: str, **template) -> None:
    """A pod on the node whose budget never allows its eviction."""
    bare_pod(api, namespace, name, node=node, **template)
    pdb(api, namespace, name, name, min_available=1)


def test_a_batch_cordons_every_node_before_a_blocked_drain_ends(api, cluster, kube, namespace, nodes,
                                                               monkeypatch):
    with events_function(monkeypatch, lambda _cluster: kube) as function:
        ec2 = boto3.client("ec2", region_name=REGION)
        instances = [launch_instance(ec2) for _ in range(4)]
        spot = [nodes(lifecycle="spot", instance_id=instance).name for instance in instances]
        blocked_pod(api, namespace, "stuck", spot[0])
        for n, node in enumerate(spot[1:], 1):
            bare_pod(api, namespace, f"app-{n}", node=node)
        wait_for(lambda: len(running(pods(api, namespace))) == len(spot), "a pod on every node")
        seen: list[tuple[str, str]] = []

        def watch(method: str, path: str) -> None:
            if method == "PATCH" and path.startswith("/api/v1/nodes/"):
                seen.append(("cordon", path.rsplit("/", 1)[-1]))
            elif method == "POST" and path.endswith("/eviction"):
                seen.append(("evict", path.split("/")[-2]))

        cluster.proxy.set_fault(watch)
        try:
            # 16 s: the blocked drain has 6 s in this invocation, then continues through the queue.
            outcome = function.invoke([sample_event("spot-interruption-terminate.json", instance)
                                       for instance in instances], remaining_ms=16_000)
        finally:
            cluster.proxy.set_fault(None)
        queued = [json.loads(body)["continuation"] for body in function.queued()]

    assert outcome == {"batchItemFailures": []}
    first_eviction = next(n for n, (kind, _) in enumerate(seen) if kind == "evict")
    assert sorted(name for kind, name in seen[:first_eviction] if kind == "cordon") == sorted(spot), (
        f"a node was cordoned after a drain had begun: {seen}")
    stuck_attempts = [n for n, step in enumerate(seen) if step == ("evict", "stuck")]
    assert len(stuck_attempts) > 1, "the blocked pod was tried again while the drain lasted"
    for n in range(1, len(spot)):
        assert seen.index(("evict", f"app-{n}")) < stuck_attempts[-1], "a drain waited for another"
        assert pods_on(api, namespace, spot[n]) == []
    assert [p["metadata"]["name"] for p in pods_on(api, namespace, spot[0])] == ["stuck"]
    assert [(c["instanceId"], c["attempt"]) for c in queued] == [(instances[0], 1)]
    for node in spot:
        assert api.get(f"/api/v1/nodes/{node}")["spec"]["unschedulable"] is True


@pytest.fixture
def late_warning(nodes) -> Iterator[tuple[object, str, datetime]]:
    """A spot node on moto, and a warning about it that reaches us with 15 s of its notice left:
    (the event, the node's name, the warning's time)."""
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        instance = launch_instance(ec2)
        launched_ago(instance, 3600)  # running before the late warning
        node = nodes(lifecycle="spot", instance_id=instance).name
        warned_at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=105)
        raw = json.loads(INSTANCE_ID.sub(instance, (EVENTS / "spot-interruption-terminate.json").read_text()))
        raw["time"] = warned_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        (event,) = parse_event(raw)
        yield event, node, ec2


def drain_service(ec2, kube, metrics: MetricsRecorder, **settings) -> DrainService:
    return DrainService(Settings(cluster_name="test", drain_timeout_seconds=60, **settings), Ec2(ec2),
                        AutoScaling(boto3.client("autoscaling", region_name=REGION)),
                        lambda _cluster: kube, metrics)


def test_a_blocked_wave_does_not_keep_the_system_critical_wave_from_its_eviction(api, kube, namespace,
                                                                                 late_warning):
    event, node, ec2 = late_warning
    blocked_pod(api, namespace, "batch", node, grace=5)
    bare_pod(api, namespace, "dns", node=node, grace=5, priority_class="system-cluster-critical")
    wait_for(lambda: len(running(pods_on(api, namespace, node))) == 2, "both pods running")

    result = drain_service(ec2, kube, MetricsRecorder()).handle(event, budget_seconds=100)
    finished = datetime.now(UTC)

    outcomes = {s.pod: s.outcome for s in result.steps if s.action == "evict"}
    assert outcomes == {"dns": "accepted", "batch": "blocked"}
    assert [s.pod for s in result.steps if s.action == "blocked"] == ["batch"]
    assert [p["metadata"]["name"] for p in pods_on(api, namespace, node)] == ["batch"], "dns has left"
    assert finished <= event.deadline, "the drain outlasted the instance"


@pytest.mark.parametrize("force", [True, False], ids=["on", "off"])
def test_force_at_deadline_deletes_what_budgets_still_block_with_its_capped_grace(
        api, cluster, kube, namespace, late_warning, monkeypatch, force):
    event, node, ec2 = late_warning
    blocked_pod(api, namespace, "stuck", node, grace=60)
    wait_for(lambda: running(pods_on(api, namespace, node)), "the pod running")
    monkeypatch.setattr(cluster.nodes, "deletion_delay", 3)  # long enough to read its grace period
    metrics = MetricsRecorder()
    cluster.proxy.reset_counts()
    graces: list[int] = []
    done = threading.Event()

    def watch() -> None:  # the grace period the pod is seen terminating with
        while not done.wait(0.1) and not graces:
            graces.extend(p["metadata"]["deletionGracePeriodSeconds"] for p in pods_on(api, namespace, node)
                          if p["metadata"].get("deletionTimestamp"))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = drain_service(ec2, kube, metrics, force_at_deadline=force).handle(event, budget_seconds=100)
    finally:
        done.set()
        watcher.join()

    deletes = cluster.proxy.requests[("DELETE", f"/api/v1/namespaces/{namespace}/pods/stuck")]
    (step,) = [s for s in result.steps if s.action == "evict"]
    if not force:
        assert (step.outcome, deletes, graces) == ("blocked", 0, [])
        assert [s.pod for s in result.steps if s.action == "blocked"] == ["stuck"]
        assert [p["metadata"]["name"] for p in pods_on(api, namespace, node)] == ["stuck"]
        return
    assert (step.outcome, deletes) == ("deleted", 1)
    # Its 60 s would end after the instance: it was deleted at once, with the time left less the margin.
    left = (event.deadline - event.time).total_seconds() - 105
    (grace,) = graces
    assert left - GRACE_SAFETY_MARGIN_SECONDS - 3 <= grace <= left - GRACE_SAFETY_MARGIN_SECONDS
    events = api.get(f"/api/v1/namespaces/{namespace}/events")["items"]
    (warning,) = [e for e in events if e["reason"] == "DeletedAtDeadline"]
    assert (warning["type"], warning["involvedObject"]["name"]) == ("Warning", "stuck")
    assert metrics.total("PodsDeletedAtDeadline") == 1
    assert not [s for s in result.steps if s.action == "blocked"]
    assert pods_on(api, namespace, node) == [], "deleted, and gone before the drain ended"
