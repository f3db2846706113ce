"""Label selectors (matchLabels + matchExpressions) and the set-based requirements they share with
node selectors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..objects import LabelSelector


class SelectorError(ValueError):
    """A selector or requirement the API server would have rejected (unknown operator, bad values)."""


def requirement_matches(key: str, operator: str, values: Sequence[str], labels: Mapping[str, str]) -> bool:
    """One set-based requirement: In, NotIn, Exists or DoesNotExist.

    NotIn and DoesNotExist hold when the label is absent, as in Kubernetes.
    """
    if operator in ("In", "NotIn"):
        if not values:
            raise SelectorError(f"{key}: operator {operator} needs at least one value")
        present = key in labels and labels[key] in values
        return present if operator == "In" else not present
    if operator in ("Exists", "DoesNotExist"):
        if values:
            raise SelectorError(f"{key}: operator {operator} takes no values")
        return (key in labels) == (operator == "Exists")
    raise SelectorError(f"{key}: unknown operator {operator!r}")


def selector_matches(selector: LabelSelector | None, labels: Mapping[str, str]) -> bool:
    """Whether the labels satisfy every matchLabels pair and every matchExpressions requirement.

    A missing selector selects nothing; an empty one ({}) selects everything.
    """
    if selector is None:
        return False
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            return False
    return all(requirement_matches(r.key, r.operator, r.values, labels) for r in selector.match_expressions)
