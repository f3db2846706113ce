import pytest

from spot_rebalancer.scheduling.labels import (
    SelectorError,
    parse_selector,
    requirement_matches,
    selector_matches,
)
from tests.unit.builders import selector

LABELS = {"app": "web", "tier": "front"}


@pytest.mark.parametrize(("key", "operator", "values", "expected"), [
    ("app", "In", ["web", "api"], True),
    ("app", "In", ["api"], False),
    ("missing", "In", ["web"], False),
    ("app", "NotIn", ["api"], True),
    ("app", "NotIn", ["web"], False),
    ("missing", "NotIn", ["web"], True),  # an absent label is not in any set
    ("app", "Exists", [], True),
    ("missing", "Exists", [], False),
    ("app", "DoesNotExist", [], False),
    ("missing", "DoesNotExist", [], True),
], ids=["in with the value listed", "in without the value listed", "in on a missing label",
        "not in with another value", "not in with the value listed", "not in on a missing label",
        "exists on a present label", "exists on a missing label", "does not exist on a present label",
        "does not exist on a missing label"])
def test_requirement(key, operator, values, expected):
    assert requirement_matches(key, operator, values, LABELS) is expected


@pytest.mark.parametrize(("operator", "values"), [
    ("In", []), ("NotIn", []), ("Exists", ["x"]), ("DoesNotExist", ["x"]), ("Gt", ["1"]), ("in", ["web"]),
], ids=["in without values", "not in without values", "exists with values", "does not exist with values",
        "unknown operator", "operators are case sensitive"])
def test_invalid_requirement_raises(operator, values):
    with pytest.raises(SelectorError):
        requirement_matches("app", operator, values, LABELS)


@pytest.mark.parametrize(("label_selector", "expected"), [
    (None, False),  # a missing selector selects nothing
    (selector(), True),  # an empty one selects everything
    (selector({"app": "web"}), True),
    (selector({"app": "web", "tier": "back"}), False),
    (selector({}, ("tier", "In", ["front", "back"])), True),
    (selector({"app": "web"}, ("tier", "NotIn", ["front"])), False),
    (selector({"app": "web"}, ("canary", "DoesNotExist", [])), True),
], ids=["missing selector selects nothing", "empty selector selects everything", "matching labels",
        "one label differs", "in expression holds", "not in expression fails", "does not exist holds"])
def test_selector(label_selector, expected):
    assert selector_matches(label_selector, LABELS) is expected


@pytest.mark.parametrize(("text", "labels", "expected"), [
    ("app=web", {"app": "web"}, True),
    ("app==web", {"app": "api"}, False),
    ("app!=web", {}, True),  # as in Kubernetes: an absent label differs from any value
    ("app!=web", {"app": "web"}, False),
    ("app", {"app": ""}, True),
    ("!app", {"app": "web"}, False),
    ("app in (web, api),tier notin (db)", {"app": "api", "tier": "front"}, True),
    ("app in (web, api),tier notin (db)", {"app": "api", "tier": "db"}, False),
    ("example.com/team=a, env", {"example.com/team": "a", "env": "x"}, True),
    ("", {}, True),
], ids=["equals", "double equals, other value", "not equals, absent", "not equals, same value", "exists",
        "does not exist", "sets, both hold", "sets, notin fails", "prefixed key and exists", "empty"])
def test_kubectl_selector_syntax(text, labels, expected):
    assert selector_matches(parse_selector(text), labels) is expected


@pytest.mark.parametrize("text", ["app=web=x", "app in web", "app in ()", "=web", "app=a,app=b", "a b"],
                         ids=["two equals", "set without parentheses", "empty set", "no key",
                              "contradiction", "two words"])
def test_unreadable_selectors_are_refused(text):
    with pytest.raises(SelectorError, match=r"label requirement|parentheses|cannot equal"):
        parse_selector(text)
