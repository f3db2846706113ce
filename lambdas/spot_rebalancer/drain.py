"""The drain service: from an interruption signal to a drained node.

`handle` reads as its steps: resolve the event's target (instance, managed cluster, node), plan the
drain (pure, drain_policy), mark the node (taint and cordon), drain it wave by wave through the
eviction layer, and finish (one place: the lifecycle action, the continuation). The CLI's dry run
prints the same plan the function carries out.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial

from .aws import AutoScaling, Ec2, LifecycleAction
from .config import Settings
from .drain_policy import (
    Action,
    DrainPlan,
    DrainReason,
    Finish,
    NodePatch,
    Wave,
    backoff_seconds,
    blocked_pods,
    capped_grace_seconds,
    decide_pods,
    decision_step,
    deletion_time,
    drain_starts_at,
    eviction_message,
    node_revert_patch,
    plan_drain,
    plan_undo,
    scheduled_change_patch,
    scheduled_change_reason,
    scheduled_changes,
    waiting_step,
    wave_issue_times,
)
from .events import (
    WARM_POOL,
    Event,
    EventKind,
    HealthNotice,
    Ignored,
    InstanceEvent,
    LifecycleHook,
    SpotInterruption,
    StateChange,
)
from .evictions import Evictions, EvictionSchedule, Source
from .kube import KubeApiError, KubeClient
from .objects import Node, Pod
from .results import (
    DrainEnd,
    DrainReport,
    EvictionOutcome,
    EvictionResult,
    HandleResult,
    Step,
    StepAction,
    StepOutcome,
)
from .targets import Miss, Target, TargetResolver
from .telemetry import MetricsRecorder

# Patch conflicts (409) mean the node changed since we read it: read again, plan again.
PATCH_ATTEMPTS = 5
# Leave this much of an invocation's time for recording the outcome and re-enqueueing: the drain
# stops waiting on pods this long before the invocation's end.
INVOCATION_RESERVE_SECONDS = 10
# Every Kubernetes call of the invocation, the reads and evictions after the drain stops included,
# is over this long before its end, whatever the API server's speed: the rest is for AWS (the
# lifecycle action, the continuation, the idempotency record).
KUBE_CALLS_RESERVE_SECONDS = 3
# Drains of one batch under way at once: a full SQS batch's, so no record waits for another's drain;
# each evicts with up to evictions.MAX_WORKERS threads.
MAX_CONCURRENT_DRAINS = 10

# A `running` instance's or a closed change's node is looked at this often, this many times, for
# the instance to be back; then the sweep takes over.
UNDO_ATTEMPTS = 10
UNDO_DELAY = timedelta(seconds=60)

# The event kinds whose reason does not depend on the event's details.
_DRAIN_REASONS: dict[EventKind, DrainReason] = {
    EventKind.CAPACITY_RESERVATION_INTERRUPTION: DrainReason.CAPACITY_RESERVATION_INTERRUPTION,
    EventKind.CAPACITY_BLOCK_EXPIRY: DrainReason.CAPACITY_BLOCK_EXPIRY,
    EventKind.REBALANCE_RECOMMENDATION: DrainReason.REBALANCE_RECOMMENDATION,
    EventKind.DEGRADED_HARDWARE: DrainReason.DEGRADED_HARDWARE,
    # An impaired status check is degraded hardware as far as the node's pods are concerned.
    EventKind.INSTANCE_IMPAIRED: DrainReason.DEGRADED_HARDWARE,
}


# The events that undo what drains did: an instance that runs again, a Health change that closed.
UNDOING_KINDS = (EventKind.INSTANCE_RUNNING, EventKind.SCHEDULED_CHANGE_CLOSED)


def closed_change(event: Event) -> str:
    """The ARN of the Health scheduled change the event says is closed, else ""."""
    closed = isinstance(event, HealthNotice) and event.kind is EventKind.SCHEDULED_CHANGE_CLOSED
    return event.event_arn if closed and isinstance(event, HealthNotice) else ""


# State-change kinds to their reasons: (the instance ends, it may start again).
_STATE_REASONS = {
    EventKind.INSTANCE_STOPPING: (DrainReason.INSTANCE_SHUTTING_DOWN, DrainReason.INSTANCE_STOPPING),
    EventKind.INSTANCE_STOPPED: (DrainReason.INSTANCE_TERMINATED, DrainReason.INSTANCE_STOPPED),
}


def drain_reason(event: Event) -> DrainReason | None:
    """Why the event drains its node; None for events that drain nothing."""
    if isinstance(event, SpotInterruption):
        return DrainReason.SPOT_INTERRUPTION if event.action == "terminate" else DrainReason.SPOT_STOP
    if isinstance(event, StateChange) and event.kind in _STATE_REASONS:
        ends, may_start_again = _STATE_REASONS[event.kind]
        return may_start_again if event.state in ("stopping", "stopped") else ends
    if isinstance(event, LifecycleHook) and event.kind is EventKind.ASG_TERMINATION:
        to_warm_pool = event.destination == WARM_POOL
        return DrainReason.ASG_TO_WARM_POOL if to_warm_pool else DrainReason.ASG_TERMINATION
    if isinstance(event, HealthNotice) and event.kind is EventKind.SCHEDULED_MAINTENANCE:
        return scheduled_change_reason(event.event_type_code)
    return _DRAIN_REASONS.get(event.kind)


class Ending(enum.Enum):
    IGNORED = "ignored"  # nothing to drain: not an interruption, or no node of ours
    WAITING = "waiting"  # its drain starts later (a lead time): continued then
    PLANNED = "planned"  # a dry run
    MARKED = "marked"  # tainted (and cordoned) only, as the node's mark says
    DRAINED = "drained"  # every pod to evict (or wait for) has left the node
    DEADLINE_MISSED = "deadline-missed"
    NO_NOTICE = "no-notice"  # a spot hibernation (results.DrainEnd)
    CONTINUED = "continued"  # this invocation's time ran out first: continued in the next


@dataclass
class DrainJob:
    """A drain under way: its node marked, its pods still to go."""

    event: InstanceEvent
    reason: DrainReason
    target: Target
    plan: DrainPlan
    started: datetime
    result: HandleResult


class DrainBatch:
    """The drains of one invocation's batch: no drain waits on anything (a budget, a pod stopping)
    before every work item of the batch has marked its node (or found it has none to mark), and at
    most `drains_at_once` drain at a time. Each work item holds one `member()`."""

    def __init__(self, members: int, drains_at_once: int = MAX_CONCURRENT_DRAINS) -> None:
        self._unmarked = members
        self._lock = threading.Lock()
        self._all_marked = threading.Event()
        self._slots = threading.Semaphore(drains_at_once)
        if members <= 0:
            self._all_marked.set()

    def member(self) -> BatchMember:
        return BatchMember(self)

    def _marked(self) -> None:
        with self._lock:
            self._unmarked -= 1
            if self._unmarked <= 0:
                self._all_marked.set()


class BatchMember:
    """One work item's place in its batch."""

    def __init__(self, batch: DrainBatch) -> None:
        self._batch = batch
        self._marked = False

    def __deepcopy__(self, memo: dict) -> BatchMember:
        # Idempotency copies its payload to hash it; the place in the batch is shared, not data.
        return self

    def marked(self) -> None:
        """This item has marked its node, or will mark none (idempotent)."""
        if not self._marked:
            self._marked = True
            self._batch._marked()

    @contextmanager
    def draining(self, timeout: float | None) -> Iterator[bool]:
        """Once every item is marked, a drain slot; yields False when `timeout` seconds passed
        first (the drain is then continued in a later invocation)."""
        start = time.monotonic()
        if not self._batch._all_marked.wait(timeout):
            yield False
            return
        left = None if timeout is None else max(0.0, timeout - (time.monotonic() - start))
        if not self._batch._slots.acquire(timeout=left):
            yield False
            return
        try:
            yield True
        finally:
            self._batch._slots.release()


