"""The capacity nudge: how many nodes each preferred node group would need for the pods left with
nowhere better to go for lack of room.

The planner names, for each such pod, the group of the best-scoring better nodes that only lacked
room. A new node of that group is assumed to look like most of its nodes do: their allocatable minus
what their DaemonSet pods take. Pods are packed first-fit, largest first; the total is capped per
cycle. The shell decides whether to act on it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ..scheduling.resources import Resources, node_allocatable, shortfall
from .cluster import NodeGroup, NodeState


class RoomWanted(NamedTuple):
    group: NodeGroup
    requests: Resources


@dataclass(frozen=True, slots=True)
class CapacityRequest:
    group: NodeGroup
    nodes: int  # nodes to add
    pods: int  # pods that want to move there
    node_room: Resources  # what one new node is expected to offer


def new_node_room(nodes: Iterable[NodeState]) -> Resources | None:
    """What a fresh node of the group offers: the commonest allocatable-minus-DaemonSets among its
    nodes (the smaller one on a tie)."""
    shapes = Counter(node_allocatable(n.node) - n.daemon_requests for n in nodes)
    if not shapes:
        return None
    return min(shapes, key=lambda s: (-shapes[s], s.cpu, s.memory))


def nodes_needed(requests: Iterable[Resources], room: Resources, limit: int | None = None) -> int:
    """Bins of `room` needed for the requests, first-fit decreasing; requests bigger than an empty
    node are left out (no node of this group can take them). Counting stops past `limit`."""
    bins: list[Resources] = []
    for request in sorted(requests, key=lambda r: (r.cpu, r.memory), reverse=True):
        if shortfall(request, room):
            continue
        for i, free in enumerate(bins):
            if not shortfall(request, free):
                bins[i] = free - request
                break
        else:
            if limit is not None and len(bins) == limit:
                return limit + 1
            bins.append(room - request)
    return len(bins)


def capacity_requests(wanted: Sequence[RoomWanted], nodes: Sequence[NodeState],
                      cap: int) -> tuple[CapacityRequest, ...]:
    """Groups with the most waiting pods first; at most `cap` nodes in all."""
    by_group: dict[NodeGroup, list[Resources]] = {}
    for want in wanted:
        by_group.setdefault(want.group, []).append(want.requests)
    result = []
    for group in sorted(by_group, key=lambda g: (-len(by_group[g]), g)):
        room = new_node_room(n for n in nodes if n.group == group)
        if room is None:
            continue
        count = min(cap, nodes_needed(by_group[group], room, limit=cap))
        if count:
            result.append(CapacityRequest(group, count, len(by_group[group]), room))
            cap -= count
    return tuple(result)
