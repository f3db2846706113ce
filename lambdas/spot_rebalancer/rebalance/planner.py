"""The rebalance planner: which pods to evict so their replacements land on nodes their preferred
node affinity likes better, without ever evicting a pod that has nowhere better to go.

A pure function of a snapshot. A pod is misplaced when some other node scores strictly higher for
its preferred node affinity and really takes it: eligible, its node selector, required affinity and
tolerations hold, and, after the moves already planned this cycle, it has the room, the host ports,
no anti-affinity clash, the volume zone the pod must keep and a skew its spread constraints allow. Moves
consume the room they take, so a full better fleet means nothing is evicted (the descheduler's eviction
loop, issue #1707, cannot happen). Every pod with a preferred node affinity gets a verdict: an
eviction, or a skip with a reason code.

The fleet gets cheaper only when on-demand nodes go, so moves are planned node by node first: an
on-demand node whose every busy pod (all but DaemonSet, mirror and finished ones) is a candidate is
emptied whole, fewest pods first. If one of its pods has nowhere to go the node's moves are undone
(no point in moving pods off a node that stays); if a cap or a budget holds one back, the rest go
and a later wave finishes it. Then the other pods move biggest score gain first, those on on-demand
nodes that cannot be emptied last.
"""

from __future__ import annotations

import enum
import heapq
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import attrgetter

import msgspec

from ..config import Settings, share_of
from ..label_selector import SelectorError
from ..objects import Pod, collector_paused
from ..pod_rules import NODE_GUARDS, PodRule, guarded_by, opts_out, pod_rules
from ..scheduling.capacity_type import ON_DEMAND
from ..scheduling.dynamic_resources import unproven_claims
from ..scheduling.eligibility import own_taint
from ..scheduling.interpod import (
    scoring_neighbour,
    unscored_affinity,
    unsupported_constraint,
    wide_anti_affinity,
    wide_repeller,
)
from ..scheduling.node_affinity import preferred_terms
from ..scheduling.placement import Placement, PlacementIndex
from ..scheduling.ports import HostPort, host_ports
from ..scheduling.resources import Resources, pod_requests, shortfall
from ..scheduling.spread import blocking_constraints
from ..scheduling.volume_zone import claims_volumes
from ..snapshot import ClusterSnapshot
from .budgets import DisruptionBudgets
from .cluster import Blocker, BlockerKind, ClusterState, NodeGroup, NodeState, insufficient
from .history import MOVE_REASON, Eviction, History
from .nudge import CapacityRequest, RoomWanted, capacity_requests
from .prediction import Predictor
from .scale_in import stays_with_node
from .timestamps import parse_timestamp, require_time_zone
from .workloads import FloorError, WorkloadRef, on_demand_floor, workload_of

_encode = msgspec.json.encode
# The API sets spec.schedulerName to this when a pod names none.
DEFAULT_SCHEDULER = "default-scheduler"


class SkipCode(enum.StrEnum):
    MIRROR_POD = "mirror-pod"
    BARE_POD = "bare-pod"
    UNSUPPORTED_OWNER = "unsupported-owner"
    EXCLUDED_NAMESPACE = "excluded-namespace"
    NOT_SELECTED = "not-selected"  # podSelector does not select its labels
    NAMESPACE_NOT_SELECTED = "namespace-not-selected"  # namespaceSelector does not select its namespace
    OPTED_OUT = "opted-out"
    DO_NOT_DISRUPT = "do-not-disrupt"  # Karpenter's or the cluster autoscaler's mark on the pod
    NODE_PROTECTED = "node-protected"  # its node is marked not to be emptied
    OTHER_SCHEDULER = "other-scheduler"
    TERMINATING = "terminating"
    NOT_READY = "not-running-ready"
    UNKNOWN_NODE = "unknown-node"
    NODE_DRAINING = "node-draining"
    TOO_YOUNG = "too-young"
    HIGH_PRIORITY = "high-priority"
    SINGLE_REPLICA = "single-replica"
    MOVE_IN_FLIGHT = "move-in-flight"
    BACKING_OFF = "backing-off"
    UNSUPPORTED_CONSTRAINT = "unsupported-constraint"
    INVALID_SPEC = "invalid-spec"
    MULTIPLE_PDBS = "multiple-pdbs"
    WELL_PLACED = "well-placed"  # no eligible node it may run on scores higher
    CYCLE_CAP = "cycle-cap"
    NODE_CAP = "node-cap"
    NAMESPACE_CAP = "namespace-cap"
    WORKLOAD_CAP = "workload-cap"
    PDB_EXHAUSTED = "pdb-exhausted"
    ON_DEMAND_FLOOR = "on-demand-floor"
    NO_ROOM = "no-room"  # better nodes exist; some lack room (more nodes would help)
    CONSTRAINED = "constrained"  # better nodes exist; ports, anti-affinity or domains rule them all out
    # better nodes take it, but the scheduler's scoring would put its replacement on one no better
    SCHEDULER_ELSEWHERE = "scheduler-elsewhere"


