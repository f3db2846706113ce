"""Topology spread constraints (PodTopologySpread's filter), conservatively.

Only `whenUnsatisfiable: DoNotSchedule` constraints keep a pod off nodes. Rather than counting pods
per domain, a pod with such constraints may only move within its current domain of each
constraint's topology key: taking it out and putting its replacement back in the same domain leaves
every domain's count as it was, so the skew that let the pod run there still holds. Constraints on
the hostname (where every move changes domain) and those with minDomains are not modelled;
`unsupported_spread` names them so callers can leave such pods alone.
"""

from __future__ import annotations

from ..objects import Node, Pod, TopologySpreadConstraint
from .interpod import HOSTNAME_KEY


def blocking_constraints(pod: Pod) -> list[TopologySpreadConstraint]:
    return [c for c in pod.spec.topology_spread_constraints if c.when_unsatisfiable == "DoNotSchedule"]


def unsupported_spread(pod: Pod) -> str | None:
    for constraint in blocking_constraints(pod):
        if constraint.topology_key == HOSTNAME_KEY:
            return "topology spread over nodes"
        if constraint.min_domains is not None:
            return f"topology spread over {constraint.topology_key} with minDomains"
    return None


def spread_allows(pod: Pod, source: Node, target: Node) -> bool:
    """Whether the target is in the source's domain for every blocking constraint (a node without
    the topology label belongs to no domain, as for the scheduler)."""
    source_labels, target_labels = source.metadata.labels, target.metadata.labels
    for constraint in blocking_constraints(pod):
        domain = source_labels.get(constraint.topology_key)
        if domain is None or target_labels.get(constraint.topology_key) != domain:
            return False
    return True
