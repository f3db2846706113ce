"""Label selectors in Kubernetes' text form (kubectl's `-l`, the podSelector and namespaceSelector
settings) and the set-based requirements every selector is made of.

The grammar is the API machinery's (`labels.Parse`):

    selector    ::= requirement ("," requirement)*      (empty text: everything)
    requirement ::= "!" KEY | KEY | KEY ("=" | "==" | "!=") VALUE
                  | KEY ("in" | "notin") "(" VALUE ("," VALUE)* ")"

read by a lexer (identifiers, the operators, parentheses and commas) and a parser that refuses
anything else, with keys checked as qualified names and values as label values. The comparisons
`>` and `<` exist only for node selectors, which these are not. Dependency-free: the CDK app checks
the settings with it at synth.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# A qualified name: an optional DNS-subdomain prefix (at most 253) and "/", then a name of at most 63.
_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
# Tokens: the operators (longest first), parentheses and commas, or a run of anything else.
_TOKEN = re.compile(r"\s*(==|!=|=|!|\(|\)|,|>|<|[^\s=!(),<>]+)")


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


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str  # In, NotIn, Exists or DoesNotExist
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return requirement_matches(self.key, self.operator, self.values, labels)

    def __str__(self) -> str:
        if self.operator == "Exists":
            return self.key
        if self.operator == "DoesNotExist":
            return f"!{self.key}"
        if len(self.values) == 1:
            return f"{self.key}{'=' if self.operator == 'In' else '!='}{self.values[0]}"
        return f"{self.key} {self.operator.lower()} ({','.join(self.values)})"


@dataclass(frozen=True, slots=True)
class Selector:
    """Requirements that must all hold; none selects everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def __bool__(self) -> bool:  # whether it selects anything less than everything
        return bool(self.requirements)

    def __str__(self) -> str:
        return ",".join(map(str, self.requirements))


def parse_selector(text: str) -> Selector:
    """The selector `text` stands for; SelectorError naming the text and what is wrong otherwise."""
    tokens = _tokens(text)
    requirements: list[Requirement] = []
    at = 0
    while at < len(tokens):
        requirement, at = _requirement(text, tokens, at)
        requirements.append(requirement)
        if at < len(tokens):
            if tokens[at] != ",":
                raise SelectorError(f"{text!r}: expected a comma after {requirement}, got {tokens[at]!r}")
            at += 1
            if at == len(tokens):
                raise SelectorError(f"{text!r}: ends with a comma")
    equal: dict[str, str] = {}
    for r in requirements:
        if r.operator == "In" and len(r.values) == 1 and equal.setdefault(r.key, r.values[0]) != r.values[0]:
            raise SelectorError(f"{text!r}: {r.key} cannot equal both {equal[r.key]} and {r.values[0]}")
    return Selector(tuple(requirements))


def _tokens(text: str) -> list[str]:
    tokens, at = [], 0
    while at < len(text):
        found = _TOKEN.match(text, at)
        if found is None:  # only whitespace is left
            break
        tokens.append(found.group(1))
        at = found.end()
    return tokens


def _requirement(text: str, tokens: list[str], at: int) -> tuple[Requirement, int]:
    if tokens[at] == "!":
        key = _key(text, tokens, at + 1)
        return Requirement(key, "DoesNotExist"), at + 2
    key = _key(text, tokens, at)
    at += 1
    operator = tokens[at] if at < len(tokens) else ","
    if operator == ",":
        return Requirement(key, "Exists"), at
    if operator in ("=", "==", "!="):
        value = tokens[at + 1] if at + 1 < len(tokens) and tokens[at + 1] != "," else ""
        _value(text, value)
        return Requirement(key, "NotIn" if operator == "!=" else "In", (value,)), at + 1 + (value != "")
    if operator in ("in", "notin"):
        values, at = _values(text, tokens, at + 1, key)
        return Requirement(key, "In" if operator == "in" else "NotIn", values), at
    if operator in (">", "<"):
        raise SelectorError(f"{text!r}: {operator!r} compares node labels in node affinity; a label selector "
                            "takes =, ==, !=, in, notin, a key alone or !key")
    raise SelectorError(f"{text!r}: expected =, ==, !=, in or notin after {key}, got {operator!r}")


def _key(text: str, tokens: list[str], at: int) -> str:
    key = tokens[at] if at < len(tokens) else ""
    prefix, _, name = key.rpartition("/")
    if (key in ("in", "notin") or not _NAME.fullmatch(name)
            or ("/" in key and not (len(prefix) <= 253 and _PREFIX.fullmatch(prefix)))):
        raise SelectorError(f"{text!r}: expected a label key, got {repr(key) if key else 'nothing'}")
    return key


def _value(text: str, value: str) -> None:
    if not _VALUE.fullmatch(value):
        raise SelectorError(f"{text!r}: {value!r} is not a label value (at most 63 letters, digits, "
                            "'-', '_' and '.', starting and ending with a letter or digit)")


def _values(text: str, tokens: list[str], at: int, key: str) -> tuple[tuple[str, ...], int]:
    """The values of a set, from its "(" at `at` to its ")"."""
    if at >= len(tokens) or tokens[at] != "(":
        raise SelectorError(f"{text!r}: the values of {key}'s set go in parentheses")
    values: list[str] = []
    at += 1
    expect_value = True
    while at < len(tokens) and tokens[at] != ")":
        token = tokens[at]
        if token == ",":
            if expect_value:  # an empty value between commas, as Kubernetes reads it
                values.append("")
            expect_value = True
        elif expect_value:
            _value(text, token)
            values.append(token)
            expect_value = False
        else:
            raise SelectorError(f"{text!r}: expected a comma between {key}'s values, got {token!r}")
        at += 1
    if at >= len(tokens):
        raise SelectorError(f"{text!r}: {key}'s set has no closing parenthesis")
    if expect_value and values:
        values.append("")
    if not values:
        raise SelectorError(f"{text!r}: {key}'s set needs at least one value in its parentheses")
    return tuple(values), at + 1
