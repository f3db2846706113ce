"""The closed loop: what was moved, where each replacement landed, and back-off after failures.

After a cycle's evictions the shell keeps a MoveRecord per evicted pod (in a History it persists).
Next cycle, `review` finds each replacement, a newer pod of the same controller, and judges it:
scheduled on a node scoring at least the expected score and Ready is a success; scheduled on a worse
node, or still not there after the timeout, is a failure; otherwise the move is still in flight and
its workload is not touched again. Failures back off exponentially per workload and reason.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from ..config import Settings
from ..label_selector import SelectorError
from ..objects import Node, Pod
from ..scheduling.node_affinity import preferred_score
from ..scheduling.resources import is_terminal
from ..snapshot import ClusterSnapshot
from .scale_in import EmptiedNode
from .timestamps import parse_timestamp, require_time_zone
from .workloads import WorkloadRef, workload_of

# Why the planner moves a pod; back-off is kept per workload and reason.
MOVE_REASON = "preferred-node-affinity"


@dataclass(frozen=True, slots=True)
class Eviction:
    """A move the planner chose: evict this pod so its replacement lands on `to_node`."""

    namespace: str
    name: str
    uid: str
    workload: WorkloadRef
    from_node: str
    to_node: str
    from_score: int
    to_score: int
    reason: str = MOVE_REASON

    @property
    def score_gain(self) -> int:
        return self.to_score - self.from_score


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    IN_FLIGHT = "in-flight"


@dataclass(frozen=True, slots=True)
class MoveRecord:
    namespace: str
    pod: str
    pod_uid: str
    workload: WorkloadRef
    from_node: str
    to_node: str
    from_score: int
    expected_score: int
    moved_at: datetime
    reason: str = MOVE_REASON
    attempt: int = 1
    # Creation times have whole seconds: pods of the workload created in the second of the move but
    # before it (found in the snapshot the move was planned on) are not its replacement.
    earlier_uids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Backoff:
    workload: WorkloadRef
    reason: str
    failures: int
    until: datetime


@dataclass(frozen=True, slots=True)
class History:
    """What the planner needs to know about earlier cycles; plain data, for the shell to persist."""

    in_flight: tuple[MoveRecord, ...] = ()
    backoffs: tuple[Backoff, ...] = ()
    emptied: tuple[EmptiedNode, ...] = ()  # on-demand nodes the rebalancer emptied, waiting to settle

    def backing_off(self, now: datetime) -> dict[tuple[WorkloadRef, str], Backoff]:
        """The back-offs still running at `now`, by (workload, reason)."""
        return {(b.workload, b.reason): b for b in self.backoffs if b.until > now}

    def with_moves(self, records: Iterable[MoveRecord], emptied: Iterable[EmptiedNode] = ()) -> History:
        return replace(self, in_flight=self.in_flight + tuple(records), emptied=self.emptied + tuple(emptied))


@dataclass(frozen=True, slots=True)
class Judgement:
    record: MoveRecord
    outcome: Outcome
    detail: str
    replacement: str = ""
    node: str = ""
    score: int | None = None


@dataclass(frozen=True, slots=True)
class Review:
    judgements: tuple[Judgement, ...]
    history: History  # what to keep for the next cycle

    def count(self, outcome: Outcome) -> int:
        return sum(1 for j in self.judgements if j.outcome is outcome)

    @property
    def metrics(self) -> dict[str, int]:
        return {"MovesSucceeded": self.count(Outcome.SUCCEEDED), "MovesFailed": self.count(Outcome.FAILED),
                "MovesInFlight": self.count(Outcome.IN_FLIGHT)}


def move_records(evictions: Iterable[Eviction], history: History, now: datetime,
                 snapshot: ClusterSnapshot) -> tuple[MoveRecord, ...]:
    """Records for the evictions the API accepted from the snapshot they were
    planned on; a workload's attempt number counts its failures for the same reason so far."""
    evictions = tuple(evictions)
    failures = {key: b.failures for key, b in _by_key(history.backoffs).items()}
    since = now.replace(microsecond=0)
    moved = {e.workload for e in evictions}
    earlier: dict[WorkloadRef, list[str]] = {}
    for pod in snapshot.pods:
        workload = workload_of(pod)
        if workload in moved:
            created = parse_timestamp(pod.metadata.creation_timestamp)
            if created is not None and created >= since:
                earlier.setdefault(workload, []).append(pod.metadata.uid)
    return tuple(
        MoveRecord(namespace=e.namespace, pod=e.name, pod_uid=e.uid, workload=e.workload,
                   from_node=e.from_node, to_node=e.to_node, from_score=e.from_score,
                   expected_score=e.to_score, moved_at=now, reason=e.reason,
                   attempt=failures.get((e.workload, e.reason), 0) + 1,
                   earlier_uids=tuple(sorted(earlier.get(e.workload, ()))))
        for e in evictions)


