"""The drain service: from an interruption signal to a drained node.

`handle` reads as its steps: resolve the event's target (instance, managed cluster, node), plan the
drain (pure, drain_policy), mark the node (taint and cordon), drain it wave by wave through the
eviction layer, and finish (one place: the lifecycle action, the continuation). The CLI's dry run
prints the same plan the function carries out.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from .aws import AutoScaling, Ec2, LifecycleAction
from .config import Settings
from .drain_policy import (
    Action,
    DrainPlan,
    DrainReason,
    Finish,
    backoff_seconds,
    blocked_pods,
    capped_grace_seconds,
    decision_step,
    drain_starts_at,
    plan_drain,
    waiting_step,
)
from .events import Event, EventKind, Ignored, InstanceEvent, LifecycleHook
from .evictions import Evictions, EvictionSchedule, Source
from .kube import KubeApiError, KubeClient
from .objects import Pod
from .results import EvictionOutcome, EvictionResult, HandleResult, Step, StepAction
from .targets import Miss, Target, TargetResolver
from .telemetry import MetricsRecorder

# Patch conflicts (409) mean the node changed since we read it: read again, plan again.
PATCH_ATTEMPTS = 5
# Leave this much of an invocation's time for recording the outcome and re-enqueueing.
INVOCATION_RESERVE_SECONDS = 10

# The event kinds that drain a node, and why.
DRAIN_REASONS: dict[EventKind, DrainReason] = {
    EventKind.SPOT_INTERRUPTION: DrainReason.SPOT_INTERRUPTION,
    EventKind.REBALANCE_RECOMMENDATION: DrainReason.REBALANCE_RECOMMENDATION,
    EventKind.ASG_TERMINATION: DrainReason.ASG_TERMINATION,
    EventKind.INSTANCE_STOPPING: DrainReason.INSTANCE_STOPPING,
    EventKind.SCHEDULED_MAINTENANCE: DrainReason.SCHEDULED_MAINTENANCE,
    EventKind.DEGRADED_HARDWARE: DrainReason.DEGRADED_HARDWARE,
}


class Ending(enum.Enum):
    IGNORED = "ignored"  # nothing to drain: not an interruption, or no node of ours
    WAITING = "waiting"  # its drain starts later (a lead time): continued then
    PLANNED = "planned"  # a dry run
    MARKED = "marked"  # tainted (and cordoned) only, as the node's mark says
    DRAINED = "drained"  # every pod to evict (or wait for) has left the node
    DEADLINE_MISSED = "deadline-missed"
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
               started_at: datetime | None = None) -> HandleResult:
        """Act on one event. `budget_seconds` is this invocation's time; `started_at` is when the
        drain began (a continuation of a drain under way passes it; None until a drain starts)."""
        invocation_end = (None if budget_seconds is None else
                          self.now() + timedelta(seconds=budget_seconds - INVOCATION_RESERVE_SECONDS))
        result = HandleResult()
        lifecycle = lifecycle_action(event)
        begun = self.begin(event, lifecycle, started_at, result)
        if isinstance(begun, Ending):
            self._finish(lifecycle, begun, result)
        else:
            self._finish(lifecycle, self.run(begun, invocation_end), result, begun.target.node.metadata.name)
        return result

    # --- resolve, plan, mark --------------------------------------------------------------------

    def begin(self, event: Event, lifecycle: LifecycleAction | None, started_at: datetime | None,
              result: HandleResult) -> DrainJob | Ending:
        """Resolve the event's target, plan its drain and mark its node; the drain to run, or how
        the event ended already."""
        if isinstance(event, Ignored):
            return self._ignore(result, event.why, event.instance_id)
        reason = DRAIN_REASONS.get(event.kind)
        if reason is None or not isinstance(event, InstanceEvent):
            return self._ignore(result, f"{event.kind} is not an interruption")
        # Every hop of a chain checks the instance first: one that is gone ends the chain.
        target = self.targets.resolve(event.instance_id, live=True, since=event.time)
        if isinstance(target, Miss):
            return self._ignore(result, target.value, event.instance_id)
        waiting = waiting_step(reason.spec, event.deadline, self.settings, self.now(),
                               target.node.metadata.name)
        if waiting is not None:
            result.continue_at = drain_starts_at(reason.spec, event.deadline, self.settings)
            result.steps.append(waiting)
            return Ending.WAITING
        # A drain's clock starts when the drain starts, not when its event first arrived.
        started = result.started_at = started_at or self.now()
        if self.settings.dry_run:
            node = target.node
            planned = plan_drain(reason, node, target.kube.list_pods(node.metadata.name), self.settings,
                                 self.now(), event_deadline=event.deadline, started=started)
            result.steps.extend(planned.steps(self.now()))
            return Ending.PLANNED
        if lifecycle is not None and started_at is not None:
            # A continuation: keep the hook from timing out while the drain goes on. If it has
            # already ended the instance is on its way out: draining on still helps its pods.
            self.autoscaling.heartbeat(lifecycle)
        plan = self._mark(target, reason, event, started, result)
        if plan is None or not plan.evicts:
            return Ending.MARKED
        return DrainJob(event, reason, target, plan, started, result)

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
        raise KubeApiError("PATCH", f"/api/v1/nodes/{node.metadata.name}", 409,
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
            self.metrics.add("DeadlineMissed", 1, ClusterName=job.target.cluster)
            return Ending.DEADLINE_MISSED
        return Ending.CONTINUED

    def _evict(self, job: DrainJob, invocation_end: datetime | None) -> bool:
        """True when every pod to evict (or wait for) has left the node."""
        kube, plan, result = job.target.kube, job.plan, job.result
        node_name = plan.node.metadata.name
        stop = job.plan.deadline if invocation_end is None else min(job.plan.deadline, invocation_end)
        stop_at = time.monotonic() + max(0.0, (stop - self.now()).total_seconds())
        schedule = EvictionSchedule(until=stop_at, backoff=backoff_seconds, clock=time.monotonic,
                                    sleep=self.sleep)
        evictions = Evictions(kube, self.metrics, job.target.cluster)
        result.steps.extend(decision_step(node_name, d) for d in plan.decisions
                            if d.action is not Action.EVICT)
        waiting = [d.pod for d in plan.decisions if d.action is Action.WAIT]
        all_results: list[EvictionResult] = []
        message = f"Evicted by spot-rebalancer: {plan.reason}"
        for wave in plan.waves:
            results = evictions.evict(wave.pods, source=Source.DRAIN, schedule=schedule,
                                      grace_seconds=partial(capped_grace_seconds, deadline=job.plan.deadline,
                                                            now=self.now()),
                                      message=lambda _pod: message)
            all_results.extend(results)
            result.steps.extend(Step(StepAction.EVICT, node_name, r.namespace, r.name, plan.reason.value,
                                     r.outcome.step_outcome) for r in results)
            if wait_until_gone(kube, node_name, [*waiting, *wave.pods], stop_at, time.monotonic, self.sleep):
                break
            waiting = []
        if waiting:
            # No wave evicted anything (a continuation finds its pods already terminating):
            # the pods still have to be waited for, or the drain ends while they are running.
            wait_until_gone(kube, node_name, waiting, stop_at, time.monotonic, self.sleep)
        blocked = [r for r in all_results if r.outcome is EvictionOutcome.BLOCKED]
        if blocked:
            self.metrics.add("EvictionsBlockedByPdb", len(blocked), ClusterName=job.target.cluster)
            for report in blocked_pods(blocked, [d.pod for d in plan.decisions], kube.list_pdbs()):
                result.steps.append(Step(StepAction.BLOCKED, node_name, report.namespace, report.name,
                                         report.describe()))
        to_leave = {d.pod.metadata.uid for d in plan.decisions if d.action in (Action.EVICT, Action.WAIT)}
        return not pods_remaining(kube, node_name, to_leave)

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


def lifecycle_action(event: Event) -> LifecycleAction | None:
    """The Auto Scaling lifecycle action the event's drain finishes, if its spec says so."""
    reason = DRAIN_REASONS.get(event.kind)
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
