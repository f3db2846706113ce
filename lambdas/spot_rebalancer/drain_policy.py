"""What a drain does, decided without doing it: which pods to evict and in what order, with what
grace period, how long to back off when a PodDisruptionBudget refuses, and what to write on the node.

Every function here is pure; the drain service (drain.py) carries the decisions out through the
eviction layer (evictions.py).

Which pods (first rule that applies wins):

1. mirror pods (static pods, annotated `kubernetes.io/config.mirror`): skipped; the kubelet runs them
   from a file and recreates whatever the API removes.
2. finished pods (Succeeded or Failed): skipped; they hold no resources and nothing restarts them.
3. DaemonSet pods: skipped while their DaemonSet exists (the DaemonSet would recreate them on the node
   anyway); an orphan, whose DaemonSet is gone, is handled like an unowned pod.
4. terminating pods (deletionTimestamp set): waited for, not evicted again; skipped as
   stuck-terminating once their deletion time is STUCK_TERMINATING_SECONDS past (finalizers or a
   kubelet that is gone will not let them finish, and waiting only burns the deadline). They leave
   whatever the rules below say, so those rules do not apply to them.
5. the opt-out annotation (`settings.opt_out_annotation`, any value but "false"): skipped, on every
   drain. It is the pod owner's explicit "I handle termination myself".
   (Rules 1-7 are pod_rules.py's, which the rebalancer reads too.)
5b. `karpenter.sh/do-not-disrupt: "true"` or `cluster-autoscaler.kubernetes.io/safe-to-evict: "false"`:
   skipped on discretionary drains; on a forced drain (the instance goes anyway) evicted in a last
   wave of their own, after the system-critical pods, the Kubernetes Event saying so.
6. excluded namespaces (`settings.excluded_namespaces`): skipped on discretionary drains only
   (a rebalance recommendation). On a forced drain the instance goes away whatever we do; skipping
   would only turn a graceful, budget-respecting eviction into a hard kill, and the default list
   (kube-system) holds the cluster's DNS and controllers, which must move off a dying node cleanly.
7. unowned (bare) pods, no controller: evicted, or skipped when `settings.unowned_pods` is "skip".
8. everything else: evicted.

Compared with `kubectl drain --ignore-daemonsets --delete-emptydir-data --force` (its filters
skipDeletedFilter, daemonSetFilter, mirrorPodFilter, localStorageFilter, unreplicatedFilter), a forced
drain with default settings and no opt-out annotations evicts or waits for exactly the pods kubectl
deletes, except:

- finished pods: kubectl deletes them (every filter lets Succeeded/Failed through); we leave them, so a
  finished Job keeps its pod, logs and status until the node goes.
- terminating pods: kubectl evicts them again and waits (skipDeletedFilter skips nothing unless
  --skip-wait-for-delete-timeout is set); we only wait, and stop waiting as kubectl would with
  --skip-wait-for-delete-timeout=STUCK_TERMINATING_SECONDS.
- emptyDir pods are evicted, as with --delete-emptydir-data; bare pods are evicted, as with --force;
  orphaned DaemonSet pods are evicted, as kubectl --force does when the DaemonSet is not found.

kubectl evicts everything at once; we evict in waves by priority, lowest first and system-critical
pods last (kubernetes/kubectl#1347 asks kubectl for the same). A wave waits for the one before it to
be gone, but never past its own latest start (`wave_issue_times`): a budget that keeps refusing a
low-priority pod cannot keep the system-critical pods from their eviction.

With `forceAtDeadline`, on a drain whose deadline is its instance's end, a pod that budgets still
refuse once only its grace period is left before the deadline (`deletion_time`) is deleted with that
grace period: the instance stops anyway, and a graceful stop beats the hard one.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import groupby
from typing import Annotated, Any

import msgspec

from .config import Settings
from .objects import Node, Pod, PodDisruptionBudget
from .pod_rules import PodRule, guarded_by, pod_rules
from .results import EvictionOutcome, EvictionResult, Step, StepAction, StepOutcome
from .scheduling.labels import selector_matches

STUCK_TERMINATING_SECONDS = 60

# Priorities of the two built-in PriorityClasses; user-defined classes stop at one billion.
SYSTEM_CRITICAL_PRIORITY = 2_000_000_000
SYSTEM_CLASS_PRIORITIES = {"system-cluster-critical": 2_000_000_000, "system-node-critical": 2_000_001_000}

DEFAULT_GRACE_SECONDS = 30  # the API's default terminationGracePeriodSeconds
GRACE_SAFETY_MARGIN_SECONDS = 5
# An eviction with gracePeriodSeconds 0 removes the pod object at once, without waiting for the
# kubelet to stop its containers (a force deletion); 1 is the shortest graceful period.
MIN_GRACE_SECONDS = 1

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 30.0

TAINT_KEY_PREFIX = "spot-rebalancer/"
ACTION_ANNOTATION = "spot-rebalancer.io/action"
# AWS Health changes whose drain is still to come, as JSON {event ARN: drain time}: a hop of the
# waiting chain that no longer finds its change here (closed since, or removed by hand) stops.
SCHEDULED_CHANGES_ANNOTATION = "spot-rebalancer.io/scheduled-changes"
EXCLUDE_FROM_LOAD_BALANCERS_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"


class DrainReason(enum.StrEnum):
    """Why a node is drained (also the suffix of the taint it gets)."""

    SPOT_INTERRUPTION = "spot-interruption"  # the spot instance is terminated
    SPOT_STOP = "spot-stop"  # the spot instance is stopped or hibernated: it may start again
    CAPACITY_RESERVATION_INTERRUPTION = "capacity-reservation-interruption"
    CAPACITY_BLOCK_EXPIRY = "capacity-block-expiry"  # its Capacity Block ends: EC2 terminates it
    REBALANCE_RECOMMENDATION = "rebalance-recommendation"
    ASG_TERMINATION = "asg-termination"
    ASG_TO_WARM_POOL = "asg-warm-pool"  # scaled in into the group's warm pool: it may come back
    INSTANCE_STOPPING = "instance-stopping"  # EC2 state stopping: it may start again
    INSTANCE_SHUTTING_DOWN = "instance-shutting-down"  # EC2 state shutting-down: it is terminated
    # Backstops, when the earlier event was lost: EC2 state stopped, or terminated.
    INSTANCE_STOPPED = "instance-stopped"
    INSTANCE_TERMINATED = "instance-terminated"
    SCHEDULED_RETIREMENT = "scheduled-retirement"  # a Health change that ends the instance
    SCHEDULED_MAINTENANCE = "scheduled-maintenance"  # a Health change the instance lives through
    DEGRADED_HARDWARE = "degraded-hardware"

    @property
    def taint_key(self) -> str:
        return TAINT_KEY_PREFIX + self.value

    @property
    def spec(self) -> DrainSpec:
        return DRAIN_SPECS[self]

    @property
    def forced(self) -> bool:
        return self.spec.forced


class Marking(enum.Enum):
    CORDON = "cordon"  # a NoSchedule taint and a cordon, then every evictable pod evicted
    # The node's recommendation policy (settings.recommendation_action): none, a PreferNoSchedule
    # taint, a NoSchedule taint and a cordon, or that and the pods evicted.
    RECOMMENDATION_POLICY = "recommendation-policy"


class DeadlineRule(enum.Enum):
    # The event's own deadline (a spot warning's two minutes), never later than the drain timeout.
    EVENT = "event"
    # The drain timeout from the drain's start: the event's own time (a Health change's start) is the
    # instance's end, far off, not the drain's.
    DRAIN_TIMEOUT = "drain-timeout"


class LeadTime(enum.Enum):
    NONE = "none"  # drained when the event arrives
    HEALTH = "health"  # drained settings.health_lead_time_seconds before the event's deadline


class Finish(enum.Enum):
    NOTHING = "nothing"
    # Complete the Auto Scaling lifecycle action: CONTINUE once the drain is over (or there is nothing
    # to drain), settings.lifecycle_default_result when its deadline passed first.
    LIFECYCLE_ACTION = "lifecycle-action"


class Revert(enum.IntEnum):
    """When what a drain did to its node is undone; a node marked for several reasons keeps the
    record of the one undone last (the higher value)."""

    AFTER_TTL = 0  # the sweep undoes it after settings.recommendation_ttl_seconds
    # Once the instance runs again: its node Ready with another boot id (the machine restarted), or,
    # for a Health change, the change closed and the node Ready.
    WHEN_BACK = 1
    NEVER = 2  # the instance goes away


@dataclass(frozen=True, slots=True)
class DrainSpec:
    """How a drain reason drains: one row of DRAIN_SPECS."""

    reason: DrainReason
    forced: bool  # the instance goes away whatever we do (excluded namespaces are drained too)
    marking: Marking
    deadline: DeadlineRule
    lead_time: LeadTime
    finish: Finish
    revert: Revert
    # The instance is already stopped or gone: what can still be evicted is evicted once, at once
    # (nothing is waited for, nothing continued), and only if the node still has pods to evict.
    backstop: bool = False
    # The drain's deadline is when the instance goes (for a Health retirement: when its drain time is
    # over): with forceAtDeadline, what budgets still block is deleted at the end.
    instance_ends_at_deadline: bool = False


DRAIN_SPECS: dict[DrainReason, DrainSpec] = {spec.reason: spec for spec in (
    DrainSpec(DrainReason.SPOT_INTERRUPTION, forced=True, marking=Marking.CORDON,
              deadline=DeadlineRule.EVENT, lead_time=LeadTime.NONE, finish=Finish.NOTHING,
              revert=Revert.NEVER,
              instance_ends_at_deadline=True),
    DrainSpec(DrainReason.SPOT_STOP, forced=True, marking=Marking.CORDON,
              deadline=DeadlineRule.EVENT, lead_time=LeadTime.NONE, finish=Finish.NOTHING,
              revert=Revert.WHEN_BACK,
              instance_ends_at_deadline=True),
    DrainSpec(DrainReason.CAPACITY_RESERVATION_INTERRUPTION, forced=True, marking=Marking.CORDON,
              deadline=DeadlineRule.EVENT, lead_time=LeadTime.NONE, finish=Finish.NOTHING,
              revert=Revert.NEVER,
              instance_ends_at_deadline=True),
    DrainSpec(DrainReason.CAPACITY_BLOCK_EXPIRY, forced=True, marking=Marking.CORDON,
              deadline=DeadlineRule.EVENT, lead_time=LeadTime.NONE, finish=Finish.NOTHING,
              revert=Revert.NEVER,
              instance_ends_at_deadline=True),
    DrainSpec(DrainReason.REBALANCE_RECOMMENDATION, forced=False, marking=Marking.RECOMMENDATION_POLICY,
              deadline=DeadlineRule.EVENT, lead_time=LeadTime.NONE, finish=Finish.NOTHING,
              revert=Revert.AFTER_TTL),
    DrainSpec(DrainReason.ASG_TERMINATION, forced=True, marking=Marking.CORDON,
              deadline=DeadlineRule.EVENT, lead_time=LeadTime.NONE, finish=Finish.LIFECYCLE_ACTION,
              revert=Revert.NEVER,
              instance_ends_at_deadline=True),
    DrainSpec(DrainReason.ASG_TO_WARM_POOL, forced=True, marking=Marking.CORDON,
              deadline=DeadlineRule.EVENT, lead_time=LeadTime.NONE, finish=Finish.LIFECYCLE_ACTION,
              revert=Revert.WHEN_BACK,
              instance_ends_at_deadline=True),
    DrainSpec(DrainReason.INSTANCE_STOPPING, forced=True, marking=Marking.CORDON,
              deadline=DeadlineRule.EVENT, lead_time=LeadTime.NONE, finish=Finish.NOTHING,
              revert=Revert.WHEN_BACK,
              instance_ends_at_deadline=True),
    DrainSpec(DrainReason.INSTANCE_SHUTTING_DOWN, forced=True, marking=Marking.CORDON,
              deadline=DeadlineRule.EVENT, lead_time=LeadTime.NONE, finish=Finish.NOTHING,
              revert=Revert.NEVER,
              instance_ends_at_deadline=True),
    DrainSpec(DrainReason.INSTANCE_STOPPED, forced=True, marking=Marking.CORDON,
              deadline=DeadlineRule.EVENT, lead_time=LeadTime.NONE, finish=Finish.NOTHING,
              revert=Revert.WHEN_BACK, backstop=True),
    DrainSpec(DrainReason.INSTANCE_TERMINATED, forced=True, marking=Marking.CORDON,
              deadline=DeadlineRule.EVENT, lead_time=LeadTime.NONE, finish=Finish.NOTHING,
              revert=Revert.NEVER, backstop=True),
    DrainSpec(DrainReason.SCHEDULED_RETIREMENT, forced=True, marking=Marking.CORDON,
              deadline=DeadlineRule.DRAIN_TIMEOUT, lead_time=LeadTime.HEALTH, finish=Finish.NOTHING,
              revert=Revert.NEVER,
              instance_ends_at_deadline=True),
    # The instance is rebooted or loses power or network for a while: its pods cannot stay.
    DrainSpec(DrainReason.SCHEDULED_MAINTENANCE, forced=True, marking=Marking.CORDON,
              deadline=DeadlineRule.DRAIN_TIMEOUT, lead_time=LeadTime.HEALTH, finish=Finish.NOTHING,
              revert=Revert.WHEN_BACK),
    DrainSpec(DrainReason.DEGRADED_HARDWARE, forced=True, marking=Marking.CORDON,
              deadline=DeadlineRule.DRAIN_TIMEOUT, lead_time=LeadTime.NONE, finish=Finish.NOTHING,
              revert=Revert.NEVER),
)}


# AWS Health scheduled changes to EC2 instances by what they do to the instance (the README lists
# them): retirement, stop and termination end it; reboots and network or power maintenance keep it.
SCHEDULED_CHANGE_REASONS: dict[str, DrainReason] = {
    **dict.fromkeys(("AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
                     "AWS_EC2_PERSISTENT_INSTANCE_RETIREMENT_SCHEDULED",
                     "AWS_EC2_INSTANCE_STOP_SCHEDULED", "AWS_EC2_INSTANCE_TERMINATION_SCHEDULED"),
                    DrainReason.SCHEDULED_RETIREMENT),
    **dict.fromkeys(("AWS_EC2_INSTANCE_REBOOT_MAINTENANCE_SCHEDULED",
                     "AWS_EC2_SYSTEM_REBOOT_MAINTENANCE_SCHEDULED",
                     "AWS_EC2_INSTANCE_NETWORK_MAINTENANCE_SCHEDULED",
                     "AWS_EC2_INSTANCE_POWER_MAINTENANCE_SCHEDULED"),
                    DrainReason.SCHEDULED_MAINTENANCE),
}
_ENDING_WORDS = ("RETIREMENT", "STOP", "TERMINATION")


def scheduled_change_reason(event_type_code: str) -> DrainReason:
    """The drain for a Health scheduled change, by its code; a code not in the table ends the
    instance if its name says so (retirement, stop, termination), else the instance lives through it."""
    known = SCHEDULED_CHANGE_REASONS.get(event_type_code)
    if known is not None:
        return known
    words = event_type_code.split("_")
    if any(word in words for word in _ENDING_WORDS):
        return DrainReason.SCHEDULED_RETIREMENT
    return DrainReason.SCHEDULED_MAINTENANCE


def drain_deadline(spec: DrainSpec, event_deadline: datetime | None, settings: Settings,
                   started_at: datetime) -> datetime:
    """When the drain must be over, by the spec's deadline rule (a backstop's: at once)."""
    if spec.backstop:
        return started_at
    limit = started_at + timedelta(seconds=settings.drain_timeout_seconds)
    if spec.deadline is DeadlineRule.EVENT and event_deadline is not None:
        return min(event_deadline, limit)
    return limit


def impaired_to_drain(nodes: Iterable[Node], impaired: Mapping[str, tuple[str, ...]]
                      ) -> list[tuple[Node, tuple[str, ...]]]:
    """The nodes whose instance has an impaired status check (`impaired`: instance id to which
    checks), with those checks, that no forced drain has marked yet: a node already drained, or
    being drained, for this or any reason its instance does not survive is not drained again."""
    found = []
    for node in nodes:
        checks = impaired.get(node.instance_id) if node.instance_id else None
        action = recorded_action(node)
        if checks and (action is None or not action.reason.forced):
            found.append((node, checks))
    return found


CAPACITY_BLOCK_TYPE = "capacity-block"  # a Capacity Reservation's ReservationType


def capacity_block_end(reservation_type: str, ends_at: datetime | None, announced: datetime | None,
                       now: datetime) -> datetime | str:
    """When an ending Capacity Block ends, by its reservation (`ends_at`), or why its expiration
    warning (announcing `announced`) drains nothing: not a Capacity Block, extended past the
    announced end, or over already (its instances went with it)."""
    if reservation_type != CAPACITY_BLOCK_TYPE or ends_at is None:
        return f"not a Capacity Block (reservation type {reservation_type})"
    if announced is not None and ends_at > announced:
        return f"extended to {ends_at.isoformat()}"
    if ends_at <= now:
        return f"ended at {ends_at.isoformat()}"
    return ends_at


def drain_starts_at(spec: DrainSpec, event_deadline: datetime | None, settings: Settings) -> datetime | None:
    """When the drain may start, if not at once (the spec's lead time before the event's deadline)."""
    if spec.lead_time is LeadTime.HEALTH and event_deadline is not None:
        return event_deadline - timedelta(seconds=settings.health_lead_time_seconds)
    return None


def waiting_step(spec: DrainSpec, event_deadline: datetime | None, settings: Settings, now: datetime,
                 node_name: str = "") -> Step | None:
    """The step of a drain whose start is still to come (continued then, nothing touched now), or
    None when it starts now. The function and the CLI's dry run decide by this one rule."""
    starts_at = drain_starts_at(spec, event_deadline, settings)
    if starts_at is None or starts_at <= now:
        return None
    return Step(StepAction.CONTINUE, node_name, reason=f"drain at {starts_at.isoformat()}")