def review(history: History, snapshot: ClusterSnapshot, now: datetime,
           settings: Settings | None = None) -> Review:
    require_time_zone(now)
    settings = settings or Settings()
    watched = {r.workload for r in history.in_flight}
    siblings: dict[WorkloadRef, list[Pod]] = {}
    for pod in snapshot.pods:
        workload = workload_of(pod)
        if workload in watched:
            siblings.setdefault(workload, []).append(pod)
    nodes = {n.metadata.name: n for n in snapshot.nodes}
    claimed: set[str] = set()
    judgements = []
    for record in sorted(history.in_flight, key=lambda r: (r.moved_at, r.namespace, r.pod)):
        replacement = _replacement(record, siblings.get(record.workload, ()), claimed)
        if replacement is not None:
            claimed.add(replacement.metadata.uid)
        judgements.append(_judge(record, replacement, nodes, now, settings))
    return Review(tuple(judgements), History(
        in_flight=tuple(j.record for j in judgements if j.outcome is Outcome.IN_FLIGHT),
        backoffs=_next_backoffs(history.backoffs, judgements, now, settings), emptied=history.emptied))


def _by_key(backoffs: Iterable[Backoff]) -> dict[tuple[WorkloadRef, str], Backoff]:
    return {(b.workload, b.reason): b for b in backoffs}


def _replacement(record: MoveRecord, siblings: Sequence[Pod], claimed: set[str]) -> Pod | None:
    """The oldest pod of the same controller created since the move (timestamps have whole seconds)
    that is not the evicted pod, not one there before the move, nor another move's replacement. A
    StatefulSet's replacement keeps the evicted pod's name."""
    since = record.moved_at.replace(microsecond=0)
    found = []
    for pod in siblings:
        meta = pod.metadata
        created = parse_timestamp(meta.creation_timestamp)
        if (meta.uid == record.pod_uid or meta.uid in claimed or meta.uid in record.earlier_uids
                or created is None or created < since or is_terminal(pod)
                or meta.deletion_timestamp is not None):
            continue
        if record.workload.kind == "StatefulSet" and meta.name != record.pod:
            continue
        found.append((created, meta.name, pod))
    return min(found, key=lambda f: f[:2])[2] if found else None


def _judge(record: MoveRecord, replacement: Pod | None, nodes: Mapping[str, Node], now: datetime,
           settings: Settings) -> Judgement:
    timed_out = now - record.moved_at > timedelta(seconds=settings.replacement_timeout_seconds)

    def waiting(detail: str, name: str = "", node: str = "", score: int | None = None) -> Judgement:
        if timed_out:
            after = f"{detail} after {settings.replacement_timeout_seconds}s"
            return Judgement(record, Outcome.FAILED, after, name, node, score)
        return Judgement(record, Outcome.IN_FLIGHT, detail, name, node, score)

    if replacement is None:
        return waiting("no replacement yet")
    name = replacement.metadata.name
    node = nodes.get(replacement.spec.node_name)
    if node is None:
        return waiting("replacement not scheduled", name)
    node_name = node.metadata.name
    try:
        score = preferred_score(replacement, node)
    except SelectorError as exc:
        return Judgement(record, Outcome.FAILED, f"replacement affinity invalid: {exc}", name, node_name)
    if score < record.expected_score:
        return Judgement(record, Outcome.FAILED,
                         f"landed on a node scoring {score}, expected {record.expected_score}",
                         name, node_name, score)
    if replacement.status.phase != "Running" or not replacement.ready:
        return waiting("replacement not ready", name, node_name, score)
    return Judgement(record, Outcome.SUCCEEDED, "landed where expected", name, node_name, score)


def _next_backoffs(backoffs: Iterable[Backoff], judgements: Iterable[Judgement], now: datetime,
                   settings: Settings) -> tuple[Backoff, ...]:
    """Each failure doubles its workload's back-off for that reason (base, twice that, ... up to the
    cap); a success clears it; a back-off over for longer than the cap is forgotten."""
    by_key = _by_key(backoffs)
    for judgement in judgements:
        key = (judgement.record.workload, judgement.record.reason)
        if judgement.outcome is Outcome.SUCCEEDED:
            by_key.pop(key, None)
        elif judgement.outcome is Outcome.FAILED:
            failures = by_key[key].failures + 1 if key in by_key else 1
            seconds = min(settings.backoff_cap_seconds, settings.backoff_base_seconds * 2 ** (failures - 1))
            by_key[key] = Backoff(key[0], key[1], failures, now + timedelta(seconds=seconds))
    cap = timedelta(seconds=settings.backoff_cap_seconds)
    return tuple(by_key[key] for key in sorted(by_key) if by_key[key].until + cap > now)
