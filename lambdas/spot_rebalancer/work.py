"""The events function's work: queue messages in, each event to its service, unfinished work
carried forward through the queue.

Each message is one EventBridge event as the rule delivered it, or a continuation this function
queued itself: {"continuation": {"event": <the event>, "instanceId": ..., "startedAt": ...,
"attempt": n, "evicted": ...}}, where startedAt (when the drain began) is left out while the drain has
not begun, and evicted (pods its earlier invocations evicted, for its notice) while it is 0.
A Capacity Block's warning names no instance: it is fanned out into one such message per instance
of the block, each also carrying "blockEndsAt" (the block's end, as its reservation gives it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from .capacity_blocks import CapacityBlocks
from .config import Settings
from .drain import BatchMember, DrainBatch, DrainService
from .events import (
    CapacityBlockExpiry,
    CapacityBlockWarning,
    Event,
    EventError,
    EventKind,
    HealthNotice,
    InstanceEvent,
    LifecycleHook,
    block_instance_event,
    parse_event,
)
from .notices import drain_notice
from .notifier import Notifier
from .results import HandleResult, StepAction, StepOutcome
from .tagging import LaunchCompleter, LifecycleTagger
from .telemetry import MetricsRecorder

SQS_MAX_DELAY_SECONDS = 900
SQS_MAX_BATCH_ENTRIES = 10
# A failed record is delivered again this long after its first receive, twice as long after each
# receive since, at most RETRY_LONGEST_SECONDS: the queue's five receives fit in under a minute, inside
# a spot warning's two minutes, where the queue's visibility timeout (660 s) would bring the first
# retry after the instance is gone. The dead-letter queue still takes it after the fifth.
RETRY_FIRST_SECONDS = 2
RETRY_LONGEST_SECONDS = 16
TAGGING_KINDS = (EventKind.INSTANCE_RUNNING, EventKind.LAUNCH_SUCCESSFUL)
# The work that taints and cordons nothing (tagging, launch checks, undoing a drain).
MARKS_NO_NODE = frozenset({*TAGGING_KINDS, EventKind.ASG_LAUNCH, EventKind.SCHEDULED_CHANGE_CLOSED,
                           EventKind.CAPACITY_BLOCK_WARNING})


log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Work:
    """One domain event to act on, and where a drain that outlived an invocation stands."""

    raw: dict
    event: Event
    attempt: int = 0
    started_at: datetime | None = None
    evicted: int = 0  # pods the drain evicted in its earlier invocations (its notice counts them all)

    @property
    def key(self) -> str:
        """The idempotency key: AWS Health's backup copies share a communication id, and one
        Health event names several instances."""
        notification = self.event.event_id
        if isinstance(self.event, HealthNotice) and self.event.communication_id:
            notification = self.event.communication_id
        instance = self.event.instance_id if isinstance(self.event, InstanceEvent) else ""
        return f"{notification}#{instance}#{self.attempt}"

    def continuation(self) -> dict:
        instance = self.event.instance_id if isinstance(self.event, InstanceEvent) else ""
        carried: dict[str, Any] = {"event": self.raw, "instanceId": instance, "attempt": self.attempt + 1}
        if self.started_at is not None:
            carried["startedAt"] = self.started_at.isoformat()
        if self.evicted:
            carried["evicted"] = self.evicted
        if isinstance(self.event, CapacityBlockExpiry):
            carried["blockEndsAt"] = self.event.block_ends_at.isoformat()
        return {"continuation": carried}


def read_message(body: str) -> list[Work]:
    """The work in one queue message. Raises EventError for events the product cannot use."""
    message = json.loads(body)
    continuation = message.get("continuation") if isinstance(message, dict) else None
    raw = continuation["event"] if continuation else message
    events = parse_event(raw)
    if not continuation:
        return [Work(raw, event) for event in events]
    instance = continuation.get("instanceId")
    # No startedAt: a chain waiting for its drain's start (a lead time), not a drain under way.
    started = datetime.fromisoformat(continuation["startedAt"]) if continuation.get("startedAt") else None
    if continuation.get("blockEndsAt"):
        # One instance of the block the warning names: the fan-out found it in the reservation.
        ends = datetime.fromisoformat(continuation["blockEndsAt"])
        events = tuple(block_instance_event(e, instance, ends) if isinstance(e, CapacityBlockWarning) else e
                       for e in events)
    work = [Work(raw, event, int(continuation["attempt"]), started, int(continuation.get("evicted", 0)))
            for event in events if isinstance(event, InstanceEvent) and event.instance_id == instance]
    if not work:
        # It was queued for one of its event's instances: anything else is a message nobody sent.
        raise EventError(events[0].event_id,
                         f"a continuation for {instance!r}, which its event does not name")
    return work


def merged(first: HandleResult, second: HandleResult) -> HandleResult:
    """Two services' results on one event: both steps, continued when the sooner one asks."""
    wanted = [at for at in (first.continue_at, second.continue_at) if at is not None]
    return HandleResult([*first.steps, *second.steps], min(wanted) if wanted else None)


