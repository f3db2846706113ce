"""Where the default scheduler would put a pod's replacement, as things stand in the simulation.

Every node passing the filters the planner models is scored by the default profile's plugins
(`scheduling.scoring`), normalised over those nodes and weighted as the settings say; the
prediction is the set of nodes tied for the highest sum (the scheduler picks one of them at
random). The evicted pod still holds its room, ports and anti-affinity on its source but no longer
counts for spreading, as a terminating pod does for the scheduler.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from ..objects import LabelSelector, LabelSelectorRequirement, Pod, Taint, TopologySpreadConstraint
from ..scheduling.labels import selector_matches
from ..scheduling.placement import Placement
from ..scheduling.ports import HostPort
from ..scheduling.resources import Resources, scoring_requests
from ..scheduling.scoring import (
    BALANCED_ALLOCATION,
    NODE_AFFINITY,
    NODE_RESOURCES_FIT,
    POD_TOPOLOGY_SPREAD,
    SYSTEM_DEFAULT_SPREAD,
    TAINT_TOLERATION,
    balanced_allocation,
    intolerable_preferences,
    least_allocated,
    normalize,
    spread_scores,
)
from ..scheduling.taints import tolerates, untolerated_taint
from .cluster import ClusterState, NodeState
from .workloads import workload_of

# The taints the node lifecycle controller puts on cordoned and not-ready nodes; a snapshot may
# predate them, so the state they stand for is checked too.
_UNSCHEDULABLE = Taint(key="node.kubernetes.io/unschedulable", effect="NoSchedule")
_NOT_READY = Taint(key="node.kubernetes.io/not-ready", effect="NoSchedule")


@dataclass(frozen=True, slots=True)
class Prediction:
    nodes: tuple[NodeState, ...]  # tied for the highest score, by name
    score: int
    feasible: int  # how many nodes passed the filters


@dataclass(frozen=True, slots=True)
class _Spread:
    """The pod's ScheduleAnyway constraints as PodTopologySpread scores them."""

    constraints: tuple[tuple[str, int], ...]  # (topology key, maxSkew)
    sources: tuple[TopologySpreadConstraint, ...]  # its own constraints; () for the system defaults
    require_all: bool