# Where each skip can arise, in the order the planner applies its rules to a pod (a code may arise at
# several places): the pod rules in PodRule's order, `_static_rail`, `_candidate`, then `_weigh`'s caps,
# search and prediction. `explain` relies on it; change it with them.
EVALUATION_ORDER: tuple[SkipCode, ...] = (
    SkipCode.MIRROR_POD, SkipCode.NOT_READY, SkipCode.UNSUPPORTED_OWNER, SkipCode.TERMINATING,
    SkipCode.OPTED_OUT, SkipCode.DO_NOT_DISRUPT, SkipCode.EXCLUDED_NAMESPACE, SkipCode.BARE_POD,
    SkipCode.UNSUPPORTED_OWNER, SkipCode.NOT_SELECTED, SkipCode.NAMESPACE_NOT_SELECTED,
    SkipCode.OTHER_SCHEDULER, SkipCode.NOT_READY, SkipCode.UNKNOWN_NODE,
    SkipCode.NODE_DRAINING, SkipCode.NODE_PROTECTED,
    SkipCode.INVALID_SPEC, SkipCode.TOO_YOUNG, SkipCode.HIGH_PRIORITY, SkipCode.SINGLE_REPLICA,
    SkipCode.MOVE_IN_FLIGHT,
    SkipCode.BACKING_OFF, SkipCode.UNSUPPORTED_CONSTRAINT,
    SkipCode.INVALID_SPEC, SkipCode.WELL_PLACED, SkipCode.UNSUPPORTED_CONSTRAINT, SkipCode.INVALID_SPEC,
    SkipCode.MULTIPLE_PDBS,
    SkipCode.CYCLE_CAP, SkipCode.NODE_CAP, SkipCode.NAMESPACE_CAP, SkipCode.WORKLOAD_CAP,
    SkipCode.PDB_EXHAUSTED, SkipCode.ON_DEMAND_FLOOR, SkipCode.NO_ROOM, SkipCode.CONSTRAINED,
    SkipCode.SCHEDULER_ELSEWHERE,
)

# Skips that only mean "not in this wave": a node held back by one of them is still being emptied.
_LATER = frozenset({SkipCode.CYCLE_CAP, SkipCode.NODE_CAP, SkipCode.NAMESPACE_CAP, SkipCode.WORKLOAD_CAP,
                    SkipCode.PDB_EXHAUSTED})

_RULE_SKIPS: dict[PodRule, tuple[SkipCode, str]] = {
    PodRule.MIRROR: (SkipCode.MIRROR_POD, "static pod mirrored from a kubelet"),
    PodRule.FINISHED: (SkipCode.NOT_READY, "finished"),
    PodRule.TERMINATING: (SkipCode.TERMINATING, "already being deleted"),
    PodRule.UNOWNED: (SkipCode.BARE_POD, "no controller would recreate it"),
}


@dataclass(frozen=True, slots=True)
class Skip:
    namespace: str
    name: str
    code: SkipCode
    detail: str


@dataclass(frozen=True, slots=True)
class Plan:
    evictions: tuple[Eviction, ...] = ()  # in the order they were planned: node by node, then by gain
    skipped: tuple[Skip, ...] = ()  # sorted by namespace and name
    capacity: tuple[CapacityRequest, ...] = ()  # nodes to add so that pods left with NO_ROOM fit
    emptying: tuple[str, ...] = ()  # on-demand nodes these evictions leave with only daemons, by name

    def skip_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(s.code.value for s in self.skipped).items()))


def plan(snapshot: ClusterSnapshot, settings: Settings, history: History, now: datetime, *,
         workloads: Mapping[WorkloadRef, Mapping[str, str]] | None = None,
         node_groups: Mapping[str, str] | None = None) -> Plan:
    """Plan this cycle's moves.

    `workloads` maps a controller owner to its annotations (a ReplicaSet carrying its Deployment's),
    for opt-outs and on-demand floors; `node_groups` maps node names to their Auto Scaling group,
    which the capacity nudge prefers to the EKS node group label. A pod with an invalid selector or
    floor is skipped; a resource quantity the API server would have refused raises QuantityError.
    """
    # Planning makes many small objects and keeps few; collections meanwhile would mostly walk the
    # snapshot's lists again (a quarter to a third of plan time at 150,000 pods).
    with collector_paused():
        return _Planner(snapshot, settings, history, require_time_zone(now), workloads or {},
                        node_groups or {}).run()


