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


# Statuses worth another attempt: a PDB says "not now", or the apiserver is briefly unwell.
_RETRY_BLOCKED = {429}
_RETRY_TRANSIENT = {0, 500, 502, 503, 504}


def evict_one(kube: _Evicts, pod: Pod, grace_seconds: int | None,
              schedule: EvictionSchedule) -> EvictionResult:
    namespace, name = pod.metadata.namespace, pod.metadata.name
    attempt = 0
    while True:
        attempt += 1
        retry_after = None
        try:
            response = kube.evict(namespace, name, grace_seconds)
            status, message, retry_after = response.status, response.message, response.retry_after
        except KubeApiError as exc:
            status, message = exc.status, exc.message
        if status in (200, 201):
            return EvictionResult(namespace, name, EvictionOutcome.ACCEPTED, attempt)
        if status == 404:
            return EvictionResult(namespace, name, EvictionOutcome.GONE, attempt)
        if status not in _RETRY_BLOCKED | _RETRY_TRANSIENT:
            return EvictionResult(namespace, name, EvictionOutcome.FAILED, attempt, message)
        delay = max(schedule.jitter(schedule.backoff(attempt)), retry_after or 0.0)
        if schedule.clock() + delay >= schedule.until:
            outcome = EvictionOutcome.BLOCKED if status in _RETRY_BLOCKED else EvictionOutcome.FAILED
            return EvictionResult(namespace, name, outcome, attempt, message)
        schedule.sleep(delay)


def evict_all(kube: _Evicts, pods: Iterable[Pod], grace_seconds: Callable[[Pod], int | None],
              schedule: EvictionSchedule) -> list[EvictionResult]:
    """Evict every pod at once (bounded by MAX_WORKERS threads); results in the pods' order."""
    pods = list(pods)
    if not pods:
        return []
    with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(pods))) as pool:
        return list(pool.map(lambda p: evict_one(kube, p, grace_seconds(p), schedule), pods))


class EventRecorder:
    """Kubernetes Events for people watching the cluster; one that cannot be written changes nothing."""

    def __init__(self, kube: KubeClient) -> None:
        self._kube = kube

    def record(self, items: Sequence[tuple[Node | Pod, str, str]]) -> None:
        """(object, reason, message) for each Event, written concurrently."""
        if items:
            with ThreadPoolExecutor(max_workers=min(EVENT_WORKERS, len(items))) as pool:
                list(pool.map(self._record, items))

    def _record(self, item: tuple[Node | Pod, str, str]) -> None:
        obj, reason, message = item
        meta = obj.metadata
        kind = "Node" if isinstance(obj, Node) else "Pod"
        try:
            self._kube.create_event(namespace=meta.namespace or "default", kind=kind, name=meta.name,
                                    uid=meta.uid, reason=reason, message=message)
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
              grace_seconds: Callable[[Pod], int | None] = lambda _pod: None) -> list[EvictionResult]:
        """Evict the pods; results in their order. Each accepted eviction gets an `Evicted` Event
        with `message(pod)` and counts in `PodsEvicted{ClusterName, Source}`."""
        results = evict_all(self.kube, pods, grace_seconds, schedule)
        accepted = [pod for pod, result in zip(pods, results, strict=True)
                    if result.outcome is EvictionOutcome.ACCEPTED]
        self._metrics.add("PodsEvicted", len(accepted), ClusterName=self._cluster, Source=source)
        self.events.record([(pod, "Evicted", message(pod)) for pod in accepted])
        return results