# --- which pods --------------------------------------------------------------------------------


class Action(enum.StrEnum):
    EVICT = "evict"
    SKIP = "skip"
    WAIT = "wait"  # already terminating: wait for it to go


class SkipReason(enum.StrEnum):
    MIRROR = "mirror"
    FINISHED = "finished"
    DAEMONSET = "daemonset"
    STUCK_TERMINATING = "stuck-terminating"
    OPTED_OUT = "opted-out"
    DO_NOT_DISRUPT = "do-not-disrupt"
    EXCLUDED_NAMESPACE = "excluded-namespace"
    UNOWNED = "unowned"


@dataclass(frozen=True, slots=True)
class PodDecision:
    pod: Pod
    action: Action
    skip_reason: SkipReason | None = None


def decide_pods(pods: Iterable[Pod], settings: Settings, reason: DrainReason, now: datetime, *,
                daemonsets: Collection[tuple[str, str]] | None = None) -> list[PodDecision]:
    """One decision per pod, in the pods' order, by the rules in the module docstring.

    `daemonsets` holds the (namespace, name) of the DaemonSets that exist; None means "assume every
    DaemonSet a pod names exists" (no orphans).
    """
    return [_decide(pod, settings, reason.forced, now, daemonsets) for pod in pods]


_SKIPPED = {PodRule.MIRROR: SkipReason.MIRROR, PodRule.FINISHED: SkipReason.FINISHED,
            PodRule.DAEMONSET: SkipReason.DAEMONSET, PodRule.OPTED_OUT: SkipReason.OPTED_OUT}