@dataclass(eq=False, slots=True)
class _Candidate:
    pod: Pod
    workload: WorkloadRef
    source: NodeState
    placement: Placement
    score: int  # on its current node
    best_score: int  # the best it may have anywhere: a bound on its gain until searched
    requests: Resources
    ports: tuple[HostPort, ...]
    budgets: list[str]
    floor: int  # replicas of its workload to keep on on-demand
    pinned: bool  # volume claims or DoNotSchedule spread constraints: where it runs decides where it may go
    searched_at: int = -1  # the cluster version of the last search
    target: NodeState | None = None
    target_score: int = 0

    @property
    def order(self) -> tuple[str, str]:
        meta = self.pod.metadata
        return meta.namespace, meta.name


@dataclass(slots=True)
class _Level:
    """The nodes of one score level as of a cluster version: roomiest first, with their sort keys,
    and resource by resource the most room any of them has."""

    version: int
    members: frozenset[int]
    key_of: dict[int, tuple[int, int, str]]  # by node index
    keys: list[tuple[int, int, str]]
    ordered: list[NodeState]
    most_room: Resources


def _roomiest(node: NodeState) -> tuple[int, int, str]:
    return -node.free.cpu, -node.free.memory, node.name


def _most_room(nodes: list[NodeState]) -> Resources:
    """`Resources.max` over the nodes' free room, in their order, without its many steps between."""
    frees = list(map(_FREE, nodes))
    # An extended resource the first node lacks counts from zero; otherwise the order is no matter,
    # so each distinct set of extended resources (most nodes share one) is looked at once.
    extended = dict(frees[0].extended)
    for pairs in set(map(_EXTENDED, frees)):
        for name, value in pairs:
            extended[name] = max(extended.get(name, 0), value)
    return Resources(max(map(_CPU, frees)), max(map(_MEMORY, frees)), max(map(_STORAGE, frees)),
                     max(map(_PODS, frees)), tuple(sorted(extended.items())))


_FREE, _EXTENDED = attrgetter("free"), attrgetter("extended")
_CPU, _MEMORY, _STORAGE, _PODS = (attrgetter(name) for name in ("cpu", "memory", "ephemeral_storage", "pods"))


@dataclass(frozen=True, slots=True)
class _Refusal:
    """Why a candidate does not move now, and the room more nodes would give it (for the nudge)."""

    code: SkipCode
    detail: str
    room: RoomWanted | None = None


@dataclass(slots=True)
class _Search:
    """Where a pod could go now: the best target, or why every better node is out."""

    target: NodeState | None = None
    score: int = 0
    blockers: Counter[Blocker] = field(default_factory=Counter)
    room_score: int | None = None  # the best score among nodes that lacked room
    room_groups: Counter[NodeGroup] = field(default_factory=Counter)  # their node groups

    def lacked_room(self, score: int, groups: Iterable[NodeGroup] | Counter[NodeGroup]) -> None:
        if self.room_score in (None, score):
            self.room_score = score
            self.room_groups.update(groups)