class DrainService:
    """Carries out drains for instance events against EC2, Auto Scaling and the cluster."""

    def __init__(self, settings: Settings, ec2: Ec2, autoscaling: AutoScaling,
                 kube_for: Callable[[str], KubeClient], metrics: MetricsRecorder, *,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.targets = TargetResolver(settings, ec2, kube_for)
        self.autoscaling = autoscaling
        self.metrics = metrics
        self.now = now
        self.sleep = sleep

    def handle(self, event: Event, *, budget_seconds: float | None = None,
               started_at: datetime | None = None, attempt: int = 0,
               batch: BatchMember | None = None) -> HandleResult:
        """Act on one event. `budget_seconds` is this invocation's time; `started_at` is when the
        drain began (a continuation of a drain under way passes it; None until a drain starts);
        `attempt` counts the hops of its chain (0: the event as it arrived); `batch` is the event's
        place in its invocation's batch: its drain waits until the batch's nodes are all marked."""
        invocation_end = (None if budget_seconds is None else
                          self.now() + timedelta(seconds=budget_seconds - INVOCATION_RESERVE_SECONDS))
        kube_until = (None if budget_seconds is None else
                      time.monotonic() + budget_seconds - KUBE_CALLS_RESERVE_SECONDS)
        result = HandleResult()
        lifecycle = lifecycle_action(event)
        member = batch or DrainBatch(1).member()
        try:
            begun = self.begin(event, lifecycle, started_at, result, attempt, kube_until)
        finally:
            member.marked()
        if isinstance(begun, Ending):
            self._finish(lifecycle, begun, result)
            return result
        timeout = None if invocation_end is None else (invocation_end - self.now()).total_seconds()
        with member.draining(timeout) as admitted:
            ending = self.run(begun, invocation_end) if admitted else Ending.CONTINUED
        self._finish(lifecycle, ending, result, begun.target.node.metadata.name)
        if ending is not Ending.CONTINUED:
            result.drain = drain_report(begun, DrainEnd(ending.value))
        return result

    # --- resolve, plan, mark --------------------------------------------------------------------

    def begin(self, event: Event, lifecycle: LifecycleAction | None, started_at: datetime | None,
              result: HandleResult, attempt: int = 0, kube_until: float | None = None) -> DrainJob | Ending:
        """Resolve the event's target, plan its drain and mark its node; the drain to run, or how
        the event ended already. With `kube_until` (time.monotonic), the target's client ends every
        call by then."""
        if isinstance(event, Ignored):
            return self._ignore(result, event.why, event.instance_id)
        reason = drain_reason(event)
        if reason is None or not isinstance(event, InstanceEvent):
            return self._ignore(result, f"{event.kind} is not an interruption")
        # Every hop of a chain checks the instance first: one that is gone ends the chain. A
        # backstop is for an instance that is stopped or gone: its node is what counts.
        target = self.targets.resolve(event.instance_id, live=not reason.spec.backstop, since=event.time,
                                      until=kube_until)
        if isinstance(target, Miss):
            return self._ignore(result, target.value, event.instance_id)
        if reason.spec.backstop and not self._left_to_drain(target, reason):
            return self._ignore(result, f"{reason}: nothing left to drain", event.instance_id)
        change = event if isinstance(event, HealthNotice) else None
        if (change is not None and attempt > 0 and started_at is None
                and change.event_arn not in scheduled_changes(target.node)):
            # A hop of the chain that waited for the drain: the change was closed meanwhile.
            return self._ignore(result, f"{change.event_type_code} is no longer pending on its node",
                                event.instance_id)
        waiting = waiting_step(reason.spec, event.deadline, self.settings, self.now(),
                               target.node.metadata.name)
        if waiting is not None:
            drain_at = drain_starts_at(reason.spec, event.deadline, self.settings)
            result.continue_at = drain_at
            result.steps.append(waiting)
            if change is not None and not self.settings.dry_run:
                self._patch(target.kube, target.node,
                            lambda node: scheduled_change_patch(node, change.event_arn, drain_at))
            return Ending.WAITING
        # A drain's clock starts when the drain starts, not when its event first arrived.
        started = result.started_at = started_at or self.now()
        if self.settings.dry_run:
            node = target.node
            planned = plan_drain(reason, node, target.kube.list_pods(node.metadata.name), self.settings,
                                 self.now(), event_deadline=event.deadline, started=started)
            result.steps.extend(planned.steps(self.now()))
            return Ending.PLANNED
        if lifecycle is not None:
            # Every delivery (the first, a retry, a continuation) restarts the hook's heartbeat
            # timeout, the drain timeout plus a margin, before the drain: so no drain planned from
            # here (its deadline at most the drain timeout away) outlives the hook, even on a retry
            # that came when the hook had little time left. If it has already ended the instance
            # is on its way out: draining on still helps its pods.
            self.autoscaling.heartbeat(lifecycle)
        plan = self._mark(target, reason, event, started, result)
        if plan is None or not plan.evicts:
            return Ending.MARKED
        return DrainJob(event, reason, target, plan, started, result)

    def _left_to_drain(self, target: Target, reason: DrainReason) -> bool:
        """Whether the node still has pods the drain would evict or wait for."""
        pods = target.kube.list_pods(target.node.metadata.name)
        return any(d.action is not Action.SKIP for d in decide_pods(pods, self.settings, reason, self.now()))

    def _mark(self, target: Target, reason: DrainReason, event: InstanceEvent, started: datetime,
              result: HandleResult) -> DrainPlan | None:
        """Taint and cordon the node (re-planning on conflicts); the plan it applied, or None when
        the node's mark is none."""
        kube, node = target.kube, target.node
        for _ in range(PATCH_ATTEMPTS):
            now = self.now()
            plan = plan_drain(reason, node, kube.list_pods(node.metadata.name), self.settings, now,
                              event_deadline=event.deadline, started=started)
            if plan.patch is None:
                result.steps.append(Step(StepAction.IGNORE, node.metadata.name,
                                         reason=f"{reason}: node group policy is none"))
                return None
            try:
                kube.patch_node(node.metadata.name, plan.patch.body)
            except KubeApiError as exc:
                if exc.status != 409:
                    raise
                node = kube.get_node(node.metadata.name) or node
                continue
            self.metrics.add("EventToCordonLatency", (self.now() - event.time).total_seconds() * 1000,
                             "Milliseconds", ClusterName=target.cluster)
            marked = (StepAction.TAINT, StepAction.CORDON)
            result.steps.extend(s for s in plan.steps(now) if s.action in marked)
            Evictions(kube, self.metrics, target.cluster).events.record(
                [(node, "Cordoned", f"Cordoned by spot-rebalancer: {reason}")])
            return plan
        raise KubeApiError("PATCH", kube.host, f"/api/v1/nodes/{node.metadata.name}", 409,
                           f"node kept changing over {PATCH_ATTEMPTS} attempts")

    # --- drain ------------------------------------------------------------------------------------

    def run(self, job: DrainJob, invocation_end: datetime | None) -> Ending:
        """Evict wave by wave until every pod has left, the deadline passes or the invocation's time
        runs out."""
        if self._evict(job, invocation_end):
            self.metrics.add("DrainDuration", (self.now() - job.started).total_seconds(), "Seconds",
                             ClusterName=job.target.cluster)
            return Ending.DRAINED
        if invocation_end is None or job.plan.deadline <= invocation_end:
            # The drain was bounded by its deadline, not by this invocation. Its back-offs and
            # polls stop short of the deadline rather than overrun it, so the clock may read a
            # moment before it: continuing would only reach the same end one invocation later.
            if gives_no_notice(job.event):
                return Ending.NO_NOTICE
            self.metrics.add("DeadlineMissed", 1, ClusterName=job.target.cluster)
            return Ending.DEADLINE_MISSED
        return Ending.CONTINUED

    def _evict(self, job: DrainJob, invocation_end: datetime | None) -> bool:
        """True when every pod to evict (or wait for) has left the node.

        Each wave is issued once the pods before it have left, or at its latest start
        (wave_issue_times) if they have not: the earlier waves' refused evictions go on meanwhile."""
        kube, plan, result = job.target.kube, job.plan, job.result
        node_name = plan.node.metadata.name
        clock = time.monotonic

        def on_clock(at: datetime) -> float:
            return clock() + (at - self.now()).total_seconds()

        stop = plan.deadline if invocation_end is None else min(plan.deadline, invocation_end)
        # At the deadline itself (a backstop's is now) every wave still gets its one attempt.
        continued_later = invocation_end is not None and invocation_end < plan.deadline
        stop_at = clock() + max(0.0, (stop - self.now()).total_seconds())
        schedule = EvictionSchedule(until=stop_at, backoff=backoff_seconds, clock=clock, sleep=self.sleep)
        evictions = Evictions(kube, self.metrics, job.target.cluster)
        result.steps.extend(decision_step(node_name, d) for d in plan.decisions
                            if d.action is not Action.EVICT)
        def evict(wave: Wave) -> list[EvictionResult]:
            return evictions.evict(
                wave.pods, source=Source.DRAIN, schedule=schedule,
                message=partial(eviction_message, reason=plan.reason),
                grace_seconds=lambda pod: capped_grace_seconds(pod, plan.deadline, self.now()),
                delete_at=lambda pod: (on_clock(deletion_time(pod, plan.deadline))
                                       if plan.force_at_deadline else None))

        # Terminating pods (a continuation finds its own evictions under way) go before any wave.
        to_leave_first = [d.pod for d in plan.decisions if d.action is Action.WAIT]
        issued: list[Future[list[EvictionResult]]] = []
        with ThreadPoolExecutor(max_workers=max(1, len(plan.waves)), thread_name_prefix="wave") as pool:
            for wave, latest in zip(plan.waves, wave_issue_times(plan.waves, plan.deadline), strict=True):
                if to_leave_first:
                    to_leave_first = wait_until_gone(kube, node_name, to_leave_first,
                                                     min(stop_at, on_clock(latest)), clock, self.sleep)
                if clock() >= stop_at and continued_later:
                    break  # the drain's next invocation issues it, still after the waves before it
                issued.append(pool.submit(evict, wave))
                to_leave_first = [*to_leave_first, *wave.pods]
            all_results = [r for future in issued for r in future.result()]
        result.steps.extend(Step(StepAction.EVICT, node_name, r.namespace, r.name, plan.reason.value,
                                 r.outcome.step_outcome) for r in all_results)
        wait_until_gone(kube, node_name, to_leave_first, stop_at, clock, self.sleep)
        blocked = [r for r in all_results if r.outcome is EvictionOutcome.BLOCKED]
        if blocked:
            self.metrics.add("EvictionsBlockedByPdb", len(blocked), ClusterName=job.target.cluster)
            for report in blocked_pods(blocked, [d.pod for d in plan.decisions], kube.list_pdbs()):
                result.steps.append(Step(StepAction.BLOCKED, node_name, report.namespace, report.name,
                                         report.describe()))
        to_leave = {d.pod.metadata.uid for d in plan.decisions if d.action in (Action.EVICT, Action.WAIT)}
        return not pods_remaining(kube, node_name, to_leave)

    # --- undo ---------------------------------------------------------------------------------------

    def undo(self, event: Event, attempt: int = 0) -> HandleResult:
        """Call off the drain a closed Health change still had pending, and undo what a drain did to
        the instance's node once its revert rule says so (the instance runs again, the change is
        closed). While the node is not back yet, looked at again UNDO_ATTEMPTS times, then left to
        the sweep."""
        result = HandleResult()
        if not isinstance(event, InstanceEvent):
            self._ignore(result, f"{event.kind} carries no instance")
            return result
        target = self.targets.resolve(event.instance_id, live=True)
        if isinstance(target, Miss):
            self._ignore(result, target.value, event.instance_id)
            return result
        kube, node, now = target.kube, target.node, self.now()
        closed = closed_change(event)
        plan = plan_undo(node, now, self.settings, closed_change=closed)
        if self.settings.dry_run:
            result.steps.extend(plan.steps(StepOutcome.DRY_RUN))
            return result
        cancelled = plan.cancel and self._patch(kube, node, lambda n: scheduled_change_patch(n, closed, None))
        if cancelled:
            node = kube.get_node(node.metadata.name) or node
        reverted = plan.revert and self._patch(kube, node, lambda n: node_revert_patch(
            n, now, self.settings, change_closed=bool(closed)))
        done = replace(plan, cancel=cancelled or None, revert=reverted or None,
                       waits=plan.waits and attempt + 1 < UNDO_ATTEMPTS)
        if done.waits:
            result.continue_at = now + UNDO_DELAY
        result.steps.extend(done.steps(StepOutcome.REVERTED))
        return result

    def _patch(self, kube: KubeClient, node: Node,
               make: Callable[[Node], NodePatch | None]) -> NodePatch | None:
        """Apply `make(node)` to the node, made again from the node read afresh when it changed in
        between (409); the patch applied, or None when there was nothing to do."""
        for _ in range(PATCH_ATTEMPTS):
            patch = make(node)
            if patch is None:
                return None
            try:
                kube.patch_node(node.metadata.name, patch.body)
            except KubeApiError as exc:
                if exc.status != 409:
                    raise
                node = kube.get_node(node.metadata.name) or node
                continue
            return patch
        raise KubeApiError("PATCH", kube.host, f"/api/v1/nodes/{node.metadata.name}", 409,
                           f"node kept changing over {PATCH_ATTEMPTS} attempts")

    # --- finish -----------------------------------------------------------------------------------

    def _ignore(self, result: HandleResult, why: str, instance_id: str = "") -> Ending:
        self.metrics.add("EventsIgnored", 1, ClusterName=self.settings.cluster_name)
        result.steps.append(Step(StepAction.IGNORE, reason=f"{instance_id}: {why}" if instance_id else why))
        return Ending.IGNORED

    def _finish(self, lifecycle: LifecycleAction | None, ending: Ending, result: HandleResult,
                node_name: str = "") -> None:
        """The one place a drain ends: continued in the next invocation, or its lifecycle action
        completed (CONTINUE once there is nothing more to do, the configured result when the
        deadline passed)."""
        if ending is Ending.CONTINUED:
            result.continue_at = self.now()
            result.steps.append(Step(StepAction.CONTINUE, node_name, reason="drain not finished"))
            return
        if lifecycle is None or ending in (Ending.WAITING, Ending.PLANNED):
            return
        lifecycle_result = (self.settings.lifecycle_default_result if ending is Ending.DEADLINE_MISSED
                            else "CONTINUE")
        outcome = self.autoscaling.complete(lifecycle, lifecycle_result)
        result.steps.append(Step(StepAction.COMPLETE_LIFECYCLE, reason=lifecycle.hook, outcome=outcome))


def drain_report(job: DrainJob, end: DrainEnd) -> DrainReport:
    """What the drain's invocation did, counted from its eviction steps."""
    evictions = [s.outcome for s in job.result.steps if s.action is StepAction.EVICT]
    return DrainReport(job.target.node.metadata.name, job.event.instance_id, job.reason.value,
                       job.event.kind.value, end, evicted=evictions.count(StepOutcome.ACCEPTED),
                       blocked=evictions.count(StepOutcome.BLOCKED),
                       deleted=evictions.count(StepOutcome.DELETED))


def gives_no_notice(event: Event) -> bool:
    """Whether the event's instance stops as the event arrives, with no time to drain: a spot
    hibernation (EC2 gives it no two-minute warning)."""
    return isinstance(event, SpotInterruption) and event.action == "hibernate"


def lifecycle_action(event: Event) -> LifecycleAction | None:
    """The Auto Scaling lifecycle action the event's drain finishes, if its spec says so."""
    reason = drain_reason(event)
    if (isinstance(event, LifecycleHook) and reason is not None
            and reason.spec.finish is Finish.LIFECYCLE_ACTION):
        return LifecycleAction(event.group, event.hook, event.token, event.instance_id)
    return None


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
