"""The census: what the fleet is made of and how well pods sit on it, by capacity type and CPU
architecture.

A pod counts as misplaced when it has a preferred node affinity, runs (is bound, not terminal) on a
node of the snapshot, and scores lower there than the best score among eligible nodes (Ready,
schedulable, not being deleted, not tainted by spot-rebalancer) that its node selector, required
node affinity and tolerations admit. Room, host ports, anti-affinity and volume zones are ignored:
the census says how far the fleet is from what pods prefer, not what one cycle could fix.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..label_selector import SelectorError
from ..scheduling.capacity_type import LIFECYCLE_LABEL, SPOT, architecture, capacity_type
from ..scheduling.eligibility import ineligibility
from ..scheduling.node_affinity import preferred_terms
from ..scheduling.placement import PlacementIndex
from ..scheduling.resources import ZERO, Resources, is_terminal, node_allocatable, pod_requests
from ..snapshot import ClusterSnapshot
from .cost import FleetCost, PriceBook, fleet_cost


@dataclass(frozen=True, slots=True)
class CensusRow:
    capacity_type: str
    architecture: str
    nodes: int
    allocatable_cpu: int  # millicores
    allocatable_memory: int  # bytes
    requested_cpu: int  # millicores, by non-terminal pods bound to these nodes
    requested_memory: int  # bytes


@dataclass(frozen=True, slots=True)
class Census:
    rows: tuple[CensusRow, ...]  # sorted by capacity type, then architecture
    spot_cpu_share: float | None  # spot's share of requested CPU; None when nothing requests any
    pods_with_preferences: int  # running pods with a preferred node affinity
    misplaced_pods: int  # of those, the ones a better eligible node exists for
    cost: FleetCost | None = None  # with a price book


def census(snapshot: ClusterSnapshot, lifecycle_label: str = LIFECYCLE_LABEL,
           prices: PriceBook | None = None) -> Census:
    nodes = snapshot.nodes
    index_of = {n.metadata.name: i for i, n in enumerate(nodes)}
    requested = [ZERO] * len(nodes)
    placements = PlacementIndex(nodes, [ineligibility(n) is None for n in nodes])
    with_preferences = misplaced = 0
    for pod in snapshot.pods:
        index = index_of.get(pod.spec.node_name)
        if index is None or is_terminal(pod):
            continue
        requested[index] = requested[index] + pod_requests(pod)
        if preferred_terms(pod):
            with_preferences += 1
            try:
                placement = placements.placement(pod)
            except SelectorError:
                continue
            best = placement.best_score
            misplaced += best is not None and placement.score(index) < best

    groups: dict[tuple[str, str], tuple[int, Resources, Resources]] = {}
    for node, used in zip(nodes, requested, strict=True):
        key = (capacity_type(node, lifecycle_label), architecture(node))
        count, allocatable, total = groups.get(key, (0, ZERO, ZERO))
        groups[key] = (count + 1, allocatable + node_allocatable(node), total + used)
    rows = tuple(CensusRow(kind, arch, count, allocatable.cpu, allocatable.memory, used.cpu, used.memory)
                 for (kind, arch), (count, allocatable, used) in sorted(groups.items()))
    requested_cpu = sum(r.requested_cpu for r in rows)
    spot_cpu = sum(r.requested_cpu for r in rows if r.capacity_type == SPOT)
    cost = fleet_cost(nodes, prices, lifecycle_label) if prices is not None else None
    share = spot_cpu / requested_cpu if requested_cpu else None
    return Census(rows, share, with_preferences, misplaced, cost)