def act_on_batch(bodies: Sequence[str],
                 act: Callable[[Work, BatchMember], dict]) -> list[list[dict] | Exception]:
    """Each message's outcome, in order: what `act` returned for each of its work items, or
    the first exception reading or acting on it raised.

    The batch's instances are acted on at once, each on its own thread, as one `DrainBatch`: each
    marks its node first, and no drain waits on anything before all of them have, so a drain that a
    budget holds up delays no other node's cordon or evictions. Copies of one work item (one key)
    are acted on once and share its outcome; different work for one instance (a spot warning and
    its lifecycle action) is acted on one item after the other, so no node has two drains at once."""
    outcomes: list[list[dict] | Exception] = []
    items: list[tuple[int, Work]] = []
    for index, body in enumerate(bodies):
        try:
            items.extend((index, work) for work in read_message(body))
            outcomes.append([])
        except Exception as exc:  # the message fails alone, as its record would
            outcomes.append(exc)
    lanes: dict[str, list[Work]] = {}
    acted: set[str] = set()
    for _, work in items:
        if work.key not in acted:
            acted.add(work.key)
            lane = work.event.instance_id if isinstance(work.event, InstanceEvent) else work.key
            lanes.setdefault(lane, []).append(work)
    batch = DrainBatch(len(lanes))

    def act_in_turn(lane: list[Work]) -> list[dict | Exception]:
        # The lane's later items reuse its place in the batch: their node is the one its first
        # item marks, and once marked a place stays marked.
        member = batch.member()
        done: list[dict | Exception] = []
        for work in lane:
            try:
                done.append(act(work, member))
            except Exception as exc:
                done.append(exc)
            finally:
                member.marked()  # a failure or another kind of work marks nothing
        return done

    if lanes:
        by_key: dict[str, dict | Exception] = {}
        with ThreadPoolExecutor(max_workers=len(lanes), thread_name_prefix="work") as pool:
            for works, done in zip(lanes.values(), pool.map(act_in_turn, lanes.values()), strict=True):
                by_key.update((work.key, outcome) for work, outcome in zip(works, done, strict=True))
        for index, work in items:
            current, outcome = outcomes[index], by_key[work.key]
            if isinstance(current, list):
                outcomes[index] = outcome if isinstance(outcome, Exception) else [*current, outcome]
    return outcomes


@dataclass(frozen=True, slots=True)
class Delivery:
    """One SQS record as far as handing it back goes: its queue, receipt and receive count."""

    message_id: str
    queue_arn: str
    receipt_handle: str
    receive_count: int

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> Delivery:
        count = record.get("attributes", {}).get("ApproximateReceiveCount", "1")
        return cls(record["messageId"], record.get("eventSourceARN", ""), record.get("receiptHandle", ""),
                   int(count) if str(count).isdigit() else 1)


def retry_delay_seconds(receive_count: int) -> int:
    """How long a record that failed on its `receive_count`th receive stays hidden."""
    return min(RETRY_LONGEST_SECONDS, RETRY_FIRST_SECONDS * 2 ** min(8, max(0, receive_count - 1)))


def queue_url(queue_arn: str, endpoint_url: str) -> str:
    """The URL of the queue `arn:<partition>:sqs:<region>:<account>:<name>` at the SQS client's
    endpoint (which already accounts for the partition and any custom endpoint)."""
    parts = queue_arn.split(":")
    if len(parts) != 6 or parts[2] != "sqs" or not parts[4] or not parts[5]:
        raise ValueError(f"not an SQS queue ARN: {queue_arn!r}")
    return f"{endpoint_url.rstrip('/')}/{parts[4]}/{parts[5]}"


