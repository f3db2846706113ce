"""The one way pods leave a node: evictions through the Eviction API, issued concurrently and retried
while a PodDisruptionBudget refuses, each accepted one recorded as a Kubernetes Event and counted in
`PodsEvicted` by its source (a drain or a rebalancer move).

What to evict, in what order and with what grace period is decided elsewhere (drain policy,
planner); this module only talks to the API and reports what happened to each pod.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from .kube import KubeApiError, KubeClient, Response, equal_jitter
from .objects import Node, Pod
from .results import EvictionOutcome, EvictionResult
from .telemetry import MetricsRecorder

log = logging.getLogger(__name__)

MAX_WORKERS = 32
EVENT_WORKERS = 16


class Source(enum.StrEnum):
    """Who evicted: the `Source` dimension of `PodsEvicted`."""

    DRAIN = "drain"
    MOVE = "move"


@dataclass(frozen=True, slots=True)
class EvictionSchedule:
    """When to give up and how long to wait between attempts (clock in seconds). Each backoff is
    spread by `jitter`, so the drains of a storm, refused together, do not retry in step; a server's
    Retry-After is waited at least."""

    until: float
    backoff: Callable[[int], float]  # attempt number (1-based) -> seconds before the next
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    jitter: Callable[[float], float] = equal_jitter


class _Evicts(Protocol):
    def evict(self, namespace: str, name: str, grace_period_seconds: int | None = None) -> Response: ...

    def delete_pod(self, namespace: str, name: str, grace_period_seconds: int | None = None) -> Response: ...


# Statuses worth another attempt: a PDB says "not now", or the apiserver is briefly unwell.
_RETRY_BLOCKED = {429}
_RETRY_TRANSIENT = {0, 500, 502, 503, 504}


def _status(send: Callable[[], Response]) -> tuple[int, str, float | None]:
    """(status, message, Retry-After seconds) of a request; a transport failure's status is 0."""
    try:
        response = send()
    except KubeApiError as exc:
        return exc.status, exc.message, None
    return response.status, response.message, response.retry_after


def evict_one(kube: _Evicts, pod: Pod, grace_seconds: Callable[[Pod], int | None],
              schedule: EvictionSchedule, delete_at: float | None = None) -> EvictionResult:
    """Evict the pod, again while a budget refuses or the API is briefly unwell, until the
    schedule ends. The grace period is asked for at each attempt, as the time left shrinks.

    With `delete_at` (on the schedule's clock, before it ends), a pod budgets still refuse then is
    deleted with its grace period instead (forceAtDeadline)."""
    namespace, name = pod.metadata.namespace, pod.metadata.name
    until = schedule.until if delete_at is None else min(schedule.until, delete_at)
    attempt = 0
    while True:
        attempt += 1
        status, message, retry_after = _status(lambda: kube.evict(namespace, name, grace_seconds(pod)))
        if status in (200, 201):
            return EvictionResult(namespace, name, EvictionOutcome.ACCEPTED, attempt)
        if status == 404:
            return EvictionResult(namespace, name, EvictionOutcome.GONE, attempt)
        if status not in _RETRY_BLOCKED | _RETRY_TRANSIENT:
            return EvictionResult(namespace, name, EvictionOutcome.FAILED, attempt, message)
        delay = max(schedule.jitter(schedule.backoff(attempt)), retry_after or 0.0)
        if schedule.clock() + delay < until:
            schedule.sleep(delay)
            continue
        if status in _RETRY_BLOCKED and delete_at is not None and delete_at <= schedule.until:
            return _delete_at(kube, pod, grace_seconds, schedule, delete_at, attempt)
        outcome = EvictionOutcome.BLOCKED if status in _RETRY_BLOCKED else EvictionOutcome.FAILED
        return EvictionResult(namespace, name, outcome, attempt, message)


