"""Why the planner moves a pod or keeps it: each of its rules, passed, failed or not reached, and the
predicted target and score. Read from the cycle's plan, so it says exactly what the cycle decided."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..objects import Pod
from ..scheduling.node_affinity import preferred_terms
from .planner import EVALUATION_ORDER, Plan, SkipCode

# What each rule asks of a pod before it is moved.
RULES: dict[SkipCode, str] = {
    SkipCode.MIRROR_POD: "not the mirror of a static pod",
    SkipCode.TERMINATING: "not being deleted",
    SkipCode.OPTED_OUT: "not opted out (pod or workload annotation)",
    SkipCode.DO_NOT_DISRUPT: "not marked karpenter.sh/do-not-disrupt or safe-to-evict=false",
    SkipCode.EXCLUDED_NAMESPACE: "in a namespace that is not excluded",
    SkipCode.NOT_SELECTED: "its labels match podSelector",
    SkipCode.NAMESPACE_NOT_SELECTED: "its namespace's labels match namespaceSelector",
    SkipCode.BARE_POD: "has a controller to recreate it",
    SkipCode.UNSUPPORTED_OWNER: "its controller recreates it elsewhere (not a DaemonSet or Job)",
    SkipCode.OTHER_SCHEDULER: "placed by a scheduler the planner simulates",
    SkipCode.NOT_READY: "running and ready",
    SkipCode.UNKNOWN_NODE: "its node is in the snapshot",
    SkipCode.NODE_DRAINING: "its node is not being drained",
    SkipCode.NODE_PROTECTED: "its node is not marked scale-down-disabled or do-not-disrupt",
    SkipCode.TOO_YOUNG: "older than minPodAgeSeconds",
    SkipCode.HIGH_PRIORITY: "priority at most maxPriority",
    SkipCode.SINGLE_REPLICA: "not its workload's only replica (unless moveSingleReplicaWorkloads)",
    SkipCode.MOVE_IN_FLIGHT: "no replacement of its workload still pending",
    SkipCode.BACKING_OFF: "its workload is not backing off after failed moves",
    SkipCode.WELL_PLACED: "a node it may run on scores higher",
    SkipCode.UNSUPPORTED_CONSTRAINT: "only constraints the planner simulates",
    SkipCode.INVALID_SPEC: "a readable spec (creation time, selectors, on-demand floor)",
    SkipCode.MULTIPLE_PDBS: "at most one PodDisruptionBudget covers it",
    SkipCode.CYCLE_CAP: "under maxEvictionsPerCycle",
    SkipCode.NODE_CAP: "under maxEvictionsPerNode",
    SkipCode.NAMESPACE_CAP: "under maxEvictionsPerNamespace",
    SkipCode.WORKLOAD_CAP: "under maxEvictionsPerWorkload",
    SkipCode.PDB_EXHAUSTED: "its PodDisruptionBudget allows a disruption",
    SkipCode.ON_DEMAND_FLOOR: "its workload's on-demand floor allows the move",
    SkipCode.NO_ROOM: "a better node has room",
    SkipCode.CONSTRAINED: "a better node takes it (ports, anti-affinity, spread, volume zone)",
    SkipCode.SCHEDULER_ELSEWHERE: "the scheduler would put its replacement on a better node",
}

_FIRST = {code: EVALUATION_ORDER.index(code) for code in SkipCode}
_LAST = {code: len(EVALUATION_ORDER) - 1 - EVALUATION_ORDER[::-1].index(code) for code in SkipCode}
# Rules in the order the last of their checks comes.
_ORDER = sorted(SkipCode, key=_LAST.__getitem__)


class RuleResult(enum.StrEnum):
    PASSED = "pass"
    FAILED = "fail"
    NOT_REACHED = "not reached"


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    code: SkipCode
    rule: str
    result: RuleResult
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Explanation:
    namespace: str
    name: str
    node: str
    verdict: str  # "evict", "keep", or "ignored": without a preferred node affinity it is never moved
    rules: tuple[RuleOutcome, ...] = ()
    target: str | None = None
    score: int | None = None  # on its node, when the plan says
    target_score: int | None = None


def explain(plan: Plan, pod: Pod) -> Explanation:
    """The plan's verdict on the pod, rule by rule. A rule counts as passed only when every place it
    is checked comes before the earliest place the failed rule is: a rule shown "not reached" may
    have been checked in part."""
    meta = pod.metadata
    if not preferred_terms(pod):
        return Explanation(meta.namespace, meta.name, pod.spec.node_name, "ignored")
    key = (meta.namespace, meta.name)
    eviction = next((e for e in plan.evictions if (e.namespace, e.name) == key), None)
    if eviction is not None:
        rules = tuple(RuleOutcome(code, RULES[code], RuleResult.PASSED) for code in _ORDER)
        return Explanation(meta.namespace, meta.name, pod.spec.node_name, "evict", rules, eviction.to_node,
                           eviction.from_score, eviction.to_score)
    skip = next((s for s in plan.skipped if (s.namespace, s.name) == key), None)
    assert skip is not None, "the planner gives every pod with a preferred node affinity a verdict"
    failed_at = _FIRST[skip.code]
    rules = tuple(
        RuleOutcome(code, RULES[code], RuleResult.FAILED, skip.detail) if code is skip.code
        else RuleOutcome(code, RULES[code],
                         RuleResult.PASSED if _LAST[code] < failed_at else RuleResult.NOT_REACHED)
        for code in _ORDER)
    return Explanation(meta.namespace, meta.name, pod.spec.node_name, "keep", rules)
