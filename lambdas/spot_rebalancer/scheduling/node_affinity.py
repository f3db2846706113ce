"""Node affinity the scheduler's way: nodeSelector, required node affinity and the preferred score.

Required terms are ORed and the requirements inside a term ANDed; a term with no requirements matches
no node. The preferred score is the sum of the weights of the preferred terms that hold on the node
(raw, not normalised to 0-100 as the scheduler does, which keeps the same order between nodes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..label_selector import SelectorError, requirement_matches
from ..objects import (
    Node,
    NodeAffinity,
    NodeSelectorRequirement,
    NodeSelectorTerm,
    Pod,
    PreferredSchedulingTerm,
)

NODE_NAME_FIELD = "metadata.name"

# What Go's strconv.ParseInt(s, 10, 64) accepts (Python's int() also takes spaces and underscores,
# and has no range).
_INTEGER = re.compile(r"[+-]?[0-9]+")
_INT64 = range(-(2**63), 2**63)


def _int64(text: str) -> int | None:
    """The label value as Gt and Lt read it: a base-10 64-bit integer, or None."""
    if not _INTEGER.fullmatch(text):
        return None
    value = int(text)
    return value if value in _INT64 else None


def node_affinity(pod: Pod) -> NodeAffinity | None:
    affinity = pod.spec.affinity
    return affinity.node_affinity if affinity is not None else None


def preferred_terms(pod: Pod) -> list[PreferredSchedulingTerm]:
    affinity = node_affinity(pod)
    return affinity.preferred_during_scheduling_ignored_during_execution if affinity is not None else []


def required_terms(pod: Pod) -> list[NodeSelectorTerm] | None:
    """The required node selector terms, or None when the pod has no required node affinity."""
    affinity = node_affinity(pod)
    if affinity is None or affinity.required_during_scheduling_ignored_during_execution is None:
        return None
    return affinity.required_during_scheduling_ignored_during_execution.node_selector_terms


def label_requirement_matches(requirement: NodeSelectorRequirement, labels: Mapping[str, str]) -> bool:
    """A matchExpressions requirement; Gt and Lt compare 64-bit integers, and a label that is not
    one (or is out of range) never matches."""
    operator = requirement.operator
    if operator not in ("Gt", "Lt"):
        return requirement_matches(requirement.key, operator, requirement.values, labels)
    bound = _int64(requirement.values[0]) if len(requirement.values) == 1 else None
    if bound is None:
        raise SelectorError(f"{requirement.key}: operator {operator} needs exactly one 64-bit integer value")
    text = labels.get(requirement.key)
    value = _int64(text) if text is not None else None
    if value is None:
        return False
    return value > bound if operator == "Gt" else value < bound


def field_requirement_matches(requirement: NodeSelectorRequirement, node_name: str) -> bool:
    """A matchFields requirement; only `metadata.name` with In or NotIn exists."""
    if requirement.key != NODE_NAME_FIELD:
        raise SelectorError(f"matchFields supports only {NODE_NAME_FIELD}, got {requirement.key!r}")
    if requirement.operator not in ("In", "NotIn"):
        raise SelectorError(f"matchFields supports only In and NotIn, got {requirement.operator!r}")
    return requirement_matches(NODE_NAME_FIELD, requirement.operator, requirement.values,
                               {NODE_NAME_FIELD: node_name})


def term_matches(term: NodeSelectorTerm, labels: Mapping[str, str], node_name: str) -> bool:
    if not term.match_expressions and not term.match_fields:
        return False
    return (all(label_requirement_matches(r, labels) for r in term.match_expressions)
            and all(field_requirement_matches(r, node_name) for r in term.match_fields))


def fits_required(pod: Pod, node: Node) -> bool:
    """nodeSelector and required node affinity (NodeAffinity's filter)."""
    labels = node.metadata.labels
    for key, value in pod.spec.node_selector.items():
        if labels.get(key) != value:
            return False
    terms = required_terms(pod)
    if terms is None:
        return True
    return any(term_matches(term, labels, node.metadata.name) for term in terms)


def preferred_score(pod: Pod, node: Node) -> int:
    """The sum of the weights of the pod's preferred terms that hold on the node."""
    labels, name = node.metadata.labels, node.metadata.name
    return sum(term.weight for term in preferred_terms(pod)
               if term.weight and term_matches(term.preference, labels, name))


def referenced_node_keys(pod: Pod) -> tuple[frozenset[str], bool]:
    """The node label keys the pod's node selector and node affinity read, and whether they read the
    node's name; nodes that agree on these look the same to the pod's affinity."""
    keys = set(pod.spec.node_selector)
    terms = [t.preference for t in preferred_terms(pod)] + (required_terms(pod) or [])
    uses_name = False
    for term in terms:
        keys.update(r.key for r in term.match_expressions)
        uses_name = uses_name or bool(term.match_fields)
    return frozenset(keys), uses_name