class Predictor:
    def __init__(self, cluster: ClusterState, weights: Mapping[str, int]) -> None:
        self.cluster = cluster
        self.weights = weights
        self._prefer_taints = [[t for t in n.node.spec.taints if t.effect == "PreferNoSchedule"]
                               for n in cluster.nodes]
        # Nodes alike in those taints share the count.
        self._prefer_keys = [tuple((t.key, t.value) for t in taints) for taints in self._prefer_taints]

    def predict(self, pod: Pod, requests: Resources, ports: tuple[HostPort, ...], source: NodeState,
                placement: Placement, pinned: bool) -> Prediction | None:
        """The nodes the replacement of `pod` (now on `source`) would go to, or None if none passes."""
        scored = self.scores(pod, requests, ports, source, placement, pinned)
        if not scored:
            return None
        best = max(score for _, score in scored)
        tied = tuple(sorted((node for node, score in scored if score == best), key=lambda n: n.name))
        return Prediction(tied, best, len(scored))

    def scores(self, pod: Pod, requests: Resources, ports: tuple[HostPort, ...], source: NodeState,
               placement: Placement, pinned: bool) -> list[tuple[NodeState, int]]:
        """Each node passing the filters, with its weighted score."""
        feasible = self._feasible(pod, requests, ports, source, placement, pinned)
        if not feasible:
            return []
        weights = self.weights
        totals = [0] * len(feasible)
        parts: list[tuple[str, list[int]]] = []
        if weights.get(TAINT_TOLERATION):
            counts: dict[tuple[tuple[str, str], ...], int] = {}
            tolerations = pod.spec.tolerations
            raw = []
            for node in feasible:
                key = self._prefer_keys[node.index]
                if key not in counts:
                    counts[key] = intolerable_preferences(tolerations, self._prefer_taints[node.index])
                raw.append(counts[key])
            parts.append((TAINT_TOLERATION, normalize(raw, reverse=True)))
        if weights.get(NODE_AFFINITY):
            parts.append((NODE_AFFINITY, normalize([placement.score(n.index) for n in feasible])))
        if weights.get(POD_TOPOLOGY_SPREAD):
            spread = self._spread_scores(pod, source, placement, feasible)
            if spread is not None:
                parts.append((POD_TOPOLOGY_SPREAD, spread))
        if weights.get(NODE_RESOURCES_FIT):
            cpu, memory = scoring_requests(pod, requests)
            fit = [least_allocated((node.scoring_cpu + cpu, node.allocatable.cpu),
                                   (node.scoring_memory + memory, node.allocatable.memory))
                   for node in feasible]
            parts.append((NODE_RESOURCES_FIT, fit))
        # Best-effort pods skip balanced allocation (1.32+, kubernetes#129138).
        if weights.get(BALANCED_ALLOCATION) and (requests.cpu or requests.memory):
            parts.append((BALANCED_ALLOCATION, [
                balanced_allocation((n.allocatable.cpu - n.free.cpu + requests.cpu, n.allocatable.cpu),
                                    (n.allocatable.memory - n.free.memory + requests.memory,
                                     n.allocatable.memory))
                for n in feasible]))
        for plugin, scores in parts:
            weight = weights[plugin]
            for index, score in enumerate(scores):
                totals[index] += weight * score
        return list(zip(feasible, totals, strict=True))

    def _feasible(self, pod: Pod, requests: Resources, ports: tuple[HostPort, ...], source: NodeState,
                  placement: Placement, pinned: bool) -> list[NodeState]:
        cluster = self.cluster
        tolerations = pod.spec.tolerations
        takes_cordoned = any(tolerates(t, _UNSCHEDULABLE) for t in tolerations)
        takes_not_ready = any(tolerates(t, _NOT_READY) for t in tolerations)
        cpu, memory, slots = requests.cpu, requests.memory, requests.pods
        feasible = []
        for node in cluster.nodes:
            spec = node.node.spec
            if (spec.unschedulable and not takes_cordoned) or (not takes_not_ready and not node.node.ready):
                continue
            if not placement.fits(node.index):
                continue
            free = node.free  # a quick look first: only what the pod asks for is checked
            if (cpu and cpu > free.cpu) or (memory and memory > free.memory) or (slots and slots > free.pods):
                continue
            if cluster.blocker(pod, requests, ports, source, node, pinned) is None:
                feasible.append(node)
        return feasible

    # --- topology spread ----------------------------------------------------------------------

    def _spread_scores(self, pod: Pod, source: NodeState, placement: Placement,
                       feasible: list[NodeState]) -> list[int] | None:
        spread = _soft_constraints(pod)
        if spread is None:
            return None  # the plugin skips the pod: every node scores 0
        constraints = spread.constraints
        counts = self._counts(pod, source, spread)
        if counts is None:
            return None
        domain_counts: list[Counter[str]] = [Counter() for _ in constraints]
        for k, (key, _) in enumerate(constraints):
            for index, count in counts[k].items():
                node = self.cluster.nodes[index]
                node_labels = node.node.metadata.labels
                if count <= 0 or key not in node_labels:
                    continue
                if spread.require_all and any(other not in node_labels for other, _ in constraints):
                    continue
                if self._counted(pod, placement, spread, k, node):
                    domain_counts[k][node_labels[key]] += count
        own_counts = [[per_node.get(n.index, 0) for per_node in counts] for n in feasible]
        return spread_scores(constraints, [n.node.metadata.labels for n in feasible], own_counts,
                             domain_counts, spread.require_all)

    def _counted(self, pod: Pod, placement: Placement, spread: _Spread, k: int, node: NodeState) -> bool:
        """Whether the node's pods count for constraint k: nodeAffinityPolicy Honor (the default)
        counts only nodes the pod's node selector and required affinity accept, nodeTaintsPolicy
        Honor only nodes whose taints it tolerates."""
        constraint = spread.sources[k] if spread.sources else None
        affinity_policy = constraint.node_affinity_policy if constraint is not None else "Honor"
        taints_policy = constraint.node_taints_policy if constraint is not None else "Ignore"
        if affinity_policy == "Honor" and not placement.matches_affinity(node.index):
            return False
        return not (taints_policy == "Honor"
                    and untolerated_taint(pod.spec.tolerations, node.node.spec.taints) is not None)

    def _counts(self, pod: Pod, source: NodeState, spread: _Spread) -> list[dict[int, int]] | None:
        """Per constraint, per node index, the pods it selects, the evicted pod left out. The system
        defaults select the pod's controller's pods (its ReplicaSet's or StatefulSet's selector)."""
        if not spread.sources:
            workload = workload_of(pod)
            if workload is None:
                return None
            counts = dict(self.cluster.spread_counts.get(workload, {}))
            counts[source.index] = counts.get(source.index, 0) - 1
            return [counts for _ in spread.constraints]
        by_selector: dict[object, dict[int, int]] = {}
        result = []
        for constraint in spread.sources:
            selector = _selector(pod, constraint)
            key = _selector_key(selector)
            if key not in by_selector:
                by_selector[key] = self._selected(pod, source, selector)
            result.append(by_selector[key])
        return result

    def _selected(self, pod: Pod, source: NodeState, selector: LabelSelector | None) -> dict[int, int]:
        namespace, evicted = pod.metadata.namespace, self.cluster.evicted
        counts = {}
        for node in self.cluster.nodes:
            count = 0
            for other in node.pods:
                if (other is pod and node is source) or (id(other), node.index) in evicted \
                        or other.metadata.deletion_timestamp is not None:
                    continue
                meta = other.metadata
                if meta.namespace == namespace and selector_matches(selector, meta.labels):
                    count += 1
            if count:
                counts[node.index] = count
        return counts


def _soft_constraints(pod: Pod) -> _Spread | None:
    """The pod's own ScheduleAnyway constraints, or the system defaults when it has none of its own
    (and a controller whose pods they select); None when the plugin skips the pod."""
    own = pod.spec.topology_spread_constraints
    if own:
        soft = tuple(c for c in own if c.when_unsatisfiable == "ScheduleAnyway")
        return _Spread(tuple((c.topology_key, c.max_skew) for c in soft), soft, True) if soft else None
    if pod.metadata.controller is None:
        return None
    return _Spread(SYSTEM_DEFAULT_SPREAD, (), False)


def _selector(pod: Pod, constraint: TopologySpreadConstraint) -> LabelSelector | None:
    """The constraint's selector with its matchLabelKeys added as the pod's own values."""
    selector = constraint.label_selector
    keys = [k for k in constraint.match_label_keys if k in pod.metadata.labels]
    if not keys:
        return selector
    base = selector or LabelSelector()
    extra = [LabelSelectorRequirement(key=k, operator="In", values=[pod.metadata.labels[k]]) for k in keys]
    return LabelSelector(match_labels=base.match_labels, match_expressions=[*base.match_expressions, *extra])


def _selector_key(selector: LabelSelector | None) -> object:
    if selector is None:
        return None
    return (tuple(sorted(selector.match_labels.items())),
            tuple((r.key, r.operator, tuple(r.values)) for r in selector.match_expressions))
