"""From an interruption signal to a drained node: plan (pure), then carry the plan out.

The CLI's dry run prints the plan; the Lambda carries it out. Both go through `plan_drain`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .aws import AutoScaling, Ec2, Instance, LifecycleAction
from .config import Settings
from .drain_policy import (
    Action,
    DrainReason,
    NodePatch,
    PodDecision,
    Wave,
    backoff_seconds,
    blocked_pods,
    capped_grace_seconds,
    decide_pods,
    eviction_waves,
    node_drain_patch,
)
from .events import Event, EventKind, HealthNotice, Ignored, InstanceEvent, LifecycleHook
from .evictor import (
    EvictionResult,
    EvictionSchedule,
    Outcome,
    evict_all,
    pods_remaining,
    wait_until_gone,
)
from .kube import KubeApiError, KubeClient
from .nodes import locate_node
from .objects import Node, Pod
from .telemetry import MetricsRecorder

log = logging.getLogger(__name__)

# Patch conflicts (409) mean the node changed since we read it: read again, plan again.
PATCH_ATTEMPTS = 5
# Leave this much of an invocation's time for recording the outcome and re-enqueueing.
INVOCATION_RESERVE_SECONDS = 10
EVENT_WORKERS = 16


@dataclass(frozen=True, slots=True)
class Step:
    """One thing done (or, in a dry run, to be done); the CLI prints these as JSON lines."""

    action: str  # cordon, taint, evict, skip, wait, ignore, complete-lifecycle, continue
    node: str = ""
    namespace: str = ""
    pod: str = ""
    reason: str = ""
    outcome: str = ""

    def as_json(self) -> dict[str, str]:
        return {k: v for k, v in (("action", self.action), ("node", self.node),
                                  ("namespace", self.namespace), ("pod", self.pod),
                                  ("reason", self.reason), ("outcome", self.outcome)) if v}


@dataclass(frozen=True, slots=True)
class DrainPlan:
    reason: DrainReason
    node: Node
    patch: NodePatch | None  # None: the node's recommendation policy is "none"
    decisions: list[PodDecision]
    waves: list[Wave]
    evicts: bool  # False when a recommendation only taints or cordons
    deadline: datetime | None

    def steps(self, now: datetime) -> list[Step]:
        node = self.node.metadata.name
        steps = []
        if self.patch is not None:
            cordons = self.patch.body["spec"].get("unschedulable", False)
            steps.append(Step("taint", node, reason=self.reason.taint_key))
            if cordons:
                steps.append(Step("cordon", node, reason=self.reason.value))
        if not self.evicts:
            return steps
        for decision in self.decisions:
            meta = decision.pod.metadata
            if decision.action is Action.SKIP:
                steps.append(Step("skip", node, meta.namespace, meta.name,
                                  str(decision.skip_reason)))
            elif decision.action is Action.WAIT:
                steps.append(Step("wait", node, meta.namespace, meta.name, "terminating"))
        for wave in self.waves:
            for pod in wave.pods:
                grace = capped_grace_seconds(pod, self.deadline, now)
                reason = self.reason.value + ("" if grace is None else f" (grace {grace}s)")
                steps.append(Step("evict", node, pod.metadata.namespace, pod.metadata.name, reason))
        return steps


def plan_drain(reason: DrainReason, node: Node, pods: list[Pod], settings: Settings, now: datetime,
               deadline: datetime | None) -> DrainPlan:
    patch = node_drain_patch(node, reason, settings, now)
    evicts = patch is not None and (
        reason is not DrainReason.REBALANCE_RECOMMENDATION
        or settings.recommendation_action(node.metadata.labels) == "drain")
    decisions = decide_pods(pods, settings, reason, now) if evicts else []
    return DrainPlan(reason, node, patch, decisions, eviction_waves(decisions), evicts, deadline)


def drain_deadline(event: InstanceEvent, settings: Settings, started_at: datetime) -> datetime:
    """When the drain must be over: the event's own deadline, else the configured drain timeout."""
    own = event.deadline
    if isinstance(event, HealthNotice):
        own = None  # the start of a scheduled change is far off; the drain itself is bounded
    limit = started_at + timedelta(seconds=settings.drain_timeout_seconds)
    return min(own, limit) if own is not None else limit


@dataclass
class HandleResult:
    """What handling one event did, and whether it must be continued in another invocation."""

    steps: list[Step] = field(default_factory=list)
    continue_at: datetime | None = None


