"""On-demand nodes the rebalancer emptied: which ones, and when each has settled long enough (only
DaemonSet and mirror pods left) to be scaled in. The fleet is cheaper only once they are gone."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..objects import Node, Pod
from ..pod_rules import PodRule, pod_rules
from ..scheduling.capacity_type import ON_DEMAND, capacity_type
from ..snapshot import ClusterSnapshot

# What may stay on a node that is empty for the fleet: pods that go with the node.
_LEFT_BEHIND = {PodRule.MIRROR, PodRule.DAEMONSET, PodRule.FINISHED}


@dataclass(frozen=True, slots=True)
class EmptiedNode:
    node: str
    instance_id: str
    since: datetime  # when the rebalancer evicted the last pod that kept it busy


def stays_with_node(pod: Pod) -> bool:
    """Whether the pod goes with its node rather than keeping it busy: a DaemonSet's, a mirror pod
    or finished."""
    return bool(_LEFT_BEHIND & set(pod_rules(pod, opt_out_annotation="", excluded_namespaces=())))


def holds_only_daemons(pods: Iterable[Pod]) -> bool:
    """Whether every pod is a DaemonSet's, a mirror pod or finished."""
    return all(stays_with_node(pod) for pod in pods)


def newly_emptied(snapshot: ClusterSnapshot, evicted: Collection[str], now: datetime,
                  lifecycle_label: str) -> tuple[EmptiedNode, ...]:
    """The on-demand nodes whose busy pods were all evicted in this cycle (`evicted`: pod uids) or
    already terminating (moved in an earlier cycle, still stopping), at least one of them now."""
    by_node: dict[str, list[Pod]] = {}
    for pod in snapshot.pods:
        by_node.setdefault(pod.spec.node_name, []).append(pod)
    emptied = []
    for node in snapshot.nodes:
        busy = [p for p in by_node.get(node.metadata.name, []) if not holds_only_daemons([p])]
        if (capacity_type(node, lifecycle_label) == ON_DEMAND and node.instance_id
                and any(p.metadata.uid in evicted for p in busy)
                and all(p.metadata.uid in evicted or p.metadata.deletion_timestamp for p in busy)):
            emptied.append(EmptiedNode(node.metadata.name, node.instance_id, now))
    return tuple(emptied)


@dataclass(frozen=True, slots=True)
class Settled:
    ready: tuple[EmptiedNode, ...]  # empty for the settle time: scale them in
    waiting: tuple[EmptiedNode, ...]  # still empty, not for long enough yet


def settled(emptied: Iterable[EmptiedNode], snapshot: ClusterSnapshot, now: datetime,
            settle_seconds: int) -> Settled:
    """The emptied nodes that are still there and still empty, ready or not yet; a node that is gone,
    or that a pod landed on again, is forgotten."""
    nodes: dict[str, Node] = {n.metadata.name: n for n in snapshot.nodes}
    pods: dict[str, list[Pod]] = {}
    for pod in snapshot.pods:
        pods.setdefault(pod.spec.node_name, []).append(pod)
    ready: list[EmptiedNode] = []
    waiting: list[EmptiedNode] = []
    for record in emptied:
        node = nodes.get(record.node)
        if node is None or node.instance_id != record.instance_id or not holds_only_daemons(
                pods.get(record.node, [])):
            continue
        (ready if now - record.since >= timedelta(seconds=settle_seconds) else waiting).append(record)
    return Settled(tuple(ready), tuple(waiting))
