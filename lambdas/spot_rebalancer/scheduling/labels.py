"""Label selectors as the API serves them (matchLabels + matchExpressions); their requirements are
those of `label_selector`, which node selectors share."""

from __future__ import annotations

from collections.abc import Mapping

from ..label_selector import requirement_matches
from ..objects import LabelSelector


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

