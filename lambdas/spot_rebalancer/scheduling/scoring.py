"""The default scheduler profile's score plugins (kube-scheduler 1.31+), with their normalisation.

Each plugin gives a feasible node a raw score, normalised over all feasible nodes to 0-100 and
multiplied by the plugin's weight; the node with the highest sum wins, ties broken at random. The
arithmetic is the scheduler's: int64 division, truncation where it truncates and Go's rounding
(half away from zero) where it rounds, so that ties come out as ties. What each function takes is
what the plugin reads; `rebalance.prediction` feeds them the simulated cluster.

Modelled: TaintToleration (PreferNoSchedule taints), NodeAffinity (preferred terms), PodTopologySpread
(ScheduleAnyway constraints, or the system defaults), InterPodAffinity (preferred terms both ways and
other pods' required affinity), NodeResourcesFit (LeastAllocated over CPU and memory, weight 1
each), NodeResourcesBalancedAllocation and ImageLocality (the images in the nodes' status).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from ..objects import Node, Pod, PodAffinityTerm, Taint, Toleration
from .interpod import own_preferred_terms, term_selects, weighted_terms
from .taints import tolerates

MAX_NODE_SCORE = 100

TAINT_TOLERATION = "TaintToleration"
NODE_AFFINITY = "NodeAffinity"
POD_TOPOLOGY_SPREAD = "PodTopologySpread"
NODE_RESOURCES_FIT = "NodeResourcesFit"
BALANCED_ALLOCATION = "NodeResourcesBalancedAllocation"
INTER_POD_AFFINITY = "InterPodAffinity"
IMAGE_LOCALITY = "ImageLocality"
# The system default spread constraints (ScheduleAnyway) for pods without their own.
HOSTNAME_KEY = "kubernetes.io/hostname"
ZONE_KEY = "topology.kubernetes.io/zone"
SYSTEM_DEFAULT_SPREAD = ((HOSTNAME_KEY, 3), (ZONE_KEY, 5))


def intolerable_preferences(tolerations: Sequence[Toleration], taints: Iterable[Taint]) -> int:
    """TaintToleration's raw score: the node's PreferNoSchedule taints that none of the pod's
    tolerations with an empty or PreferNoSchedule effect tolerates."""
    preferring = [t for t in tolerations if t.effect in ("", "PreferNoSchedule")]
    return sum(1 for taint in taints
               if taint.effect == "PreferNoSchedule" and not any(tolerates(t, taint) for t in preferring))


def least_requested(requested: int, capacity: int) -> int:
    """One resource's share left free on a 0-100 scale (0 when over capacity or none)."""
    if capacity == 0 or requested > capacity:
        return 0
    return (capacity - requested) * MAX_NODE_SCORE // capacity


def least_allocated(cpu: tuple[int, int], memory: tuple[int, int]) -> int:
    """NodeResourcesFit's LeastAllocated score from (requested, allocatable) of CPU and memory, each
    of weight 1; requested counts the node's pods and the incoming one with the non-zero defaults."""
    return (least_requested(*cpu) + least_requested(*memory)) // 2


def balanced_allocation(cpu: tuple[int, int], memory: tuple[int, int]) -> int:
    """NodeResourcesBalancedAllocation from (requested, allocatable) of CPU and memory (requests as
    given, no defaults): 100 times one minus the standard deviation of the used fractions, each
    capped at 1; a resource the node has none of is left out."""
    fractions = [min(requested / allocatable, 1.0) for requested, allocatable in (cpu, memory)
                 if allocatable != 0]
    deviation = abs(fractions[0] - fractions[1]) / 2 if len(fractions) == 2 else 0.0
    return int((1 - deviation) * MAX_NODE_SCORE)


