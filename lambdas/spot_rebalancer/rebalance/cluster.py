"""The cluster as the planner simulates it: each node's free room, pods, host ports and repelling
pods, and the room pending pods nominated to it hold, built in one pass over the snapshot and
updated as moves are planned.

A planned move adds the replacement to its target but leaves the evicted pod on its source: every
move of a cycle is evicted at once, and the scheduler counts an evicted pod's requests, ports and
anti-affinity until it is gone, so no later move may count on the room an earlier one frees."""

from __future__ import annotations

import enum
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import msgspec

from ..objects import Node, Pod
from ..scheduling.capacity_type import ON_DEMAND, capacity_type
from ..scheduling.eligibility import ineligibility
from ..scheduling.interpod import (
    anti_affinity_conflict,
    hostname_anti_affinity,
    scoring_terms,
    wide_anti_affinity,
)
from ..scheduling.node_affinity import fits_required
from ..scheduling.ports import HostPort, host_ports, port_conflict
from ..scheduling.resources import (
    ZERO,
    Resources,
    held_requests,
    is_terminal,
    node_allocatable,
    scoring_requests,
    shortfall,
)
from ..scheduling.spread import HardSpread, counts_node, hard_constraints, matching_pods, skew_allows
from ..scheduling.volume_zone import bound_volumes, zone_allows
from ..snapshot import ClusterSnapshot
from .workloads import WorkloadRef, workload_of

NODEGROUP_LABEL = "eks.amazonaws.com/nodegroup"
_encode = msgspec.json.encode


class NodeGroup(NamedTuple):
    """Where more nodes like one would come from, for the capacity nudge."""

    kind: str  # "asg" (an Auto Scaling group name the shell passed in) or "nodegroup" (EKS)
    name: str


class BlockerKind(enum.Enum):
    INSUFFICIENT = "insufficient"  # too little of a resource: more nodes would help
    VOLUME_ZONE = "volume zone"
    TOPOLOGY_SPREAD = "topology spread"
    HOST_PORT = "host port in use"
    ANTI_AFFINITY = "pod anti-affinity"
    NOT_ON_DEMAND = "not on-demand"  # a floor keeps the pod on on-demand


class Blocker(NamedTuple):
    """Why a node does not take a pod now."""

    kind: BlockerKind
    resource: str = ""  # the resource that is short, for INSUFFICIENT

    @property
    def more_room_helps(self) -> bool:
        return self.kind is BlockerKind.INSUFFICIENT

    def __str__(self) -> str:
        return f"insufficient {self.resource}" if self.more_room_helps else self.kind.value


def insufficient(resource: str) -> Blocker:
    return Blocker(BlockerKind.INSUFFICIENT, resource)


@dataclass(slots=True)
class _SpreadCounts:
    """For one kind of pod's DoNotSchedule constraints, the pods each counts, as of `seen` entries
    of `ClusterState.recounted`."""

    per_node: list[list[int]]  # per constraint, per node index: its matching pods (-1: not counted)
    domains: list[dict[str, int]]  # per constraint, per domain: its matching pods
    seen: int
    smallest: dict[int, int] = field(default_factory=dict)  # per constraint: its smallest domain's pods

    def least(self, k: int) -> int:
        least = self.smallest.get(k)
        if least is None:
            least = self.smallest[k] = min(self.domains[k].values(), default=0)
        return least


@dataclass(eq=False, slots=True)
class NodeState:
    index: int
    node: Node
    eligible: bool
    capacity_type: str
    group: NodeGroup | None  # for the capacity nudge
    free: Resources
    allocatable: Resources = ZERO
    daemon_requests: Resources = ZERO  # what DaemonSet pods take: a new node of its group pays it too
    pods: list[Pod] = field(default_factory=list)  # non-terminal pods bound here
    ports: list[HostPort] = field(default_factory=list)
    repellers: list[Pod] = field(default_factory=list)  # pods here with hostname anti-affinity
    scorers: list[Pod] = field(default_factory=list)  # pods here with terms InterPodAffinity's score weighs
    # Pending pods nominated to this node by preemption: (priority, requests). The scheduler holds
    # their room against pods of no higher priority.
    nominated: list[tuple[int, Resources]] = field(default_factory=list)
    # CPU and memory as the scheduler's resource scores count its pods (requests defaulted).
    scoring_cpu: int = 0
    scoring_memory: int = 0

    def room_for(self, priority: int) -> Resources:
        """The free room a pod of this priority may take."""
        free = self.free
        for nominated_priority, requests in self.nominated:
            if nominated_priority >= priority:
                free = free - requests
        return free

    @property
    def name(self) -> str:
        return self.node.metadata.name