def _decide(pod: Pod, settings: Settings, forced: bool, now: datetime,
            daemonsets: Collection[tuple[str, str]] | None) -> PodDecision:
    for rule in pod_rules(pod, opt_out_annotation=settings.opt_out_annotation,
                          excluded_namespaces=settings.excluded_namespaces, daemonsets=daemonsets):
        skipped = _SKIPPED.get(rule)
        if skipped is not None:
            return PodDecision(pod, Action.SKIP, skipped)
        if rule is PodRule.TERMINATING:
            # It leaves whatever the later rules say, so they do not apply to it.
            deletion = pod.metadata.deletion_timestamp
            if deletion is not None and _stuck(deletion, now):
                return PodDecision(pod, Action.SKIP, SkipReason.STUCK_TERMINATING)
            return PodDecision(pod, Action.WAIT)
        if rule is PodRule.DO_NOT_DISRUPT and not forced:
            return PodDecision(pod, Action.SKIP, SkipReason.DO_NOT_DISRUPT)
        if rule is PodRule.EXCLUDED_NAMESPACE and not forced:
            return PodDecision(pod, Action.SKIP, SkipReason.EXCLUDED_NAMESPACE)
        if rule is PodRule.UNOWNED and settings.unowned_pods == "skip":
            return PodDecision(pod, Action.SKIP, SkipReason.UNOWNED)
    return PodDecision(pod, Action.EVICT)