def normalize(scores: Sequence[int], reverse: bool = False) -> list[int]:
    """The scheduler's DefaultNormalizeScore: scale to 0-100 by the highest score, reversed on
    request; all zero stays zero (or becomes 100 reversed)."""
    highest = max(scores, default=0)
    if highest == 0:
        return [MAX_NODE_SCORE if reverse else 0 for _ in scores]
    scaled = [MAX_NODE_SCORE * s // highest for s in scores]
    return [MAX_NODE_SCORE - s for s in scaled] if reverse else scaled


def topology_weight(domains: int) -> float:
    """How much a pod counts in a topology of that many domains (smaller ones are not watered down)."""
    return math.log(domains + 2)


def go_round(value: float) -> int:
    """math.Round in Go: halves away from zero (Python's round goes to even)."""
    return math.floor(value + 0.5) if value >= 0 else -math.floor(-value + 0.5)


def spread_score(counts: Iterable[tuple[int, int, float]]) -> int:
    """PodTopologySpread's raw score of a node from, per constraint whose key the node has, the
    matching pods in its domain, the constraint's maxSkew and its topology's weight."""
    return go_round(sum(count * weight + (max_skew - 1) for count, max_skew, weight in counts))


def normalize_spread(scores: Sequence[int | None]) -> list[int]:
    """PodTopologySpread's normalisation: fewer matching pods score higher; nodes left out of the
    counting (None: missing a constraint's key) score 0."""
    counted = [s for s in scores if s is not None]
    if not counted:
        return [0 for _ in scores]
    lowest, highest = min(counted), max(counted)
    if highest == 0:
        return [0 if s is None else MAX_NODE_SCORE for s in scores]
    return [0 if s is None else MAX_NODE_SCORE * (highest + lowest - s) // highest for s in scores]


def spread_scores(constraints: Sequence[tuple[str, int]], labels: Sequence[Mapping[str, str]],
                  own_counts: Sequence[Sequence[int]], domain_counts: Sequence[Mapping[str, int]],
                  require_all: bool, repeats: Sequence[int] | None = None) -> list[int]:
    """PodTopologySpread's normalised scores of the feasible nodes.

    `constraints` are the pod's ScheduleAnyway (topology key, maxSkew) pairs, `labels` each feasible
    node's labels, `own_counts[i][k]` the pods constraint k selects on feasible node i (what a
    hostname constraint reads) and `domain_counts[k]` the pods it selects per domain over every node
    it counts. With `require_all` (a pod's own constraints, not the system defaults) a node missing
    one of the keys is left out. A topology's weight grows with its domains among the feasible
    nodes (a node without the key counting as the domain ""). With `repeats`, entry i stands for
    repeats[i] feasible nodes alike in their labels and own counts (scored once, counted each).
    """
    ignored = [require_all and any(key not in node for key, _ in constraints) for node in labels]
    counted = [node for node, left_out in zip(labels, ignored, strict=True) if not left_out]
    hosts = len(counted) if repeats is None else sum(n for n, out in zip(repeats, ignored, strict=True)
                                                     if not out)
    weights = [topology_weight(hosts if key == HOSTNAME_KEY else len({node.get(key, "") for node in counted}))
               for key, _ in constraints]
    raw: list[int | None] = []
    for index, node in enumerate(labels):
        if ignored[index]:
            raw.append(None)
            continue
        parts = []
        for k, (key, max_skew) in enumerate(constraints):
            value = node.get(key)
            if value is not None:
                count = own_counts[index][k] if key == HOSTNAME_KEY else domain_counts[k].get(value, 0)
                parts.append((count, max_skew, weights[k]))
        raw.append(spread_score(parts))
    return normalize_spread(raw)


# --- InterPodAffinity -------------------------------------------------------------------------------

TopologyScores = dict[str, dict[str, int]]  # topology key -> its value -> score


def inter_pod_scores(pod: Pod, placed: Iterable[tuple[Pod, Mapping[str, str]]]) -> TopologyScores:
    """InterPodAffinity's PreScore for the incoming pod over the placed pods (each with its node's
    labels; terminating ones included, as the scheduler keeps them): for each term that holds, its
    signed weight goes to the placed pod's node's value of the term's topology key. The terms are the
    incoming pod's preferred ones selecting the placed pod, and the placed pod's preferred ones and
    required affinity selecting the incoming pod."""
    own = own_preferred_terms(pod)
    namespace = pod.metadata.namespace
    scores: TopologyScores = {}

    def add(weight: int, term: PodAffinityTerm, labels: Mapping[str, str]) -> None:
        value = labels.get(term.topology_key)
        if value is not None:
            by_value = scores.setdefault(term.topology_key, {})
            by_value[value] = by_value.get(value, 0) + weight

    for other, labels in placed:
        if not labels:
            continue
        for weight, term in own:
            if term_selects(term, namespace, other):
                add(weight, term, labels)
        other_namespace = other.metadata.namespace
        for weight, term in weighted_terms(other):
            if term_selects(term, other_namespace, pod):
                add(weight, term, labels)
    return scores


def inter_pod_score(scores: TopologyScores, labels: Mapping[str, str]) -> int:
    """A node's raw InterPodAffinity score: what its values of the scored topology keys gathered."""
    return sum(by_value.get(labels[key], 0) for key, by_value in scores.items() if key in labels)


def normalize_min_max(scores: Sequence[int]) -> list[int]:
    """InterPodAffinity's normalisation: the lowest score (negative ones too) to 0, the highest to
    100, truncated; all alike gives 0."""
    if not scores:
        return []
    lowest, highest = min(scores), max(scores)
    spread = highest - lowest
    if spread <= 0:
        return [0 for _ in scores]
    return [int(MAX_NODE_SCORE * ((s - lowest) / spread)) for s in scores]


# --- ImageLocality ----------------------------------------------------------------------------------

_MB = 1024 * 1024
MIN_IMAGE_THRESHOLD = 23 * _MB
MAX_CONTAINER_IMAGE_THRESHOLD = 1000 * _MB


def normalized_image(name: str) -> str:
    """A container's image as ImageLocality looks it up: with ":latest" when it names no tag (the
    node's status names are not normalised, so "nginx" never meets "docker.io/library/nginx")."""
    return name if name.rfind(":") > name.rfind("/") else f"{name}:latest"


def image_index(nodes: Iterable[Node]) -> tuple[list[dict[str, int]], Counter[str]]:
    """The images in the nodes' status as ImageLocality reads them: per node its images' sizes by
    name, and on how many nodes each name is."""
    per_node: list[dict[str, int]] = []
    nodes_with: Counter[str] = Counter()
    for node in nodes:
        sizes = {name: image.size_bytes for image in node.status.images for name in image.names}
        per_node.append(sizes)
        nodes_with.update(sizes.keys())
    return per_node, nodes_with


def image_locality(images: Sequence[str], node_images: Mapping[str, int], nodes_with: Mapping[str, int],
                   total_nodes: int) -> int:
    """ImageLocality's score (not normalised further) of a node for a pod whose init and app
    containers run `images`: each image the node has (`node_images`: name -> size in bytes) counts
    its size times the share of all nodes that have it, the sum clamped between 23 MB and 1000 MB
    per container and scaled to 0-100."""
    total = 0
    for image in map(normalized_image, images):
        size = node_images.get(image)
        if size is not None:
            total += int(size * (nodes_with[image] / total_nodes))
    highest = MAX_CONTAINER_IMAGE_THRESHOLD * len(images)
    total = min(max(total, MIN_IMAGE_THRESHOLD), highest)
    return MAX_NODE_SCORE * (total - MIN_IMAGE_THRESHOLD) // (highest - MIN_IMAGE_THRESHOLD)
