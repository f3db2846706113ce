"""Topology spread constraints (PodTopologySpread's filter), counted the scheduler's way.

Only `whenUnsatisfiable: DoNotSchedule` constraints keep a pod off nodes. For each, the scheduler
counts the pods its selector picks (the constraint's labelSelector, with the incoming pod's values
for its `matchLabelKeys` ANDed in), in the pod's namespace and not terminating, per domain: a value
of the topology key on the nodes that carry every constraint's key and that the constraint's
inclusion policies admit. `nodeAffinityPolicy: Honor` (the default) admits only nodes the pod's node
selector and required node affinity accept, `nodeTaintsPolicy: Honor` (default Ignore) only nodes
whose NoSchedule and NoExecute taints it tolerates. A node passes when its domain's count, plus one
if the pod matches its own selector, exceeds the smallest domain's count (taken as 0 while there are
fewer domains than `minDomains`) by at most maxSkew; a node without the key never passes.

The counting is per constraint, as in kube-scheduler's current sources (1.31 kept one count per
topology key, so two constraints on one key with different selectors shared it; rare).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..objects import LabelSelector, LabelSelectorRequirement, Node, Pod, TopologySpreadConstraint
from .labels import selector_matches
from .taints import untolerated_taint

HONOR = "Honor"


@dataclass(frozen=True, slots=True)
class HardSpread:
    """One DoNotSchedule constraint as the filter reads it for one incoming pod."""

    topology_key: str
    max_skew: int
    min_domains: int  # 1 when the constraint sets none
    selector: LabelSelector | None  # matchLabelKeys already ANDed in
    honors_affinity: bool
    honors_taints: bool
    self_match: bool  # the pod's own labels match the selector


def blocking_constraints(pod: Pod) -> list[TopologySpreadConstraint]:
    return [c for c in pod.spec.topology_spread_constraints if c.when_unsatisfiable == "DoNotSchedule"]


def spread_selector(pod: Pod, constraint: TopologySpreadConstraint) -> LabelSelector | None:
    """The constraint's selector with its matchLabelKeys added as the pod's own values (keys the
    pod has no label for are left out)."""
    selector = constraint.label_selector
    keys = [k for k in constraint.match_label_keys if k in pod.metadata.labels]
    if not keys:
        return selector
    base = selector or LabelSelector()
    extra = [LabelSelectorRequirement(key=k, operator="In", values=[pod.metadata.labels[k]]) for k in keys]
    return LabelSelector(match_labels=base.match_labels, match_expressions=[*base.match_expressions, *extra])


def hard_constraints(pod: Pod) -> tuple[HardSpread, ...]:
    result = []
    for constraint in blocking_constraints(pod):
        selector = spread_selector(pod, constraint)
        result.append(HardSpread(constraint.topology_key, constraint.max_skew, constraint.min_domains or 1,
                                 selector, constraint.node_affinity_policy == HONOR,
                                 constraint.node_taints_policy == HONOR,
                                 selector_matches(selector, pod.metadata.labels)))
    return tuple(result)


def counts_node(constraint: HardSpread, constraints: Sequence[HardSpread], pod: Pod, node: Node,
                matches_affinity: bool) -> bool:
    """Whether the node's pods count toward the constraint's domains: it carries every constraint's
    topology key and the constraint's inclusion policies admit it (`matches_affinity`: the pod's
    node selector and required node affinity accept it)."""
    labels = node.metadata.labels
    if any(c.topology_key not in labels for c in constraints):
        return False
    if constraint.honors_affinity and not matches_affinity:
        return False
    return not (constraint.honors_taints
                and untolerated_taint(pod.spec.tolerations, node.spec.taints) is not None)


def matching_pods(constraint: HardSpread, namespace: str, pods: Iterable[Pod]) -> int:
    """The pods the constraint's selector picks among `pods`: in the namespace, not terminating."""
    return sum(1 for p in pods if p.metadata.deletion_timestamp is None and p.metadata.namespace == namespace
               and selector_matches(constraint.selector, p.metadata.labels))


def skew_allows(constraint: HardSpread, count: int, least: int, domains: int) -> bool:
    """Whether a node passes the constraint, given the matching pods in its domain (`count`), in the
    smallest domain (`least`) and how many domains there are."""
    # minDomains is at least 1, so no domain at all means a global minimum of 0 too.
    minimum = 0 if domains < constraint.min_domains else least
    return count + constraint.self_match - minimum <= constraint.max_skew


def domain_counts(constraint: HardSpread, constraints: Sequence[HardSpread], pod: Pod, nodes: Sequence[Node],
                  node_pods: Sequence[Iterable[Pod]], matches_affinity: Sequence[bool]) -> dict[str, int]:
    """The matching pods per domain over the nodes the constraint counts (the scheduler's PreFilter)."""
    counts: dict[str, int] = {}
    namespace = pod.metadata.namespace
    for node, pods, affinity in zip(nodes, node_pods, matches_affinity, strict=True):
        if counts_node(constraint, constraints, pod, node, affinity):
            value = node.metadata.labels[constraint.topology_key]
            counts[value] = counts.get(value, 0) + matching_pods(constraint, namespace, pods)
    return counts


def spread_filter(pod: Pod, nodes: Sequence[Node], node_pods: Sequence[Iterable[Pod]],
                  matches_affinity: Sequence[bool]) -> list[bool]:
    """Per node, whether the pod's DoNotSchedule constraints let it go there, with `node_pods`
    the pods on each node and `matches_affinity` whether the pod's node selector and required node
    affinity accept it (the scheduler's PreFilter and Filter together)."""
    constraints = hard_constraints(pod)
    node_pods = [list(pods) for pods in node_pods]
    allowed = [True] * len(nodes)
    for constraint in constraints:
        counts = domain_counts(constraint, constraints, pod, nodes, node_pods, matches_affinity)
        least = min(counts.values(), default=0)
        for i, node in enumerate(nodes):
            value = node.metadata.labels.get(constraint.topology_key)
            allowed[i] = allowed[i] and value is not None and skew_allows(
                constraint, counts.get(value, 0), least, len(counts))
    return allowed