def _stuck(deletion_timestamp: str, now: datetime) -> bool:
    """Whether the pod should have been gone for more than STUCK_TERMINATING_SECONDS.

    deletionTimestamp is when the kubelet's grace period ends, not when deletion was asked for.
    """
    try:
        gone_by = datetime.fromisoformat(deletion_timestamp)
    except ValueError:
        return False  # unreadable: keep waiting, the drain's own deadline still bounds it
    if gone_by.tzinfo is None:
        gone_by = gone_by.replace(tzinfo=UTC)
    return now - gone_by > timedelta(seconds=STUCK_TERMINATING_SECONDS)


# --- in what order -----------------------------------------------------------------------------


def pod_priority(pod: Pod) -> int:
    """spec.priority, else the built-in class's priority, else 0 (the API's default)."""
    if pod.spec.priority is not None:
        return pod.spec.priority
    return SYSTEM_CLASS_PRIORITIES.get(pod.spec.priority_class_name, 0)


def is_system_critical(pod: Pod) -> bool:
    return (pod_priority(pod) >= SYSTEM_CRITICAL_PRIORITY
            or pod.spec.priority_class_name in SYSTEM_CLASS_PRIORITIES)


@dataclass(frozen=True, slots=True)
class Wave:
    """Pods evicted together; the next wave starts when these are gone (or the deadline nears)."""

    priority: int
    system_critical: bool
    pods: tuple[Pod, ...]
    guarded: bool = False  # marked do-not-disrupt: evicted last, by a forced drain only