def _delete_at(kube: _Evicts, pod: Pod, grace_seconds: Callable[[Pod], int | None],
               schedule: EvictionSchedule, delete_at: float, attempts: int) -> EvictionResult:
    """At `delete_at`, one last eviction (the budget may allow it by then), else the deletion."""
    namespace, name = pod.metadata.namespace, pod.metadata.name
    schedule.sleep(max(0.0, delete_at - schedule.clock()))
    grace = grace_seconds(pod)
    status, message, _ = _status(lambda: kube.evict(namespace, name, grace))
    attempts += 1
    if status in (200, 201):
        return EvictionResult(namespace, name, EvictionOutcome.ACCEPTED, attempts)
    if status not in _RETRY_BLOCKED:
        outcome = EvictionOutcome.GONE if status == 404 else EvictionOutcome.FAILED
        return EvictionResult(namespace, name, outcome, attempts, message)
    status, message, _ = _status(lambda: kube.delete_pod(namespace, name, grace))
    if status in (200, 202):
        return EvictionResult(namespace, name, EvictionOutcome.DELETED, attempts)
    if status == 404:
        return EvictionResult(namespace, name, EvictionOutcome.GONE, attempts)
    return EvictionResult(namespace, name, EvictionOutcome.FAILED, attempts, f"deleting it: {message}")


def evict_all(kube: _Evicts, pods: Iterable[Pod], grace_seconds: Callable[[Pod], int | None],
              schedule: EvictionSchedule,
              delete_at: Callable[[Pod], float | None] = lambda _pod: None) -> list[EvictionResult]:
    """Evict every pod at once (bounded by MAX_WORKERS threads); results in the pods' order."""
    pods = list(pods)
    if not pods:
        return []
    with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(pods))) as pool:
        return list(pool.map(lambda p: evict_one(kube, p, grace_seconds, schedule, delete_at(p)), pods))


class EventRecorder:
    """Kubernetes Events for people watching the cluster; one that cannot be written changes nothing."""

    def __init__(self, kube: KubeClient) -> None:
        self._kube = kube

    def record(self, items: Sequence[tuple[Node | Pod, str, str]], event_type: str = "Normal") -> None:
        """(object, reason, message) for each Event, written concurrently."""
        if items:
            with ThreadPoolExecutor(max_workers=min(EVENT_WORKERS, len(items))) as pool:
                list(pool.map(lambda item: self._record(item, event_type), items))

    def _record(self, item: tuple[Node | Pod, str, str], event_type: str) -> None:
        obj, reason, message = item
        meta = obj.metadata
        kind = "Node" if isinstance(obj, Node) else "Pod"
        try:
            self._kube.create_event(namespace=meta.namespace or "default", kind=kind, name=meta.name,
                                    uid=meta.uid, reason=reason, message=message, event_type=event_type)
        except KubeApiError as exc:
            log.warning("could not record event %s on %s %s: %s", reason, kind, meta.name, exc)


class Evictions:
    """Evictions on one cluster, with their Events and metric."""

    def __init__(self, kube: KubeClient, metrics: MetricsRecorder, cluster: str) -> None:
        self.kube = kube
        self.events = EventRecorder(kube)
        self._metrics = metrics
        self._cluster = cluster

    def evict(self, pods: Sequence[Pod], *, source: Source, message: Callable[[Pod], str],
              schedule: EvictionSchedule,
              grace_seconds: Callable[[Pod], int | None] = lambda _pod: None,
              delete_at: Callable[[Pod], float | None] = lambda _pod: None) -> list[EvictionResult]:
        """Evict the pods; results in their order. Each accepted eviction gets an `Evicted` Event
        with `message(pod)` and counts in `PodsEvicted{ClusterName, Source}`; each pod deleted at
        its `delete_at` gets a Warning Event `DeletedAtDeadline` and counts in
        `PodsDeletedAtDeadline{ClusterName}`."""
        results = evict_all(self.kube, pods, grace_seconds, schedule, delete_at)
        by_outcome: dict[EvictionOutcome, list[Pod]] = {}
        for pod, result in zip(pods, results, strict=True):
            by_outcome.setdefault(result.outcome, []).append(pod)
        accepted = by_outcome.get(EvictionOutcome.ACCEPTED, [])
        self._metrics.add("PodsEvicted", len(accepted), ClusterName=self._cluster, Source=source)
        self.events.record([(pod, "Evicted", message(pod)) for pod in accepted])
        deleted = by_outcome.get(EvictionOutcome.DELETED, [])
        if deleted:
            self._metrics.add("PodsDeletedAtDeadline", len(deleted), ClusterName=self._cluster)
            self.events.record([(pod, "DeletedAtDeadline",
                                 f"{message(pod)}: deleted, its budgets still refusing when only its grace "
                                 "period was left before the instance's end") for pod in deleted],
                               event_type="Warning")
        return results