class _Planner:
    def __init__(self, snapshot: ClusterSnapshot, settings: Settings, history: History,
                 now: datetime, workloads: Mapping[WorkloadRef, Mapping[str, str]],
                 node_groups: Mapping[str, str]) -> None:
        self.snapshot = snapshot
        self.settings = settings
        self.workloads = workloads
        self.cluster = ClusterState(snapshot, settings.lifecycle_label_key, node_groups)
        self.placements = PlacementIndex([n.node for n in self.cluster.nodes],
                                         [n.eligible for n in self.cluster.nodes])
        self.budgets = DisruptionBudgets(snapshot.pdbs)
        self.namespace_labels = {n.metadata.name: n.metadata.labels for n in snapshot.namespaces}
        self.in_flight = {r.workload for r in history.in_flight}
        self.backoffs = history.backing_off(now)
        self.youngest = now - timedelta(seconds=settings.min_pod_age_seconds)
        self.evictions: list[Eviction] = []
        self.emptying: list[str] = []
        self.skipped: list[Skip] = []
        self.room_wanted: list[RoomWanted] = []
        self.per_node: Counter[str] = Counter()
        self.per_namespace: Counter[str] = Counter()
        self.per_workload: Counter[WorkloadRef] = Counter()
        self.failed_searches: dict[tuple, _Search] = {}
        self.failed_predictions: dict[tuple, str] = {}
        self.predictor = Predictor(self.cluster, dict(settings.scheduler_score_weights))
        self.repelled: dict[tuple[str, frozenset], str] = {}
        # Per list of nodes of one score level (kept by the placements): their room, and their node groups.
        self.level_room: dict[int, _Level] = {}
        self.level_groups: dict[int, Counter[NodeGroup]] = {}

    def run(self) -> Plan:
        candidates = [c for pod in self.snapshot.pods if preferred_terms(pod)
                      if (c := self._candidate(pod)) is not None]
        done: set[int] = set()
        for node, on_node in self._emptiable(candidates):
            if self._empty(node, on_node):
                done.update(id(c) for c in on_node)
        self._by_gain([c for c in candidates if id(c) not in done])
        capacity = capacity_requests(self.room_wanted, self.cluster.nodes, self.settings.max_nudge_nodes)
        self.skipped.sort(key=attrgetter("namespace", "name"))
        return Plan(tuple(self.evictions), tuple(self.skipped), capacity, tuple(sorted(self.emptying)))

    def _emptiable(self, candidates: list[_Candidate]) -> list[tuple[NodeState, list[_Candidate]]]:
        """The on-demand nodes all of whose busy pods are candidates, with them: fewest first (each
        the sooner empty), then by name."""
        by_node: dict[str, list[_Candidate]] = {}
        for c in candidates:
            if c.source.capacity_type == ON_DEMAND:
                by_node.setdefault(c.source.name, []).append(c)
        found = []
        for name, on_node in by_node.items():
            node = self.cluster.by_name[name]
            busy = sum(1 for p in node.pods
                       if not stays_with_node(p) and p.metadata.deletion_timestamp is None)
            if busy == len(on_node):
                found.append((node, on_node))
        return sorted(found, key=lambda found: (len(found[1]), found[0].name))

    def _empty(self, node: NodeState, on_node: list[_Candidate]) -> bool:
        """Move every pod off the node, biggest gain first, or none: False (the moves undone) when
        one of them has nowhere to go. Pods a cap or a budget holds back wait for a later wave."""
        committed: list[_Candidate] = []
        later: list[tuple[_Candidate, _Refusal]] = []
        for c in sorted(on_node, key=lambda c: (c.score - c.best_score, c.order)):
            weighed = self._weigh(c)
            if not isinstance(weighed, _Refusal):
                self._commit(c)
                committed.append(c)
            elif weighed.code in _LATER:
                later.append((c, weighed))
            else:
                for done in reversed(committed):
                    self._undo(done)
                return False
        for c, refusal in later:
            self._refuse(c, refusal)
        if not later:
            self.emptying.append(node.name)
        return True

    def _by_gain(self, candidates: list[_Candidate]) -> None:
        """Biggest score gain first; pods on on-demand nodes (which stay: those that could be emptied
        are) after all others."""
        queue: list[tuple[bool, int, str, str, int, _Candidate]] = []
        for c in candidates:
            last = c.source.capacity_type == ON_DEMAND
            queue.append((last, c.score - c.best_score, *c.order, len(queue), c))
        heapq.heapify(queue)
        while queue:
            if len(self.evictions) >= self.settings.max_evictions_per_cycle:
                # The cycle is full: every pod left gets the same refusal, so their order is no matter.
                for *_, candidate in queue:
                    self._refuse(candidate, _Refusal(*self._cycle_cap()))
                return
            last, _, namespace, name, tie, candidate = heapq.heappop(queue)
            weighed = self._weigh(candidate)
            if isinstance(weighed, _Refusal):
                self._refuse(candidate, weighed)
                continue
            # Another move may have taken this pod's best target: if so, go back in line behind
            # pods that may now gain more.
            if queue and (last, -weighed) > queue[0][:2]:
                heapq.heappush(queue, (last, -weighed, namespace, name, tie, candidate))
                continue
            self._commit(candidate)

    def _skip(self, pod: Pod, code: SkipCode, detail: str) -> None:
        self.skipped.append(Skip(pod.metadata.namespace, pod.metadata.name, code, detail))

    # --- rails that do not depend on other moves --------------------------------------------------

    def _candidate(self, pod: Pod) -> _Candidate | None:
        """The pod as a move candidate, or None once a skip is recorded for it."""
        workload = workload_of(pod)
        rail = self._static_rail(pod, workload)
        if rail is not None:
            self._skip(pod, *rail)
            return None
        assert workload is not None, "the pod rules skip pods without a controller"
        source = self.cluster.by_name[pod.spec.node_name]
        try:
            placement = self.placements.placement(pod)
            score = placement.score(source.index)
            if placement.best_score is None or placement.best_score <= score:
                self._skip(pod, SkipCode.WELL_PLACED,
                           f"scores {score} on {source.name}; no eligible node it may run on scores more")
                return None
            repelled = self._repelled_widely(pod)
            if repelled:
                self._skip(pod, SkipCode.UNSUPPORTED_CONSTRAINT, repelled)
                return None
            budgets = self.budgets.covering(pod)
            floor = self._floor(pod, workload)
        except (SelectorError, FloorError) as exc:
            self._skip(pod, SkipCode.INVALID_SPEC, str(exc))
            return None
        if len(budgets) > 1:
            self._skip(pod, SkipCode.MULTIPLE_PDBS,
                       f"the Eviction API refuses pods under several budgets: {', '.join(budgets)}")
            return None
        pinned = claims_volumes(pod) or bool(blocking_constraints(pod))
        return _Candidate(pod, workload, source, placement, score, placement.best_score, pod_requests(pod),
                          host_ports(pod), budgets, floor, pinned)

    def _static_rail(self, pod: Pod, workload: WorkloadRef | None) -> tuple[SkipCode, str] | None:
        settings, meta = self.settings, pod.metadata
        annotations = self.workloads.get(workload, {}) if workload is not None else {}
        rules = pod_rules(pod, opt_out_annotation=settings.opt_out_annotation,
                          excluded_namespaces=settings.excluded_namespaces, workload_annotations=annotations)
        if rules:
            return self._rule_skip(pod, rules[0])
        assert workload is not None, "a pod without a controller is UNOWNED"
        selected = self._not_selected(pod)
        if selected is not None:
            return selected
        if (pod.spec.scheduler_name or DEFAULT_SCHEDULER) not in settings.scheduler_names:
            return SkipCode.OTHER_SCHEDULER, f"scheduled by {pod.spec.scheduler_name}"
        if pod.status.phase != "Running" or not pod.ready:
            return SkipCode.NOT_READY, f"phase {pod.status.phase or 'unknown'}, ready {pod.ready}"
        source = self.cluster.by_name.get(pod.spec.node_name)
        if source is None:
            return SkipCode.UNKNOWN_NODE, f"its node {pod.spec.node_name!r} is not in the snapshot"
        taint = own_taint(source.node)
        if taint is not None:
            return SkipCode.NODE_DRAINING, f"{source.name} is tainted {taint.key}"
        guard = guarded_by(source.node.metadata.annotations, NODE_GUARDS)
        if guard:
            return SkipCode.NODE_PROTECTED, f"{source.name} is annotated {guard}"
        created = parse_timestamp(meta.creation_timestamp)
        if created is None:
            return SkipCode.INVALID_SPEC, f"creation time {meta.creation_timestamp!r} unreadable"
        if created > self.youngest:
            return SkipCode.TOO_YOUNG, f"younger than {settings.min_pod_age_seconds}s"
        priority = pod.spec.priority or 0
        if priority > settings.max_priority:
            return SkipCode.HIGH_PRIORITY, f"priority {priority} above {settings.max_priority}"
        if self.cluster.replicas[workload] <= 1 and not settings.move_single_replica_workloads:
            return SkipCode.SINGLE_REPLICA, f"the only replica of {workload}"
        if workload in self.in_flight:
            return SkipCode.MOVE_IN_FLIGHT, f"a replacement of {workload} is not Ready yet"
        backoff = self.backoffs.get((workload, MOVE_REASON))
        if backoff is not None:
            return SkipCode.BACKING_OFF, (f"{backoff.failures} failed move(s) of {workload}; "
                                          f"backing off until {backoff.until.isoformat()}")
        constraint = unsupported_constraint(pod) or unproven_claims(pod) or unscored_affinity(pod)
        if constraint is not None:
            return SkipCode.UNSUPPORTED_CONSTRAINT, f"{constraint} is not simulated"
        return None

    def _not_selected(self, pod: Pod) -> tuple[SkipCode, str] | None:
        """Why podSelector or namespaceSelector leaves the pod out of what the rebalancer moves."""
        pods, namespaces = self.settings.pod_selector, self.settings.namespace_selector
        namespace = pod.metadata.namespace
        if not pods.matches(pod.metadata.labels):
            return SkipCode.NOT_SELECTED, f"its labels do not match podSelector {str(pods)!r}"
        if namespaces:
            labels = self.namespace_labels.get(namespace)
            if labels is None:
                return (SkipCode.NAMESPACE_NOT_SELECTED,
                        f"namespace {namespace} is not in the snapshot: namespaceSelector needs its labels")
            if not namespaces.matches(labels):
                return (SkipCode.NAMESPACE_NOT_SELECTED,
                        f"namespace {namespace}'s labels do not match namespaceSelector {str(namespaces)!r}")
        return None

    def _rule_skip(self, pod: Pod, rule: PodRule) -> tuple[SkipCode, str]:
        """The skip for the first pod rule that applies: the rebalancer moves no pod any of them
        names."""
        meta, annotation = pod.metadata, self.settings.opt_out_annotation
        owner = meta.controller
        if rule is PodRule.OPTED_OUT:
            if opts_out(meta.annotations.get(annotation)) or owner is None:
                return SkipCode.OPTED_OUT, f"pod annotated {annotation}"
            return SkipCode.OPTED_OUT, f"{owner.kind} {owner.name} annotated {annotation}"
        if rule is PodRule.DAEMONSET or rule is PodRule.NOT_RECREATED:
            return SkipCode.UNSUPPORTED_OWNER, f"owned by a {owner.kind if owner else 'nothing'}"
        if rule is PodRule.EXCLUDED_NAMESPACE:
            return SkipCode.EXCLUDED_NAMESPACE, f"namespace {meta.namespace} is excluded"
        if rule is PodRule.DO_NOT_DISRUPT:
            return SkipCode.DO_NOT_DISRUPT, f"pod annotated {guarded_by(meta.annotations)}"
        return _RULE_SKIPS[rule]

    def _repelled_widely(self, pod: Pod) -> str:
        """Why another pod's zone-wide (or wider) anti-affinity, or the pod affinity terms another pod
        may score it with through a namespaceSelector, make the pod's moves unpredictable, or "".
        Replicas share labels, so the answer is kept per namespace and label set."""
        key = (pod.metadata.namespace, frozenset(pod.metadata.labels.items()))
        reason = self.repelled.get(key)
        if reason is None:
            other = wide_repeller(pod, self.cluster.wide_repellers)
            neighbour = scoring_neighbour(pod, self.cluster.affinity_scorers) if other is None else None
            reason = self.repelled[key] = (
                f"{other.metadata.namespace}/{other.metadata.name} repels it by required anti-affinity "
                f"on {wide_anti_affinity(other)[0].topology_key}, which is not simulated" if other is not None
                else f"{neighbour.metadata.namespace}/{neighbour.metadata.name}'s pod affinity terms may "
                     "select it by namespace labels, which a snapshot does not hold" if neighbour is not None
                else "")
        return reason

    def _floor(self, pod: Pod, workload: WorkloadRef) -> int:
        """The larger of the pod's and its workload's on-demand floors (0 without either)."""
        key, replicas = self.settings.min_on_demand_annotation, self.cluster.replicas[workload]
        values = (pod.metadata.annotations.get(key), self.workloads.get(workload, {}).get(key))
        return max((on_demand_floor(v, replicas) for v in values if v is not None), default=0)

    # --- rails that depend on the moves planned so far ------------------------------------------

    def _weigh(self, c: _Candidate) -> int | _Refusal:
        """The pod's score gain now, or why it does not move."""
        over = self._over_a_cap(c)
        if over is not None:
            return _Refusal(*over)
        at_floor = (c.source.capacity_type == ON_DEMAND
                    and self.cluster.on_demand[c.workload] - 1 < c.floor)
        if c.searched_at != self.cluster.version:
            search = self._search(c, on_demand_only=at_floor)
            if search.target is None:  # searched again if weighed again (failed searches are cached)
                return self._search_refusal(c, search, at_floor)
            # A better node takes it: now where would the scheduler put the replacement?
            verdict = self._predict(c, at_floor)
            if isinstance(verdict, str):
                return _Refusal(SkipCode.SCHEDULER_ELSEWHERE, verdict)
            c.searched_at = self.cluster.version
            c.target, c.target_score = verdict
        return c.target_score - c.score

    def _predict(self, c: _Candidate, on_demand_only: bool) -> tuple[NodeState, int] | str:
        """The node the replacement goes to and its preferred score (the lowest over a tie), or why
        the scheduler's choice would not be better. Failures are shared like failed searches."""
        images = tuple(container.image for container in c.pod.spec.containers)  # ImageLocality reads them
        key = (self._search_inputs(c), c.source.name, self.cluster.version, images)
        failed = self.failed_predictions.get(key)
        if failed is not None:
            return failed
        prediction = self.predictor.predict(c.pod, c.requests, c.ports, c.source, c.placement, c.pinned)
        assert prediction is not None, "the search found a node that takes the pod"
        nodes, placement = prediction.nodes, c.placement
        worse = [n for n in nodes if not n.eligible or placement.score(n.index) <= c.score
                 or (on_demand_only and n.capacity_type != ON_DEMAND)]
        if not worse:
            return nodes[0], min(placement.score(n.index) for n in nodes)
        shown = ", ".join(n.name for n in nodes[:3]) + (f" and {len(nodes) - 3} more" * (len(nodes) > 3))
        first = worse[0]
        why = (" (not a node moves may target)" if not first.eligible
               else " (not on-demand)" if on_demand_only and first.capacity_type != ON_DEMAND else "")
        reason = self.failed_predictions[key] = (
            f"the scheduler would score {shown} highest ({prediction.score}, of {prediction.feasible} "
            f"feasible nodes): {first.name} scores {placement.score(first.index)} by preferred affinity"
            f"{why}, against {c.score} on {c.source.name}")
        return reason

    def _over_a_cap(self, c: _Candidate) -> tuple[SkipCode, str] | None:
        """The first cap or budget one more move of this pod would exceed."""
        settings, namespace = self.settings, c.pod.metadata.namespace
        if len(self.evictions) >= settings.max_evictions_per_cycle:
            return self._cycle_cap()
        if self.per_node[c.source.name] >= (cap := settings.max_evictions_per_node):
            return SkipCode.NODE_CAP, f"{cap} moves off {c.source.name} this cycle"
        if self.per_namespace[namespace] >= (cap := settings.max_evictions_per_namespace):
            return SkipCode.NAMESPACE_CAP, f"{cap} moves in {namespace} this cycle"
        share = settings.max_evictions_per_workload
        if self.per_workload[c.workload] >= (cap := share_of(share, self.cluster.replicas[c.workload])):
            return SkipCode.WORKLOAD_CAP, f"{cap} moves of {c.workload} at a time ({share})"
        exhausted = self.budgets.exhausted(c.budgets)
        if exhausted is not None:
            return SkipCode.PDB_EXHAUSTED, f"PodDisruptionBudget {exhausted} allows no more"
        return None

    def _cycle_cap(self) -> tuple[SkipCode, str]:
        return SkipCode.CYCLE_CAP, f"{self.settings.max_evictions_per_cycle} moves this cycle"

    def _refuse(self, c: _Candidate, refusal: _Refusal) -> None:
        """Record the skip (and the room it wants); the candidate is out of this plan."""
        self._skip(c.pod, refusal.code, refusal.detail)
        if refusal.room is not None:
            self.room_wanted.append(refusal.room)

    @staticmethod
    def _search_refusal(c: _Candidate, search: _Search, at_floor: bool) -> _Refusal:
        blockers = ", ".join(sorted(f"{n} {reason}" for reason, n in search.blockers.items()))
        if at_floor:
            return _Refusal(SkipCode.ON_DEMAND_FLOOR,
                            f"{c.floor} replica(s) of {c.workload} stay on on-demand and no better "
                            f"on-demand node takes it ({blockers or 'none'})")
        if search.room_score is not None:
            groups = search.room_groups
            room = None
            if groups:
                room = RoomWanted(min(groups, key=lambda g: (-groups[g], g)), c.requests)
            return _Refusal(SkipCode.NO_ROOM, f"no better node has room: {blockers}", room)
        return _Refusal(SkipCode.CONSTRAINED, f"every better node is ruled out: {blockers}")

    # --- targets --------------------------------------------------------------------------------

    def _search(self, c: _Candidate, on_demand_only: bool) -> _Search:
        """The roomiest node of the best score above the pod's own that takes it now. While nothing
        moves, pods alike in all the search reads share a failed search: replicas of one revision
        of a workload, usually."""
        key = (self._search_inputs(c), on_demand_only, self.cluster.version)
        cached = self.failed_searches.get(key)
        if cached is not None:
            return cached
        search = _Search()
        for score, members in c.placement.levels_above(c.score):
            most_room, roomiest_first = self._level(members)
            # A full fleet is the common case: when even the most room of the level falls short, no
            # node of it can take the pod. Not for a pinned pod: a node outside its domains is ruled
            # out by that first (more nodes there would not help).
            short = None if c.pinned else shortfall(c.requests, most_room)
            if short:
                search.blockers[insufficient(short[0])] += len(members)
                search.lacked_room(score, self._groups(members))
                continue
            for node in roomiest_first:
                if self._ask(c, node, score, on_demand_only, search):
                    return search
        self.failed_searches[key] = search
        return search

    def _ask(self, c: _Candidate, node: NodeState, score: int, on_demand_only: bool, search: _Search) -> bool:
        """Whether the node takes the pod now: if so it becomes the search's target, else its blocker
        is counted."""
        if on_demand_only and node.capacity_type != ON_DEMAND:
            search.blockers[Blocker(BlockerKind.NOT_ON_DEMAND)] += 1
            return False
        blocker = self.cluster.blocker(c.pod, c.requests, c.ports, c.source, node, c.pinned)
        if blocker is None:
            search.target, search.score = node, score
            return True
        search.blockers[blocker] += 1
        if blocker.more_room_helps:
            search.lacked_room(score, [node.group] if node.group is not None else [])
        return False

    @staticmethod
    def _search_inputs(c: _Candidate) -> tuple:
        """What a search reads of the pod: its placement and score, requests and host ports, the
        labels other pods' anti-affinity selects, its own anti-affinity and spread terms, and its
        source's domains when it is pinned to them."""
        meta, spec = c.pod.metadata, c.pod.spec
        return (c.placement, c.score, c.requests, c.ports, meta.namespace, frozenset(meta.labels.items()),
                _encode((spec.affinity, spec.topology_spread_constraints)),
                tuple(v.persistent_volume_claim.claim_name for v in spec.volumes
                      if v.persistent_volume_claim is not None),
                c.source.name if c.pinned else None)

    def _level(self, members: list[int]) -> tuple[Resources, list[NodeState]]:
        """As things stand now: resource by resource the most any of these nodes has free, and the
        nodes emptiest first (as the scheduler's default least-allocated scoring prefers; then by
        name). Kept from the last time, with the nodes moves changed since put back in order."""
        cluster = self.cluster
        level = self.level_room.get(id(members))
        if level is None:
            ordered = sorted((cluster.nodes[i] for i in members), key=_roomiest)
            level = self.level_room[id(members)] = _Level(
                cluster.version, frozenset(members), {n.index: _roomiest(n) for n in ordered},
                [_roomiest(n) for n in ordered], ordered, _most_room(ordered))
        elif level.version != cluster.version:
            changed = level.members.intersection(cluster.changed[level.version:])
            for index in changed:
                node = cluster.nodes[index]
                at = bisect_left(level.keys, level.key_of[index])
                del level.keys[at], level.ordered[at]
                key = level.key_of[index] = _roomiest(node)
                at = bisect_left(level.keys, key)
                level.keys.insert(at, key)
                level.ordered.insert(at, node)
            if changed:
                level.most_room = _most_room(level.ordered)
            level.version = cluster.version
        return level.most_room, level.ordered

    def _groups(self, members: list[int]) -> Counter[NodeGroup]:
        groups = self.level_groups.get(id(members))
        if groups is None:
            groups = self.level_groups[id(members)] = Counter(
                group for i in members if (group := self.cluster.nodes[i].group) is not None)
        return groups

    def _commit(self, c: _Candidate) -> None:
        target = c.target
        assert target is not None, "a candidate is committed only after a search found its target"
        self.cluster.move(c.pod, c.requests, c.ports, c.source, target)
        self.budgets.spend(c.budgets)
        self.per_node[c.source.name] += 1
        self.per_namespace[c.pod.metadata.namespace] += 1
        self.per_workload[c.workload] += 1
        meta = c.pod.metadata
        self.evictions.append(Eviction(meta.namespace, meta.name, meta.uid, c.workload, c.source.name,
                                       target.name, c.score, c.target_score))

    def _undo(self, c: _Candidate) -> None:
        """Take back the last move committed, which was the candidate's."""
        target = c.target
        assert target is not None and self.evictions[-1].uid == c.pod.metadata.uid, "undone last first"
        self.evictions.pop()
        self.cluster.undo_move(c.pod, c.requests, c.ports, c.source, target)
        self.budgets.refund(c.budgets)
        self.per_node[c.source.name] -= 1
        self.per_namespace[c.pod.metadata.namespace] -= 1
        self.per_workload[c.workload] -= 1