def eviction_waves(decisions: Iterable[PodDecision]) -> list[Wave]:
    """The pods to evict, grouped by priority: lowest first, system-critical pods last, and after
    them those marked do-not-disrupt (a forced drain's only).

    Within a wave pods are ordered by namespace and name, so a plan reads the same every time.
    """
    def wave_key(pod: Pod) -> tuple[bool, bool, int]:
        return bool(guarded_by(pod.metadata.annotations)), is_system_critical(pod), pod_priority(pod)

    pods = sorted((d.pod for d in decisions if d.action is Action.EVICT),
                  key=lambda p: (wave_key(p), p.metadata.namespace, p.metadata.name))
    return [Wave(priority=priority, system_critical=critical, pods=tuple(group), guarded=guarded)
            for (guarded, critical, priority), group in groupby(pods, key=wave_key)]


def eviction_message(pod: Pod, reason: DrainReason) -> str:
    """The Kubernetes Event a drain's eviction leaves on the pod."""
    guard = guarded_by(pod.metadata.annotations)
    overridden = f"; its annotation {guard} overridden by a forced drain" if guard else ""
    return f"Evicted by spot-rebalancer: {reason}{overridden}"


def wave_issue_times(waves: Sequence[Wave], deadline: datetime,
                     margin_seconds: float = GRACE_SAFETY_MARGIN_SECONDS) -> list[datetime]:
    """The latest time each wave's evictions are issued, whatever the waves before it still wait
    for (a budget that refuses, pods slow to stop): early enough that the wave's pods' own grace
    periods end `margin_seconds` before the deadline, and never after a later wave's, so the order
    stays lowest priority first. A time already past means at once, with the grace periods capped
    (capped_grace_seconds)."""
    latest = [deadline - timedelta(seconds=margin_seconds + max(map(own_grace_seconds, wave.pods), default=0))
              for wave in waves]
    for index in reversed(range(len(latest) - 1)):
        latest[index] = min(latest[index], latest[index + 1])
    return latest


# --- with what grace period --------------------------------------------------------------------


def own_grace_seconds(pod: Pod) -> int:
    """The pod's terminationGracePeriodSeconds, or the API's default."""
    own = pod.spec.termination_grace_period_seconds
    return DEFAULT_GRACE_SECONDS if own is None else own


def capped_grace_seconds(pod: Pod, deadline: datetime | None, now: datetime,
                         margin_seconds: float = GRACE_SAFETY_MARGIN_SECONDS) -> int | None:
    """The grace period to evict with, so the pod is gone `margin_seconds` before `deadline`.

    None when there is no deadline: the eviction then keeps the pod's own grace period. Never more
    than the pod asks for, never less than MIN_GRACE_SECONDS unless the pod itself asks for 0.
    """
    if deadline is None:
        return None
    left = math.floor((deadline - now).total_seconds() - margin_seconds)
    return min(own_grace_seconds(pod), max(MIN_GRACE_SECONDS, left))


def deletion_time(pod: Pod, deadline: datetime,
                  margin_seconds: float = GRACE_SAFETY_MARGIN_SECONDS) -> datetime:
    """When a pod that budgets still block is deleted instead (forceAtDeadline): once only its own
    grace period is left before the deadline (past already: at once, with the grace capped)."""
    return deadline - timedelta(seconds=margin_seconds + own_grace_seconds(pod))


