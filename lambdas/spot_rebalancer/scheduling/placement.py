"""Affinity scores and static fit of pods over a fleet, computed once per kind of pod and node.

Pods of one workload share their node selector, node affinity and tolerations (their scheduling
signature), and nodes of one group share the few labels those read and their taints. So verdicts are
memoised per signature and per class of nodes that look alike to it: a 5,000-node fleet is usually a
handful of classes, and a 150,000-pod cluster a few thousand signatures.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from ..objects import Node, Pod
from .node_affinity import fits_required, preferred_score, referenced_node_keys
from .taints import BLOCKING_EFFECTS, untolerated_taint

_encode = msgspec.json.encode


class _NodeClasses:
    """Nodes grouped by their values for some label keys (and name, when read) and their taints."""

    __slots__ = ("eligible_members", "node_class", "representatives")

    def __init__(self, nodes: Sequence[Node], eligible: Sequence[bool], taint_class: Sequence[int],
                 keys: tuple[str, ...], uses_name: bool) -> None:
        ids: dict[tuple, int] = {}
        self.node_class: list[int] = []
        self.representatives: list[int] = []
        self.eligible_members: list[list[int]] = []
        for index, node in enumerate(nodes):
            labels = node.metadata.labels
            key = (tuple(labels.get(k) for k in keys), node.metadata.name if uses_name else None,
                   taint_class[index])
            class_id = ids.get(key)
            if class_id is None:
                class_id = ids[key] = len(self.representatives)
                self.representatives.append(index)
                self.eligible_members.append([])
            self.node_class.append(class_id)
            if eligible[index]:
                self.eligible_members[class_id].append(index)


class Placement:
    """One scheduling signature's view of the fleet: each node's preferred score and whether the
    node passes its node selector, required node affinity and taints."""

    __slots__ = ("_class_affinity", "_class_fits", "_class_score", "_classes", "_levels", "best_score")

    def __init__(self, pod: Pod, nodes: Sequence[Node], classes: _NodeClasses) -> None:
        self._classes = classes
        self._class_affinity: list[bool] = []
        self._class_fits: list[bool] = []
        self._class_score: list[int] = []
        for index in classes.representatives:
            node = nodes[index]
            affinity = fits_required(pod, node)
            self._class_affinity.append(affinity)
            self._class_fits.append(affinity and untolerated_taint(pod.spec.tolerations,
                                                                   node.spec.taints) is None)
            self._class_score.append(preferred_score(pod, node))
        reachable = [self._class_score[c] for c, members in enumerate(classes.eligible_members)
                     if members and self._class_fits[c]]
        # The highest score among eligible nodes the pod may run on (None: there is none).
        self.best_score: int | None = max(reachable) if reachable else None
        self._levels: list[tuple[int, list[int]]] | None = None

    def score(self, node_index: int) -> int:
        return self._class_score[self._classes.node_class[node_index]]

    def fits(self, node_index: int) -> bool:
        return self._class_fits[self._classes.node_class[node_index]]

    def matches_affinity(self, node_index: int) -> bool:
        """The node selector and required node affinity alone, taints aside (what topology spread
        counts under its default nodeAffinityPolicy Honor and nodeTaintsPolicy Ignore)."""
        return self._class_affinity[self._classes.node_class[node_index]]

    def levels_above(self, score: int) -> list[tuple[int, list[int]]]:
        """Eligible nodes the pod may run on that score more than `score`, grouped by score, best
        first; node indices ascending within a group."""
        if self._levels is None:
            by_score: dict[int, list[int]] = {}
            for class_id, members in enumerate(self._classes.eligible_members):
                if members and self._class_fits[class_id]:
                    by_score.setdefault(self._class_score[class_id], []).extend(members)
            self._levels = sorted(((s, sorted(m)) for s, m in by_score.items()), reverse=True)
        return [(s, members) for s, members in self._levels if s > score]


class PlacementIndex:
    """Placements of pods over a fixed list of nodes; `eligible[i]` says whether node i may receive
    pods at all (see `eligibility`)."""

    def __init__(self, nodes: Sequence[Node], eligible: Sequence[bool]) -> None:
        if len(eligible) != len(nodes):
            raise ValueError("eligible must have one entry per node")
        self.nodes = nodes
        self._eligible = eligible
        taint_ids: dict[tuple, int] = {}
        self._taint_class = [
            taint_ids.setdefault(tuple(sorted((t.key, t.value, t.effect) for t in n.spec.taints
                                              if t.effect in BLOCKING_EFFECTS)), len(taint_ids))
            for n in nodes]
        self._classes: dict[tuple[tuple[str, ...], bool], _NodeClasses] = {}
        self._placements: dict[bytes, Placement] = {}

    def placement(self, pod: Pod) -> Placement:
        """The pod's placement; raises SelectorError when its node affinity is invalid."""
        spec = pod.spec
        affinity = spec.affinity.node_affinity if spec.affinity is not None else None
        signature = _encode((affinity, spec.node_selector, spec.tolerations))
        placement = self._placements.get(signature)
        if placement is None:
            keys, uses_name = referenced_node_keys(pod)
            class_key = (tuple(sorted(keys)), uses_name)
            classes = self._classes.get(class_key)
            if classes is None:
                classes = self._classes[class_key] = _NodeClasses(
                    self.nodes, self._eligible, self._taint_class, *class_key)
            placement = self._placements[signature] = Placement(pod, self.nodes, classes)
        return placement
