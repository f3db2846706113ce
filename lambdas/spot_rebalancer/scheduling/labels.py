"""Label selectors (matchLabels + matchExpressions) and the set-based requirements they share with
node selectors."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from ..objects import LabelSelector, LabelSelectorRequirement


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


_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_VALUE = r"[-A-Za-z0-9_.]*"
_EXISTS = re.compile(rf"\s*(?P<key>{_KEY})\s*")
_ABSENT = re.compile(rf"\s*!\s*(?P<key>{_KEY})\s*")
_EQUALITY = re.compile(rf"\s*(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>{_VALUE})\s*")
_SET = re.compile(rf"\s*(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)\s*")
# Commas between requirements, not those inside a set's parentheses.
_BETWEEN = re.compile(r",(?![^()]*\))")


def parse_selector(text: str) -> LabelSelector:
    """A selector in kubectl's `-l` syntax: `a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (b,c)`,
    `a notin (b,c)`, comma-separated (all must hold). Empty text selects everything."""
    if not text.strip():
        return LabelSelector()
    match_labels: dict[str, str] = {}
    expressions: list[LabelSelectorRequirement] = []
    for part in _BETWEEN.split(text):
        if found := _EQUALITY.fullmatch(part):
            key, value = found["key"], found["value"]
            if found["op"] == "!=":
                expressions.append(LabelSelectorRequirement(key=key, operator="NotIn", values=[value]))
            elif match_labels.setdefault(key, value) != value:
                raise SelectorError(f"{text!r}: {key} cannot equal both {match_labels[key]} and {value}")
        elif found := _SET.fullmatch(part):
            values = [v.strip() for v in found["values"].split(",")]
            if not all(re.fullmatch(_VALUE, v) for v in values) or values == [""]:
                raise SelectorError(f"{text!r}: {part.strip()!r} needs label values in its parentheses")
            operator = "In" if found["op"] == "in" else "NotIn"
            expressions.append(LabelSelectorRequirement(key=found["key"], operator=operator, values=values))
        elif found := _ABSENT.fullmatch(part):
            expressions.append(LabelSelectorRequirement(key=found["key"], operator="DoesNotExist"))
        elif found := _EXISTS.fullmatch(part):
            expressions.append(LabelSelectorRequirement(key=found["key"], operator="Exists"))
        else:
            raise SelectorError(f"{text!r}: cannot read {part.strip()!r} as a label requirement")
    return LabelSelector(match_labels=match_labels, match_expressions=expressions)