def retry_soon(sqs: Any, failed: Sequence[Delivery]) -> None:
    """Make failed records visible again after their short back-off (`retry_delay_seconds`)
    instead of the queue's visibility timeout. A record this cannot hand back early is only
    logged: it is still reported failed, and comes back after the visibility timeout."""
    by_queue: dict[str, list[Delivery]] = {}
    for delivery in failed:
        by_queue.setdefault(delivery.queue_arn, []).append(delivery)
    for queue_arn, deliveries in by_queue.items():
        for start in range(0, len(deliveries), SQS_MAX_BATCH_ENTRIES):
            chunk = deliveries[start:start + SQS_MAX_BATCH_ENTRIES]
            try:
                answer = sqs.change_message_visibility_batch(
                    QueueUrl=queue_url(queue_arn, sqs.meta.endpoint_url),
                    Entries=[{"Id": str(n), "ReceiptHandle": d.receipt_handle,
                              "VisibilityTimeout": retry_delay_seconds(d.receive_count)}
                             for n, d in enumerate(chunk)])
            except Exception as exc:  # costs only speed: the records are still reported failed
                log.warning("failed records %s come back after the visibility timeout: %s",
                            [d.message_id for d in chunk], exc)
                continue
            for refused in answer.get("Failed", []):
                log.warning("failed record %s comes back after the visibility timeout: %s %s",
                            chunk[int(refused["Id"])].message_id, refused.get("Code"), refused.get("Message"))


class EventsWorker:
    def __init__(self, settings: Settings, drains: DrainService, blocks: CapacityBlocks,
                 tagger: LifecycleTagger, launches: LaunchCompleter, sqs: Any,
                 metrics: MetricsRecorder, notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.drains = drains
        self.blocks = blocks
        self.tagger = tagger
        self.launches = launches
        self.sqs = sqs
        self.metrics = metrics
        self.notifier = notifier

    def act(self, work: Work, budget_seconds: float | None, batch: BatchMember | None = None) -> dict:
        """Act on one event and queue its continuation if it needs one; returns what was done."""
        event = work.event
        if batch is not None and event.kind in MARKS_NO_NODE:
            batch.marked()  # the batch's drains need not wait for it
        if event.kind is EventKind.INSTANCE_RUNNING:
            # Tagged and labelled, and what a drain did while it was stopped undone once it is back.
            result = merged(self.tagger.handle(event, work.attempt), self.drains.undo(event, work.attempt))
        elif event.kind in TAGGING_KINDS:
            result = self.tagger.handle(event, work.attempt)
        elif event.kind is EventKind.SCHEDULED_CHANGE_CLOSED:
            result = self.drains.undo(event, work.attempt)
        elif event.kind is EventKind.ASG_LAUNCH and isinstance(event, LifecycleHook):
            result = self.launches.handle(event, work.attempt)
        elif isinstance(event, CapacityBlockWarning):
            fan_out = self.blocks.fan_out(event)
            for instance_event in fan_out.events:  # each drained on its own, as its own message
                self._send(Work(work.raw, instance_event, work.attempt).continuation(), 0)
            result = HandleResult(fan_out.steps)
        else:
            result = self.drains.handle(event, budget_seconds=budget_seconds, started_at=work.started_at,
                                        attempt=work.attempt, batch=batch)
            if result.drain is not None and self.notifier is not None:
                report = replace(result.drain, evicted=result.drain.evicted + work.evicted)
                self.notifier.send(drain_notice(self.settings.cluster_name, report))
        self._continue(work, result)
        return {"steps": [step.as_json() for step in result.steps],
                "continued": result.continue_at is not None}

    def _continue(self, work: Work, result: HandleResult) -> None:
        if result.continue_at is None:
            return
        wait = (result.continue_at - datetime.now(UTC)).total_seconds()
        evicted = work.evicted + sum(s.action is StepAction.EVICT and s.outcome is StepOutcome.ACCEPTED
                                     for s in result.steps)
        self._send(Work(work.raw, work.event, work.attempt, result.started_at, evicted).continuation(), wait)

    def _send(self, message: dict, delay_seconds: float) -> None:
        self.sqs.send_message(QueueUrl=self.settings.work_queue_url, MessageBody=json.dumps(message),
                              DelaySeconds=int(min(SQS_MAX_DELAY_SECONDS, max(0, delay_seconds))))