class InterruptionHandler:
    """Carries out drains for instance events against EC2, Auto Scaling and the cluster."""

    def __init__(self, settings: Settings, ec2: Ec2, autoscaling: AutoScaling,
                 kube_for: Callable[[str], KubeClient], metrics: MetricsRecorder, *,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.ec2 = ec2
        self.autoscaling = autoscaling
        self.kube_for = kube_for
        self.metrics = metrics
        self.now = now
        self.sleep = sleep

    def handle(self, event: Event, *, budget_seconds: float | None = None,
               started_at: datetime | None = None) -> HandleResult:
        """Act on one event. `budget_seconds` is this invocation's time; `started_at` is when the
        drain began (a continuation passes the first invocation's time)."""
        result = HandleResult()
        if isinstance(event, Ignored):
            return self._ignore(result, event.why, event.instance_id)
        reason = DrainReason.for_event(event.kind)
        if reason is None or not isinstance(event, InstanceEvent):
            return self._ignore(result, f"{event.kind} is not an interruption")
        started = started_at or self.now()
        if isinstance(event, HealthNotice) and event.drain_at > self.now():
            result.continue_at = event.drain_at
            result.steps.append(Step("continue", reason=f"drain at {event.drain_at.isoformat()}"))
            return result
        lifecycle = _lifecycle_action(event)
        instance = self.ec2.describe([event.instance_id]).get(event.instance_id)
        if instance is None:
            self._finish_lifecycle(lifecycle, "CONTINUE", result)
            return self._ignore(result, "instance no longer exists", event.instance_id)
        if instance.state == "terminated":
            # A late event: its node may still be listed for a while, but its pods are gone with
            # the instance, and evicting them would only report their loss as a drain.
            self._finish_lifecycle(lifecycle, "CONTINUE", result)
            return self._ignore(result, "instance is already terminated", event.instance_id)
        cluster = managed_cluster(instance, self.settings)
        if not cluster:
            self._finish_lifecycle(lifecycle, "CONTINUE", result)
            return self._ignore(result, "instance belongs to no managed cluster", event.instance_id)
        kube = self.kube_for(cluster)
        node = locate_node(kube, event.instance_id, instance.private_dns_name)
        if node is None:
            self._finish_lifecycle(lifecycle, "CONTINUE", result)
            return self._ignore(result, "instance is not a node of the cluster", event.instance_id)
        deadline = drain_deadline(event, self.settings, started)
        if self.settings.dry_run:
            plan = plan_drain(reason, node, kube.list_pods(node.metadata.name), self.settings,
                              self.now(), deadline)
            result.steps.extend(plan.steps(self.now()))
            return result
        if lifecycle is not None and started_at is not None:
            # A continuation: keep the hook from timing out while the drain goes on. If it has
            # already ended the instance is on its way out: draining on still helps its pods.
            self.autoscaling.heartbeat(lifecycle)
        invocation_end = (None if budget_seconds is None else
                          self.now() + timedelta(seconds=budget_seconds - INVOCATION_RESERVE_SECONDS))
        plan = self._cordon(kube, node, reason, event, deadline, cluster, result)
        if plan is None or not plan.evicts:
            self._finish_lifecycle(lifecycle, "CONTINUE", result)
            return result
        finished = self._drain(kube, plan, cluster, deadline, invocation_end, result)
        if finished:
            self.metrics.add("DrainDuration", (self.now() - started).total_seconds(), "Seconds",
                             ClusterName=cluster)
            self._finish_lifecycle(lifecycle, "CONTINUE", result)
        elif invocation_end is None or deadline <= invocation_end:
            # The drain was bounded by its deadline, not by this invocation. Its back-offs and
            # polls stop short of the deadline rather than overrun it, so the clock may read a
            # moment before it: continuing would only reach the same end one invocation later.
            self.metrics.add("DeadlineMissed", 1, ClusterName=cluster)
            self._finish_lifecycle(lifecycle, self.settings.lifecycle_timeout_result, result)
        else:
            result.continue_at = self.now()
            result.steps.append(Step("continue", plan.node.metadata.name, reason="drain not finished"))
        return result

    # --- steps ---------------------------------------------------------------------------------

    def _ignore(self, result: HandleResult, why: str, instance_id: str = "") -> HandleResult:
        self.metrics.add("EventsIgnored", 1, ClusterName=self.settings.cluster_name)
        result.steps.append(Step("ignore", reason=f"{instance_id}: {why}" if instance_id else why))
        return result

    def _finish_lifecycle(self, action: LifecycleAction | None, outcome: str,
                          result: HandleResult) -> None:
        if action is None:
            return
        outcome = self.autoscaling.complete(action, outcome)
        result.steps.append(Step("complete-lifecycle", reason=action.hook, outcome=outcome))

    def _cordon(self, kube: KubeClient, node: Node, reason: DrainReason, event: InstanceEvent,
                deadline: datetime, cluster: str, result: HandleResult) -> DrainPlan | None:
        """Taint and cordon the node (re-planning on conflicts); returns the plan it applied."""
        for _ in range(PATCH_ATTEMPTS):
            now = self.now()
            pods = kube.list_pods(node.metadata.name)
            plan = plan_drain(reason, node, pods, self.settings, now, deadline)
            if plan.patch is None:
                result.steps.append(Step("ignore", node.metadata.name,
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
                             "Milliseconds", ClusterName=cluster)
            result.steps.extend(s for s in plan.steps(now) if s.action in ("taint", "cordon"))
            self._record_events(kube, [(node, "Cordoned", f"Cordoned by spot-rebalancer: {reason}")])
            return plan
        raise KubeApiError("PATCH", f"/api/v1/nodes/{node.metadata.name}", 409,
                           f"node kept changing over {PATCH_ATTEMPTS} attempts")

    def _drain(self, kube: KubeClient, plan: DrainPlan, cluster: str, deadline: datetime,
               invocation_end: datetime | None, result: HandleResult) -> bool:
        """Evict wave by wave; True when every pod to evict (or wait for) has left the node."""
        node_name = plan.node.metadata.name
        stop = deadline if invocation_end is None else min(deadline, invocation_end)
        stop_at = time.monotonic() + max(0.0, (stop - self.now()).total_seconds())
        schedule = EvictionSchedule(until=stop_at, backoff=backoff_seconds, clock=time.monotonic,
                                    sleep=self.sleep)
        for decision in plan.decisions:
            meta = decision.pod.metadata
            if decision.action is not Action.EVICT:
                result.steps.append(Step(str(decision.action), node_name, meta.namespace, meta.name,
                                         str(decision.skip_reason or "terminating")))
        waiting = [d.pod for d in plan.decisions if d.action is Action.WAIT]
        all_results: list[EvictionResult] = []
        for wave in plan.waves:
            now = self.now()
            results = evict_all(kube, wave.pods,
                                lambda pod, now=now: capped_grace_seconds(pod, deadline, now),
                                schedule)
            all_results.extend(results)
            for res in results:
                result.steps.append(Step("evict", node_name, res.namespace, res.name,
                                         plan.reason.value, res.outcome.value))
            accepted = {(r.namespace, r.name) for r in results if r.outcome is Outcome.ACCEPTED}
            self.metrics.add("PodsEvicted", len(accepted), ClusterName=cluster)
            self._record_events(kube, [(p, "Evicted", f"Evicted by spot-rebalancer: {plan.reason}")
                                       for p in wave.pods
                                       if (p.metadata.namespace, p.metadata.name) in accepted])
            remaining = wait_until_gone(kube, node_name, [*waiting, *wave.pods], stop_at,
                                        time.monotonic, self.sleep)
            if remaining:
                break
            waiting = []
        if waiting:
            # No wave evicted anything (a continuation finds its pods already terminating):
            # the pods still have to be waited for, or the drain ends while they are running.
            wait_until_gone(kube, node_name, waiting, stop_at, time.monotonic, self.sleep)
        blocked = [r for r in all_results if r.outcome is Outcome.BLOCKED]
        if blocked:
            self.metrics.add("EvictionsBlockedByPdb", len(blocked), ClusterName=cluster)
            pdbs = kube.list_pdbs()
            for report in blocked_pods(blocked, [d.pod for d in plan.decisions], pdbs):
                result.steps.append(Step("blocked", node_name, report.namespace, report.name,
                                         report.describe()))
        to_leave = {d.pod.metadata.uid for d in plan.decisions if d.action in (Action.EVICT, Action.WAIT)}
        return not pods_remaining(kube, node_name, to_leave)

    def _record_events(self, kube: KubeClient, items: list[tuple[Any, str, str]]) -> None:
        """Kubernetes Events for people watching the cluster; failures never stop a drain."""
        def record(item: tuple[Any, str, str]) -> None:
            obj, reason, message = item
            meta = obj.metadata
            kind = "Node" if isinstance(obj, Node) else "Pod"
            try:
                kube.create_event(namespace=meta.namespace or "default", kind=kind, name=meta.name,
                                  uid=meta.uid, reason=reason, message=message)
            except KubeApiError as exc:
                log.warning("could not record event %s on %s %s: %s", reason, kind, meta.name, exc)

        if items:
            with ThreadPoolExecutor(max_workers=min(EVENT_WORKERS, len(items))) as pool:
                list(pool.map(record, items))


def managed_cluster(instance: Instance, settings: Settings) -> str:
    """The cluster this deployment manages the instance for, or "" when it is not ours: with a
    configured cluster, instances tagged for another cluster belong to that cluster's deployment."""
    cluster = instance.cluster_name(settings.cluster_name)
    if settings.cluster_name and cluster != settings.cluster_name:
        return ""
    return cluster


def _lifecycle_action(event: Event) -> LifecycleAction | None:
    if isinstance(event, LifecycleHook) and event.kind is EventKind.ASG_TERMINATION:
        return LifecycleAction(event.group, event.hook, event.token, event.instance_id)
    return None