# --- how long to back off ----------------------------------------------------------------------


def backoff_seconds(attempt: int, base: float = BACKOFF_BASE_SECONDS,
                    cap: float = BACKOFF_CAP_SECONDS) -> float:
    """Seconds to wait after the `attempt`-th refusal (1-based): base, 2·base, 4·base, ... up to cap.

    Deterministic, so a plan can be predicted and tested; evictions.EvictionSchedule, which it fits,
    spreads each wait with jitter.
    """
    doublings = min(max(attempt, 1) - 1, 63)  # beyond 63 doublings every sane cap has been hit
    return min(cap, base * 2.0 ** doublings)


def retry_times(start: float, until: float, base: float = BACKOFF_BASE_SECONDS,
                cap: float = BACKOFF_CAP_SECONDS) -> list[float]:
    """When the attempts after the first one at `start` happen, stopping before `until`.

    The same rule evictions.evict_one follows: no retry is made that would start at or after `until`.
    """
    if base <= 0:
        raise ValueError(f"backoff base must be positive, got {base}")
    times: list[float] = []
    at, attempt = start, 1
    while at + backoff_seconds(attempt, base, cap) < until:
        at += backoff_seconds(attempt, base, cap)
        times.append(at)
        attempt += 1
    return times


# --- what blocked us ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BudgetState:
    name: str
    disruptions_allowed: int
    current_healthy: int
    desired_healthy: int


@dataclass(frozen=True, slots=True)
class BlockedPod:
    namespace: str
    name: str
    attempts: int
    message: str
    budgets: tuple[BudgetState, ...]

    def describe(self) -> str:
        if not self.budgets:
            return f"{self.namespace}/{self.name}: refused {self.attempts} times: {self.message}"
        budgets = ", ".join(f"{b.name} ({b.disruptions_allowed} disruptions allowed, "
                            f"{b.current_healthy}/{b.desired_healthy} healthy)" for b in self.budgets)
        return f"{self.namespace}/{self.name}: refused {self.attempts} times by {budgets}"


def covering_budgets(pod: Pod, pdbs: Iterable[PodDisruptionBudget]) -> list[PodDisruptionBudget]:
    """The PodDisruptionBudgets in the pod's namespace whose selector matches it."""
    return [pdb for pdb in pdbs if pdb.metadata.namespace == pod.metadata.namespace
            and selector_matches(pdb.spec.selector, pod.metadata.labels)]


def blocked_pods(results: Iterable[EvictionResult], pods: Iterable[Pod],
                 pdbs: Iterable[PodDisruptionBudget]) -> list[BlockedPod]:
    """The pods a budget kept from being evicted until the deadline, each with those budgets."""
    pdbs = list(pdbs)
    by_name = {(p.metadata.namespace, p.metadata.name): p for p in pods}
    report = []
    for result in results:
        if result.outcome is not EvictionOutcome.BLOCKED:
            continue
        pod = by_name.get((result.namespace, result.name))
        budgets = covering_budgets(pod, pdbs) if pod is not None else []
        report.append(BlockedPod(
            namespace=result.namespace, name=result.name, attempts=result.attempts, message=result.message,
            budgets=tuple(BudgetState(b.metadata.name, b.status.disruptions_allowed, b.status.current_healthy,
                                      b.status.desired_healthy) for b in budgets)))
    return report


# --- what to write on the node -----------------------------------------------------------------


