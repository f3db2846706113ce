"""Issuing evictions: concurrently, retrying what a PodDisruptionBudget blocks until a deadline.

What to evict, in what order and with what grace period is decided elsewhere (drain policy,
planner); this module only talks to the Eviction API and reports what happened to each pod.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .kube import KubeApiError
from .objects import Pod

if TYPE_CHECKING:
    from .kube import KubeClient

MAX_WORKERS = 32


class Outcome(enum.Enum):
    ACCEPTED = "accepted"  # 201: the pod is being deleted
    GONE = "gone"  # 404: nothing left to evict
    BLOCKED = "blocked"  # 429 until the deadline: a PDB never allowed it
    FAILED = "failed"  # refused for another reason (403, 400, ...) or unreachable to the end


@dataclass(frozen=True, slots=True)
class EvictionResult:
    namespace: str
    name: str
    outcome: Outcome
    attempts: int
    message: str = ""


@dataclass(frozen=True, slots=True)
class EvictionSchedule:
    """When to give up and how long to wait between attempts (clock in seconds)."""

    until: float
    backoff: Callable[[int], float]  # attempt number (1-based) -> seconds before the next
    clock: Callable[[], float]
    sleep: Callable[[float], None]


# Statuses worth another attempt: a PDB says "not now", or the apiserver is briefly unwell.
_RETRY_BLOCKED = {429}
_RETRY_TRANSIENT = {0, 500, 502, 503, 504}


def evict_one(kube: KubeClient, pod: Pod, grace_seconds: int | None,
              schedule: EvictionSchedule, dry_run: bool = False) -> EvictionResult:
    namespace, name = pod.metadata.namespace, pod.metadata.name
    attempt = 0
    while True:
        attempt += 1
        try:
            response = kube.evict(namespace, name, grace_seconds, dry_run=dry_run)
            status, message = response.status, response.message
        except KubeApiError as exc:
            status, message = exc.status, exc.message
        if status in (200, 201):
            return EvictionResult(namespace, name, Outcome.ACCEPTED, attempt)
        if status == 404:
            return EvictionResult(namespace, name, Outcome.GONE, attempt)
        if status not in _RETRY_BLOCKED | _RETRY_TRANSIENT:
            return EvictionResult(namespace, name, Outcome.FAILED, attempt, message)
        delay = schedule.backoff(attempt)
        if schedule.clock() + delay >= schedule.until:
            outcome = Outcome.BLOCKED if status in _RETRY_BLOCKED else Outcome.FAILED
            return EvictionResult(namespace, name, outcome, attempt, message)
        schedule.sleep(delay)


def evict_all(kube: KubeClient, pods: Iterable[Pod], grace_seconds: Callable[[Pod], int | None],
              schedule: EvictionSchedule, dry_run: bool = False) -> list[EvictionResult]:
    """Evict every pod at once (bounded by MAX_WORKERS threads); results in the pods' order."""
    pods = list(pods)
    if not pods:
        return []
    with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(pods))) as pool:
        return list(pool.map(lambda p: evict_one(kube, p, grace_seconds(p), schedule, dry_run), pods))


def pods_remaining(kube: KubeClient, node_name: str, uids: set[str]) -> list[Pod]:
    """Which of the pods with these uids are still on the node."""
    return [p for p in kube.list_pods(node_name) if p.metadata.uid in uids]


def wait_until_gone(kube: KubeClient, node_name: str, pods: Iterable[Pod], until: float,
                    clock: Callable[[], float], sleep: Callable[[float], None],
                    poll_seconds: float = 1.0) -> list[Pod]:
    """Poll until the pods have left the node or `until` passes; returns those still there."""
    uids = {p.metadata.uid for p in pods}
    while True:
        remaining = pods_remaining(kube, node_name, uids) if uids else []
        if not remaining or clock() + poll_seconds > until:
            return remaining
        uids = {p.metadata.uid for p in remaining}
        sleep(poll_seconds)