class ClusterState:
    def __init__(self, snapshot: ClusterSnapshot, lifecycle_label: str,
                 node_groups: Mapping[str, str] | None = None) -> None:
        node_groups = node_groups or {}
        self.nodes = [
            NodeState(index=i, node=n, eligible=ineligibility(n) is None,
                      capacity_type=capacity_type(n, lifecycle_label),
                      group=_node_group(n, node_groups),
                      free=node_allocatable(n), allocatable=node_allocatable(n))
            for i, n in enumerate(snapshot.nodes)]
        self.by_name = {n.name: n for n in self.nodes}
        self.volumes = bound_volumes(snapshot.pvs, snapshot.pvcs)
        # Per workload: live replicas, and those Ready on on-demand nodes (what a floor protects).
        self.replicas: Counter[WorkloadRef] = Counter()
        self.on_demand: Counter[WorkloadRef] = Counter()
        # Pods with required anti-affinity over zones or wider: pods they select are not moved.
        self.wide_repellers: list[Pod] = []
        # Pods whose pod affinity terms InterPodAffinity's score weighs: pods they select are not moved.
        self.affinity_scorers: list[Pod] = []
        # Bumped by every simulated move, so cached "no room" verdicts know when they are stale.
        self.version = 0
        # The node whose room each simulated move (or undo) changed, in order: caches of per-node
        # verdicts refresh only the nodes changed since they were made.
        self.changed: list[int] = []
        # Per controller, the pods topology spread counts on each node (by index): running or
        # pending there, not being deleted; a move takes one from its source and adds it to its
        # target. The scheduler's default spreading selects a pod's ReplicaSet or StatefulSet.
        self.spread_counts: defaultdict[WorkloadRef, Counter[int]] = defaultdict(Counter)
        # Pods evicted by the moves planned so far, with their source's index: still on the node
        # for room, ports and anti-affinity, no longer counted for spreading.
        self.evicted: set[tuple[int, int]] = set()
        # The nodes whose pods each move (or undo) changed for spreading, source and target, in order:
        # the DoNotSchedule counts recount only those.
        self.recounted: list[int] = []
        self._spread_counts: dict[tuple, _SpreadCounts] = {}
        # What each node's pods hold, taken from its room in one sum once all are read.
        held: list[list[Resources]] = [[] for _ in self.nodes]
        for pod in snapshot.pods:
            if is_terminal(pod):
                continue
            workload = workload_of(pod)
            state = self.by_name.get(pod.spec.node_name)
            if state is None and pod.status.nominated_node_name:
                nominee = self.by_name.get(pod.status.nominated_node_name)
                if nominee is not None and pod.metadata.deletion_timestamp is None:
                    nominee.nominated.append((pod.spec.priority or 0, held_requests(pod)))
            if workload is not None and pod.metadata.deletion_timestamp is None:
                self.replicas[workload] += 1
                if state is not None and state.capacity_type == ON_DEMAND and pod.ready:
                    self.on_demand[workload] += 1
            if state is None:
                continue
            if workload is not None and pod.metadata.deletion_timestamp is None:
                self.spread_counts[workload][state.index] += 1
            requests = held_requests(pod)
            held[state.index].append(requests)
            self._admit(pod, requests, host_ports(pod), state)
            affinity = pod.spec.affinity  # most pods have no pod (anti-)affinity at all
            if affinity is not None and (affinity.pod_affinity is not None
                                         or affinity.pod_anti_affinity is not None):
                if wide_anti_affinity(pod):
                    self.wide_repellers.append(pod)
                if scoring_terms(pod):
                    self.affinity_scorers.append(pod)
            if workload is not None and workload.kind == "DaemonSet":
                state.daemon_requests = state.daemon_requests + requests
        for state, requests_held in zip(self.nodes, held, strict=True):
            state.free = state.free - Resources.total(requests_held)

    @classmethod
    def _place(cls, pod: Pod, requests: Resources, ports: tuple[HostPort, ...], state: NodeState) -> None:
        state.free = state.free - requests
        cls._admit(pod, requests, ports, state)

    @staticmethod
    def _admit(pod: Pod, requests: Resources, ports: tuple[HostPort, ...], state: NodeState) -> None:
        """`_place` but for the room the pod takes."""
        cpu, memory = scoring_requests(pod, requests)
        state.scoring_cpu += cpu
        state.scoring_memory += memory
        state.pods.append(pod)
        state.ports.extend(ports)
        if pod.spec.affinity is not None:
            if hostname_anti_affinity(pod):
                state.repellers.append(pod)
            if scoring_terms(pod):
                state.scorers.append(pod)

    @staticmethod
    def _unplace(pod: Pod, requests: Resources, ports: tuple[HostPort, ...], state: NodeState) -> None:
        """Undo `_place`."""
        state.free = state.free + requests
        cpu, memory = scoring_requests(pod, requests)
        state.scoring_cpu -= cpu
        state.scoring_memory -= memory
        state.pods.remove(pod)
        for port in ports:
            state.ports.remove(port)
        if pod in state.repellers:
            state.repellers.remove(pod)
        if pod in state.scorers:
            state.scorers.remove(pod)

    def blocker(self, pod: Pod, requests: Resources, ports: tuple[HostPort, ...], source: NodeState,
                target: NodeState, pinned: bool) -> Blocker | None:
        """Why the pod cannot go from source to target as things stand, or None when it fits. The
        node's eligibility and the pod's affinity and tolerations are the placement's business;
        `pinned` says whether volume claims or DoNotSchedule spread constraints are to be checked."""
        if pinned and not zone_allows(pod, source.node, target.node, self.volumes):
            return Blocker(BlockerKind.VOLUME_ZONE)
        if pinned and not self.spread_allows(pod, source, target):
            return Blocker(BlockerKind.TOPOLOGY_SPREAD)
        short = shortfall(requests, target.room_for(pod.spec.priority or 0))
        if short:
            return insufficient(short[0])
        if ports and port_conflict(ports, target.ports) is not None:
            return Blocker(BlockerKind.HOST_PORT)
        neighbours = target.pods if hostname_anti_affinity(pod) else target.repellers
        if neighbours and anti_affinity_conflict(pod, neighbours) is not None:
            return Blocker(BlockerKind.ANTI_AFFINITY)
        return None

    def spread_allows(self, pod: Pod, source: NodeState, target: NodeState) -> bool:
        """Whether the pod's DoNotSchedule constraints let its replacement go to target, counted with
        the moves planned so far and the pod itself gone from source (an evicted pod terminates)."""
        constraints = hard_constraints(pod)
        if not constraints:
            return True
        counts = self._spread_counts_of(pod, constraints)
        for k, constraint in enumerate(constraints):
            value = target.node.metadata.labels.get(constraint.topology_key)
            if value is None:
                return False
            domains = counts.domains[k]
            count, least = domains.get(value, 0), counts.least(k)
            if constraint.self_match and counts.per_node[k][source.index] > 0:
                leaving = source.node.metadata.labels[constraint.topology_key]
                count -= leaving == value
                least = min(least, domains[leaving] - 1)
            if not skew_allows(constraint, count, least, len(domains)):
                return False
        return True

    def _spread_counts_of(self, pod: Pod, constraints: tuple[HardSpread, ...]) -> _SpreadCounts:
        """The counts for pods alike in what they read (namespace, selectors, policies and what the
        policies look at), kept and refreshed on the nodes moves changed since."""
        spec = pod.spec
        honors_affinity = any(c.honors_affinity for c in constraints)
        honors_taints = any(c.honors_taints for c in constraints)
        counted = [(c.topology_key, c.selector, c.honors_affinity, c.honors_taints) for c in constraints]
        key = (pod.metadata.namespace, _encode(counted),
               _encode((spec.node_selector, spec.affinity and spec.affinity.node_affinity))
               if honors_affinity else None,
               _encode(spec.tolerations) if honors_taints else None)
        namespace, nodes = pod.metadata.namespace, self.nodes
        kept = self._spread_counts.get(key)
        if kept is None:
            affinity = [fits_required(pod, n.node) if honors_affinity else True for n in nodes]
            per_node = [[matching_pods(c, namespace, self._counted_pods(n))
                         if counts_node(c, constraints, pod, n.node, affinity[n.index]) else -1
                         for n in nodes] for c in constraints]
            domains: list[dict[str, int]] = []
            for c, counts in zip(constraints, per_node, strict=True):
                by_domain: dict[str, int] = {}
                for n, count in zip(nodes, counts, strict=True):
                    if count >= 0:
                        value = n.node.metadata.labels[c.topology_key]
                        by_domain[value] = by_domain.get(value, 0) + count
                domains.append(by_domain)
            kept = self._spread_counts[key] = _SpreadCounts(per_node, domains, len(self.recounted))
        elif kept.seen < len(self.recounted):
            for index in set(self.recounted[kept.seen:]):
                node = nodes[index]
                for c, counts, by_domain in zip(constraints, kept.per_node, kept.domains, strict=True):
                    if counts[index] >= 0:
                        count = matching_pods(c, namespace, self._counted_pods(node))
                        by_domain[node.node.metadata.labels[c.topology_key]] += count - counts[index]
                        counts[index] = count
            kept.seen = len(self.recounted)
            kept.smallest.clear()
        return kept

    def _counted_pods(self, node: NodeState) -> list[Pod]:
        """The node's pods less those the moves planned so far evicted from it."""
        evicted, index = self.evicted, node.index
        return [p for p in node.pods if (id(p), index) not in evicted] if evicted else node.pods

    def move(self, pod: Pod, requests: Resources, ports: tuple[HostPort, ...], source: NodeState,
             target: NodeState) -> None:
        """Simulate the pod's replacement running on target; the evicted pod stays on source."""
        self._place(pod, requests, ports, target)
        self.changed.append(target.index)
        self.evicted.add((id(pod), source.index))
        self.recounted.extend((source.index, target.index))
        self._count_move(pod, source, target)

    def undo_move(self, pod: Pod, requests: Resources, ports: tuple[HostPort, ...], source: NodeState,
                  target: NodeState) -> None:
        """Take back `move`: the replacement leaves target, the pod is no longer evicted."""
        self._unplace(pod, requests, ports, target)
        self.changed.append(target.index)
        self.evicted.discard((id(pod), source.index))
        self.recounted.extend((source.index, target.index))
        self._count_move(pod, target, source)

    def _count_move(self, pod: Pod, source: NodeState, target: NodeState) -> None:
        workload = workload_of(pod)
        if workload is not None:
            counts = self.spread_counts[workload]
            counts[source.index] -= 1
            counts[target.index] += 1
        if workload is not None and pod.ready:
            self.on_demand[workload] += ((target.capacity_type == ON_DEMAND)
                                         - (source.capacity_type == ON_DEMAND))
        self.version += 1


def _node_group(node: Node, node_groups: Mapping[str, str]) -> NodeGroup | None:
    """The Auto Scaling group the shell named for the node, else its EKS node group label."""
    asg = node_groups.get(node.metadata.name)
    if asg:
        return NodeGroup("asg", asg)
    nodegroup = node.metadata.labels.get(NODEGROUP_LABEL)
    return NodeGroup("nodegroup", nodegroup) if nodegroup else None