class NodeAction(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """What the product did to a node, kept as JSON in the ACTION_ANNOTATION annotation so a later
    sweep can undo a rebalance recommendation's action and never undo what the user did."""

    reason: DrainReason
    at: Annotated[datetime, msgspec.Meta(tz=True)]  # without a zone it cannot be compared: unreadable
    taints: tuple[str, ...] = ()  # keys of the taints we added
    cordoned: bool = False  # whether we set spec.unschedulable
    was_cordoned: bool = False  # unschedulable before our first action: then never uncordon
    load_balancer_label_added: bool = False
    # The node's boot id when we acted: another one, on a Ready node, means the machine started again.
    boot_id: str = ""


@dataclass(frozen=True, slots=True)
class NodePatch:
    """A strategic merge patch for one node (labels and annotations merge by name; the taint list
    is sent whole), and why it is made."""

    node_name: str
    body: dict[str, Any]
    why: str = ""


_decode_action = msgspec.json.Decoder(NodeAction).decode


def recorded_action(node: Node) -> NodeAction | None:
    """The action recorded on the node; None when there is none or it cannot be read."""
    raw = node.metadata.annotations.get(ACTION_ANNOTATION)
    if raw is None:
        return None
    try:
        return _decode_action(raw)
    except msgspec.DecodeError:
        return None


@dataclass(frozen=True, slots=True)
class Mark:
    """What a drain does to its node: the effect of its taint, whether it cordons and evicts."""

    effect: str
    cordon: bool
    evict: bool


_RECOMMENDATION_MARKS: dict[str, Mark | None] = {
    "none": None,
    "taint": Mark("PreferNoSchedule", cordon=False, evict=False),
    "cordon": Mark("NoSchedule", cordon=True, evict=False),
    "drain": Mark("NoSchedule", cordon=True, evict=True),
}


def node_mark(reason: DrainReason, node: Node, settings: Settings) -> Mark | None:
    """The mark the reason's spec gives this node; None when its recommendation policy is "none"."""
    if reason.spec.marking is Marking.RECOMMENDATION_POLICY:
        return _RECOMMENDATION_MARKS[settings.recommendation_action(node.metadata.labels)]
    return Mark("NoSchedule", cordon=True, evict=True)


def node_drain_patch(node: Node, reason: DrainReason, settings: Settings, now: datetime) -> NodePatch | None:
    """Taint (and cordon, as the reason's mark says) the node, and record it.

    The taint is `spot-rebalancer/<reason>`. None when the node's mark is none. The patch carries the
    node's resourceVersion, so it fails (409) rather than act on a node that changed since it was
    read; the caller reads the node again and plans again.
    """
    mark = node_mark(reason, node, settings)
    if mark is None:
        return None
    cordon = mark.cordon
    add_label = (cordon and settings.exclude_from_load_balancers
                 and EXCLUDE_FROM_LOAD_BALANCERS_LABEL not in node.metadata.labels)
    boot_id = node.status.node_info.boot_id
    record = NodeAction(reason=reason, at=now, taints=(reason.taint_key,), cordoned=cordon,
                        was_cordoned=node.spec.unschedulable, load_balancer_label_added=add_label,
                        boot_id=boot_id)
    previous = recorded_action(node)
    if previous is not None:
        # A later action must not make an earlier one undone sooner: a recommendation after a
        # forced drain, a stop after a termination.
        keep = previous.reason.spec.revert > reason.spec.revert
        record = NodeAction(
            reason=previous.reason if keep else reason,
            at=previous.at if keep else now,
            taints=tuple(dict.fromkeys((*previous.taints, reason.taint_key))),
            cordoned=cordon or previous.cordoned,
            # Until we cordon, the node's cordon is the user's.
            was_cordoned=previous.was_cordoned if previous.cordoned else node.spec.unschedulable,
            load_balancer_label_added=add_label or previous.load_balancer_label_added,
            boot_id=previous.boot_id if keep else boot_id,
        )
    metadata: dict[str, Any] = {"annotations": {ACTION_ANNOTATION: msgspec.json.encode(record).decode()}}
    if add_label:
        metadata["labels"] = {EXCLUDE_FROM_LOAD_BALANCERS_LABEL: "true"}
    ours = {"key": reason.taint_key, "effect": mark.effect}
    spec: dict[str, Any] = {"taints": [*_taints_without(node, {reason.taint_key}), ours]}
    if cordon:
        spec["unschedulable"] = True
    return NodePatch(node.metadata.name, _with_resource_version(node, {"metadata": metadata, "spec": spec}))


def revert_due(record: NodeAction, node: Node, now: datetime, settings: Settings, *,
               change_closed: bool = False) -> str | None:
    """Why the recorded action is to be undone now, by its reason's revert rule; None while it is
    not (yet). `change_closed`: AWS Health says the scheduled change that caused it is over."""
    revert = record.reason.spec.revert
    if revert is Revert.AFTER_TTL:
        # Never while its drain may still be under way.
        wait = max(settings.recommendation_ttl_seconds, settings.drain_timeout_seconds)
        return "rebalance recommendation expired" if now >= record.at + timedelta(seconds=wait) else None
    if revert is not Revert.WHEN_BACK or not node.ready:
        return None
    boot_id = node.status.node_info.boot_id
    if boot_id and boot_id != record.boot_id:
        return f"{record.reason}: the instance runs again"
    if change_closed and record.reason is DrainReason.SCHEDULED_MAINTENANCE:
        return f"{record.reason}: the change is closed"
    return None


def node_revert_patch(node: Node, now: datetime, settings: Settings, *,
                      change_closed: bool = False) -> NodePatch | None:
    """Undo the recorded action once `revert_due` says so: remove our taints and label, uncordon
    only if the node was schedulable before us, and drop the record. None when there is nothing
    (yet) to undo."""
    record = recorded_action(node)
    why = None if record is None else revert_due(record, node, now, settings, change_closed=change_closed)
    if record is None or why is None:
        return None
    metadata: dict[str, Any] = {"annotations": {ACTION_ANNOTATION: None}}
    if record.load_balancer_label_added:
        metadata["labels"] = {EXCLUDE_FROM_LOAD_BALANCERS_LABEL: None}
    spec: dict[str, Any] = {"taints": _taints_without(node, set(record.taints))}
    if record.cordoned and not record.was_cordoned:
        spec["unschedulable"] = False
    return NodePatch(node.metadata.name, _with_resource_version(node, {"metadata": metadata, "spec": spec}),
                     why)


@dataclass(frozen=True, slots=True)
class UndoPlan:
    """What a `running` instance or a closed Health change undoes on the instance's node."""

    node_name: str
    cancel: NodePatch | None  # drops the closed change the node still had pending
    revert: NodePatch | None  # undoes the recorded action, now due
    waits: bool  # the recorded action is undone once the instance is back, which it is not yet

    def steps(self, outcome: StepOutcome) -> list[Step]:
        """The plan as steps; `outcome` is the revert's (done, or a dry run)."""
        steps = []
        if self.cancel is not None:
            steps.append(Step(StepAction.CANCEL, self.node_name, reason=self.cancel.why))
        if self.revert is not None:
            steps.append(Step(StepAction.REVERT, self.node_name, reason=self.revert.why, outcome=outcome))
        if self.waits:
            steps.append(Step(StepAction.CONTINUE, self.node_name, reason="undone once the instance is back"))
        return steps or [Step(StepAction.IGNORE, self.node_name, reason="nothing to undo")]


def plan_undo(node: Node, now: datetime, settings: Settings, *, closed_change: str = "") -> UndoPlan:
    """What to undo on the node now; `closed_change` is the ARN of the Health change that closed."""
    cancel = scheduled_change_patch(node, closed_change, None) if closed_change else None
    revert = node_revert_patch(node, now, settings, change_closed=bool(closed_change))
    record = recorded_action(node)
    waits = revert is None and record is not None and record.reason.spec.revert is Revert.WHEN_BACK
    return UndoPlan(node.metadata.name, cancel, revert, waits)


_decode_changes = msgspec.json.Decoder(dict[str, str]).decode


def scheduled_changes(node: Node) -> dict[str, str]:
    """The pending Health changes recorded on the node (event ARN -> drain time); none when unreadable."""
    raw = node.metadata.annotations.get(SCHEDULED_CHANGES_ANNOTATION)
    if raw is None:
        return {}
    try:
        return _decode_changes(raw)
    except msgspec.DecodeError:
        return {}


def scheduled_change_patch(node: Node, event_arn: str, drain_at: datetime | None) -> NodePatch | None:
    """Record the Health change `event_arn` as pending on the node until `drain_at`, or (None) drop
    it; None when the node already says so."""
    changes = scheduled_changes(node)
    if drain_at is None:
        if changes.pop(event_arn, None) is None:
            return None
        why = f"{event_arn}: closed"
    else:
        if changes.get(event_arn) == drain_at.isoformat():
            return None
        changes[event_arn] = drain_at.isoformat()
        why = f"{event_arn}: drain at {drain_at.isoformat()}"
    value = msgspec.json.encode(changes).decode() if changes else None
    body = {"metadata": {"annotations": {SCHEDULED_CHANGES_ANNOTATION: value}}}
    return NodePatch(node.metadata.name, _with_resource_version(node, body), why)


def _taints_without(node: Node, keys: set[str]) -> list[dict[str, Any]]:
    """The node's taints but those with these keys, as patch items.

    spec.taints has no merge key: a strategic merge patch replaces the whole list (and rejects
    `$patch: delete` items), so every patch carries the full list, guarded by resourceVersion.
    """
    return [msgspec.to_builtins(t) for t in node.spec.taints if t.key not in keys]


def _with_resource_version(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    if node.metadata.resource_version:
        body["metadata"]["resourceVersion"] = node.metadata.resource_version
    return body


# --- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DrainPlan:
    reason: DrainReason
    node: Node
    patch: NodePatch | None  # None: the node's mark is none
    decisions: list[PodDecision]
    waves: list[Wave]
    evicts: bool  # False when the mark only taints or cordons
    deadline: datetime  # when every pod must be gone
    # Pods budgets still block when only their grace period is left are deleted (forceAtDeadline).
    force_at_deadline: bool = False

    def steps(self, now: datetime) -> list[Step]:
        """What carrying the plan out does, as steps: mark, then skip, wait and evict."""
        node = self.node.metadata.name
        steps = []
        if self.patch is not None:
            steps.append(Step(StepAction.TAINT, node, reason=self.reason.taint_key))
            if self.patch.body["spec"].get("unschedulable", False):
                steps.append(Step(StepAction.CORDON, node, reason=self.reason.value))
        if not self.evicts:
            return steps
        steps.extend(decision_step(node, d) for d in self.decisions if d.action is not Action.EVICT)
        for wave in self.waves:
            for pod in wave.pods:
                grace = capped_grace_seconds(pod, self.deadline, now)
                reason = self.reason.value + ("" if grace is None else f" (grace {grace}s)")
                steps.append(Step(StepAction.EVICT, node, pod.metadata.namespace, pod.metadata.name, reason))
        return steps


def decision_step(node_name: str, decision: PodDecision) -> Step:
    """A skipped or waited-for pod as a step."""
    meta = decision.pod.metadata
    if decision.action is Action.WAIT:
        return Step(StepAction.WAIT, node_name, meta.namespace, meta.name, "terminating")
    return Step(StepAction.SKIP, node_name, meta.namespace, meta.name, str(decision.skip_reason))


def plan_drain(reason: DrainReason, node: Node, pods: list[Pod], settings: Settings, now: datetime, *,
               event_deadline: datetime | None, started: datetime) -> DrainPlan:
    """The drain of `node` for `reason`, begun at `started`, of an event whose own deadline (if any)
    is `event_deadline`."""
    deadline = drain_deadline(reason.spec, event_deadline, settings, started)
    patch = node_drain_patch(node, reason, settings, now)
    mark = node_mark(reason, node, settings)
    evicts = mark is not None and mark.evict
    decisions = decide_pods(pods, settings, reason, now) if evicts else []
    force = settings.force_at_deadline and reason.spec.instance_ends_at_deadline
    return DrainPlan(reason, node, patch, decisions, eviction_waves(decisions), evicts, deadline, force)
