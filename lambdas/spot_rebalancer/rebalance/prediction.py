"""Where the default scheduler would put a pod's replacement, as things stand in the simulation.

Every node passing the filters the planner models is scored by the default profile's plugins
(`scheduling.scoring`), normalised over those nodes and weighted as the settings say; the
prediction is the set of nodes tied for the highest sum (the scheduler picks one of them at
random). The evicted pod still holds its room, ports and anti-affinity on its source but no longer
counts for spreading, as a terminating pod does for the scheduler.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..objects import LabelSelector, Pod, Taint, TopologySpreadConstraint
from ..scheduling.interpod import HOSTNAME_KEY, hostname_anti_affinity, own_preferred_terms
from ..scheduling.labels import selector_matches
from ..scheduling.placement import Placement
from ..scheduling.ports import HostPort
from ..scheduling.resources import Resources, scoring_requests, shortfall
from ..scheduling.scoring import (
    BALANCED_ALLOCATION,
    IMAGE_LOCALITY,
    INTER_POD_AFFINITY,
    NODE_AFFINITY,
    NODE_RESOURCES_FIT,
    POD_TOPOLOGY_SPREAD,
    SYSTEM_DEFAULT_SPREAD,
    TAINT_TOLERATION,
    balanced_allocation,
    image_index,
    image_locality,
    inter_pod_score,
    inter_pod_scores,
    intolerable_preferences,
    least_allocated,
    normalize,
    normalize_min_max,
    normalized_image,
    spread_scores,
)
from ..scheduling.spread import spread_selector
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


@dataclass(slots=True)
class _Fleet:
    """The nodes a kind of pod passes the static filters of (cordons, readiness, its placement), in
    classes of nodes alike in all its scores read but their usage and its own pods on them."""

    members: list[list[int]]  # per class, its node indices
    class_of: list[int]  # per node, its class (-1: filtered out)
    affinity: list[int]  # per class, the preferred affinity score
    prefer: list[int]  # per class, the PreferNoSchedule taint class
    representative: list[NodeState]  # per class, one of its nodes


@dataclass(slots=True)
class _PerNode:
    """A verdict per node for one kind of request, as of `seen` entries of `cluster.changed`."""

    values: list[int]
    seen: int


# What `_PerNode` room verdicts say: no room, room, or ask `ClusterState.blocker` (room held for
# nominated pods, or repelling pods the incoming pod's labels decide about).
_SHORT, _ROOM, _ASK = 0, 1, 2


class Predictor:
    def __init__(self, cluster: ClusterState, weights: Mapping[str, int]) -> None:
        self.cluster = cluster
        self.weights = weights
        self._prefer_taints = [[t for t in n.node.spec.taints if t.effect == "PreferNoSchedule"]
                               for n in cluster.nodes]
        # Nodes alike in those taints share the count.
        self._prefer_keys = [tuple((t.key, t.value) for t in taints) for taints in self._prefer_taints]
        prefer_ids: dict[tuple[tuple[str, str], ...], int] = {}
        self._prefer_class = [prefer_ids.setdefault(key, len(prefer_ids)) for key in self._prefer_keys]
        self._ready = [n.node.ready for n in cluster.nodes]
        self._fleets: dict[tuple, _Fleet] = {}
        self._rooms: dict[Resources, _PerNode] = {}
        self._resource_scores: dict[tuple, _PerNode] = {}
        self._node_images, self._nodes_with_image = image_index(n.node for n in cluster.nodes)
        # Which nodes hold each image: a node holding none of a pod's images scores 0 on ImageLocality.
        self._image_holders: dict[str, list[int]] = {}
        for index, sizes in enumerate(self._node_images):
            for name in sizes:
                self._image_holders.setdefault(name, []).append(index)

    def predict(self, pod: Pod, requests: Resources, ports: tuple[HostPort, ...], source: NodeState,
                placement: Placement, pinned: bool) -> Prediction | None:
        """The nodes the replacement of `pod` (now on `source`) would go to, or None if none passes.

        The best of `scores`, got without scoring every node: a class of alike nodes (`_Fleet`) is
        scored once for the normalised plugins, the nodes holding pods the spreading counts one by
        one, and the resource scores, which read a node's usage alone, are kept per node and kind of
        request and refreshed only where a move changed the usage."""
        weights = self.weights
        spread = _soft_constraints(pod) if weights.get(POD_TOPOLOGY_SPREAD) else None
        counts = self._counts(pod, source, spread) if spread is not None else None
        if counts is None:
            spread = None
        fleet = self._fleet(pod, placement, spread)
        by_class = self._feasible_by_class(pod, requests, ports, source, placement, pinned, fleet)
        # Entries of alike feasible nodes: (class, members). Nodes holding pods the hostname
        # spreading counts get their own.
        own: set[int] = set()
        if spread is not None and counts is not None:
            for k, (key, _) in enumerate(spread.constraints):
                if key == HOSTNAME_KEY:
                    own.update(counts[k])
        entries: list[tuple[int, list[int]]] = []
        for class_id, members in by_class.items():
            if own and not own.isdisjoint(members):
                entries.extend((class_id, [i]) for i in members if i in own)
                members = [i for i in members if i not in own]
            if members:
                entries.append((class_id, members))
        if not entries:
            return None
        totals = [0] * len(entries)
        parts: list[tuple[str, list[int]]] = []
        if weights.get(TAINT_TOLERATION):
            tolerations = pod.spec.tolerations
            raw_by_class: dict[int, int] = {}
            for class_id, _ in entries:
                prefer = fleet.prefer[class_id]
                if prefer not in raw_by_class:
                    taints = self._prefer_taints[fleet.representative[class_id].index]
                    raw_by_class[prefer] = intolerable_preferences(tolerations, taints)
            parts.append((TAINT_TOLERATION, normalize([raw_by_class[fleet.prefer[c]] for c, _ in entries],
                                                      reverse=True)))
        if weights.get(NODE_AFFINITY):
            parts.append((NODE_AFFINITY, normalize([fleet.affinity[c] for c, _ in entries])))
        if spread is not None and counts is not None:
            parts.append((POD_TOPOLOGY_SPREAD, self._grouped_spread_scores(
                pod, placement, spread, counts, fleet, entries)))
        for plugin, scores in parts:
            weight = weights[plugin]
            for index, score in enumerate(scores):
                totals[index] += weight * score
        resource = self._resource_score_of(pod, requests).values
        extra = self._node_scores(pod, [i for _, members in entries for i in members])
        if extra is not None:  # scores of single nodes, not of classes: added to the per-node ones
            resource = [*resource]
            for index, score in extra.items():
                resource[index] += score
        best_of = [total + max(map(resource.__getitem__, members))
                   for total, (_, members) in zip(totals, entries, strict=True)]
        best = max(best_of)
        nodes = self.cluster.nodes
        tied = [nodes[i] for total, entry_best, (_, members) in zip(totals, best_of, entries, strict=True)
                if entry_best == best for i in members if total + resource[i] == best]
        tied.sort(key=lambda n: n.name)
        return Prediction(tuple(tied), best, sum(len(members) for _, members in entries))

    def scores(self, pod: Pod, requests: Resources, ports: tuple[HostPort, ...], source: NodeState,
               placement: Placement, pinned: bool) -> list[tuple[NodeState, int]]:
        """Each node passing the filters, with its weighted score: node by node, the plain way
        `predict` must agree with."""
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
        extra = self._node_scores(pod, [n.index for n in feasible])
        if extra is not None:
            totals = [total + extra[n.index] for total, n in zip(totals, feasible, strict=True)]
        return list(zip(feasible, totals, strict=True))

    def _node_scores(self, pod: Pod, feasible: list[int]) -> dict[int, int] | None:
        """The weighted InterPodAffinity and ImageLocality scores of the feasible nodes (by index),
        or None when both are 0 everywhere: they read a node's own labels and images, so nodes
        alike in everything else may differ in them."""
        nodes, weights = self.cluster.nodes, self.weights
        result: dict[int, int] | None = None
        inter_pod = weights.get(INTER_POD_AFFINITY)
        if inter_pod:
            topology = inter_pod_scores(pod, self._placed_for(pod))
            if topology:
                raw = [inter_pod_score(topology, nodes[i].node.metadata.labels) for i in feasible]
                normalized = normalize_min_max(raw)
                result = {i: inter_pod * score for i, score in zip(feasible, normalized, strict=True)}
        locality = weights.get(IMAGE_LOCALITY)
        if locality:
            images = [c.image for c in (*pod.spec.init_containers, *pod.spec.containers)]
            # Only the nodes holding one of its images: any other scores 0 (under the 23 MB floor).
            scored = {i for image in images for i in self._image_holders.get(normalized_image(image), ())}
            scored.intersection_update(feasible)
            if scored:
                result = result if result is not None else dict.fromkeys(feasible, 0)
                total, node_images, nodes_with = len(nodes), self._node_images, self._nodes_with_image
                for i in scored:
                    result[i] += locality * image_locality(images, node_images[i], nodes_with, total)
        return result

    def _placed_for(self, pod: Pod) -> list[tuple[Pod, dict[str, str]]]:
        """The pods InterPodAffinity reads for this one, with their nodes' labels: every pod when it has
        preferred terms of its own, else those whose terms may select it."""
        if own_preferred_terms(pod):
            return [(other, n.node.metadata.labels) for n in self.cluster.nodes for other in n.pods]
        if not self.cluster.affinity_scorers:  # the common case: no pod has such terms
            return []
        return [(other, n.node.metadata.labels) for n in self.cluster.nodes for other in n.scorers]

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

    # --- the grouped path's classes and per-node verdicts -------------------------------------------

    def _fleet(self, pod: Pod, placement: Placement, spread: _Spread | None) -> _Fleet:
        tolerations = pod.spec.tolerations
        takes_cordoned = any(tolerates(t, _UNSCHEDULABLE) for t in tolerations)
        takes_not_ready = any(tolerates(t, _NOT_READY) for t in tolerations)
        keys = tuple(key for key, _ in spread.constraints) if spread is not None else ()
        fleet_key = (placement, takes_cordoned, takes_not_ready, keys)
        fleet = self._fleets.get(fleet_key)
        if fleet is not None:
            return fleet
        fleet = self._fleets[fleet_key] = _Fleet([], [-1] * len(self.cluster.nodes), [], [], [])
        class_ids: dict[tuple, int] = {}
        for node in self.cluster.nodes:
            index = node.index
            if (node.node.spec.unschedulable and not takes_cordoned) \
                    or (not takes_not_ready and not self._ready[index]) or not placement.fits(index):
                continue
            labels = node.node.metadata.labels
            # Spreading reads a node's domains, and of its hostname only whether it has one.
            domains = tuple(key in labels if key == HOSTNAME_KEY else labels.get(key) for key in keys)
            class_key = (placement.score(index), self._prefer_class[index], domains)
            class_id = class_ids.get(class_key)
            if class_id is None:
                class_id = class_ids[class_key] = len(fleet.members)
                fleet.members.append([])
                fleet.affinity.append(class_key[0])
                fleet.prefer.append(class_key[1])
                fleet.representative.append(node)
            fleet.members[class_id].append(index)
            fleet.class_of[index] = class_id
        return fleet

    def _feasible_by_class(self, pod: Pod, requests: Resources, ports: tuple[HostPort, ...],
                           source: NodeState, placement: Placement, pinned: bool,
                           fleet: _Fleet) -> dict[int, list[int]]:
        """The fleet's nodes that take the pod now, by class (the filters of `_feasible`)."""
        room = self._room(requests).values
        blocker, nodes = self.cluster.blocker, self.cluster.nodes
        by_class: dict[int, list[int]] = {}
        if pinned or ports or hostname_anti_affinity(pod):
            # The pod's own ports, domains or anti-affinity decide: ask about every node with room.
            for class_id, members in enumerate(fleet.members):
                feasible = [i for i in members if room[i] != _SHORT
                            and blocker(pod, requests, ports, source, nodes[i], pinned) is None]
                if feasible:
                    by_class[class_id] = feasible
            return by_class
        for class_id, members in enumerate(fleet.members):
            feasible = [i for i in members if room[i] == _ROOM]
            if feasible:
                by_class[class_id] = feasible
        for index, verdict in enumerate(room):
            if verdict == _ASK and fleet.class_of[index] >= 0 \
                    and blocker(pod, requests, ports, source, nodes[index], pinned) is None:
                by_class.setdefault(fleet.class_of[index], []).append(index)
        return by_class

    def _room(self, requests: Resources) -> _PerNode:
        """Per node, whether it has room for these requests (`_SHORT`, `_ROOM` or `_ASK`)."""
        def verdict(node: NodeState) -> int:
            if node.nominated or node.repellers:
                return _ASK
            return _SHORT if shortfall(requests, node.free) else _ROOM

        return self._per_node(self._rooms, requests, verdict)

    def _resource_score_of(self, pod: Pod, requests: Resources) -> _PerNode:
        """Per node, the weighted NodeResourcesFit and NodeResourcesBalancedAllocation scores."""
        weights = self.weights
        cpu, memory = scoring_requests(pod, requests)
        fit = weights.get(NODE_RESOURCES_FIT) or 0
        # Best-effort pods skip balanced allocation (1.32+, kubernetes#129138).
        balance = (weights.get(BALANCED_ALLOCATION) or 0) if requests.cpu or requests.memory else 0

        def score(node: NodeState) -> int:
            total = 0
            if fit:
                total += fit * least_allocated((node.scoring_cpu + cpu, node.allocatable.cpu),
                                               (node.scoring_memory + memory, node.allocatable.memory))
            if balance:
                allocatable, free = node.allocatable, node.free
                total += balance * balanced_allocation(
                    (allocatable.cpu - free.cpu + requests.cpu, allocatable.cpu),
                    (allocatable.memory - free.memory + requests.memory, allocatable.memory))
            return total

        key = (cpu, memory, requests.cpu, requests.memory, fit, balance)
        return self._per_node(self._resource_scores, key, score)

    def _per_node(self, cache: dict, key: object, verdict: Callable[[NodeState], int]) -> _PerNode:
        """The cached verdicts for `key`, refreshed on the nodes moves changed since (or made)."""
        nodes, changed = self.cluster.nodes, self.cluster.changed
        kept = cache.get(key)
        if kept is None:
            kept = cache[key] = _PerNode([verdict(node) for node in nodes], len(changed))
        elif kept.seen < len(changed):
            for index in set(changed[kept.seen:]):
                kept.values[index] = verdict(nodes[index])
            kept.seen = len(changed)
        return kept

    # --- topology spread ----------------------------------------------------------------------

    def _spread_scores(self, pod: Pod, source: NodeState, placement: Placement,
                       feasible: list[NodeState]) -> list[int] | None:
        spread = _soft_constraints(pod)
        if spread is None:
            return None  # the plugin skips the pod: every node scores 0
        counts = self._counts(pod, source, spread)
        if counts is None:
            return None
        own_counts = [[per_node.get(n.index, 0) for per_node in counts] for n in feasible]
        return spread_scores(spread.constraints, [n.node.metadata.labels for n in feasible], own_counts,
                             self._domain_counts(pod, placement, spread, counts), spread.require_all)

    def _grouped_spread_scores(self, pod: Pod, placement: Placement, spread: _Spread,
                               counts: list[dict[int, int]], fleet: _Fleet,
                               entries: list[tuple[int, list[int]]]) -> list[int]:
        """`_spread_scores` of the entries: a class's nodes hold none of the pods counted by node."""
        labels, own_counts = [], []
        for class_id, members in entries:
            if len(members) > 1:
                labels.append(fleet.representative[class_id].node.metadata.labels)
                own_counts.append([0] * len(counts))
            else:
                labels.append(self.cluster.nodes[members[0]].node.metadata.labels)
                own_counts.append([per_node.get(members[0], 0) for per_node in counts])
        return spread_scores(spread.constraints, labels, own_counts,
                             self._domain_counts(pod, placement, spread, counts), spread.require_all,
                             [len(members) for _, members in entries])

    def _domain_counts(self, pod: Pod, placement: Placement, spread: _Spread,
                       counts: list[dict[int, int]]) -> list[Counter[str]]:
        """Per constraint, the pods it selects per domain over the nodes it counts."""
        constraints = spread.constraints
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
        return domain_counts

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
            selector = spread_selector(pod, constraint)
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


def _selector_key(selector: LabelSelector | None) -> object:
    if selector is None:
        return None
    return (tuple(sorted(selector.match_labels.items())),
            tuple((r.key, r.operator, tuple(r.values)) for r in selector.match_expressions))
