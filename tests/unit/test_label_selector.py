"""Label selectors in kubectl's text form (label_selector.py): the grammar the API machinery reads,
each refusal a SelectorError saying what is wrong, and the set-based requirements they are made of."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spot_rebalancer.label_selector import Requirement, SelectorError, parse_selector, requirement_matches

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


@pytest.mark.parametrize(("text", "labels", "expected"), [
    ("app=web", {"app": "web"}, True),
    ("app==web", {"app": "api"}, False),
    ("app!=web", {}, True),  # as in Kubernetes: an absent label differs from any value
    ("app!=web", {"app": "web"}, False),
    ("app", {"app": ""}, True),
    ("!app", {"app": "web"}, False),
    ("! app", {}, True),
    ("app=", {"app": ""}, True),  # the empty value is a value
    ("app=", {"app": "web"}, False),
    ("app in (web, api),tier notin (db)", {"app": "api", "tier": "front"}, True),
    ("app in (web, api),tier notin (db)", {"app": "api", "tier": "db"}, False),
    ("app in (web,api),tier!=db", {"app": "web"}, True),
    ("app in(web)", {"app": "web"}, True),
    ("app in (web,)", {"app": ""}, True),  # a trailing comma adds the empty value, as Kubernetes reads it
    ("example.com/team=a, env", {"example.com/team": "a", "env": "x"}, True),
    ("  app = web  ,  tier  ", {"app": "web", "tier": "x"}, True),
    ("", {}, True),
    ("   ", {"app": "web"}, True),
], ids=["equals", "double equals, other value", "not equals, absent", "not equals, same value", "exists",
        "does not exist", "does not exist, spaced", "equals empty", "equals empty, other value",
        "sets, both hold", "sets, notin fails", "set and not equals", "set without a space",
        "set with an empty value", "prefixed key and exists", "spaces anywhere", "empty", "blank"])
def test_kubectl_selector_syntax(text, labels, expected):
    assert parse_selector(text).matches(labels) is expected


@pytest.mark.parametrize(("text", "says"), [
    ("app=web=x", "expected a comma after app=web"),
    ("app in web", "go in parentheses"),
    ("app in ()", "at least one value"),
    ("app in (web", "no closing parenthesis"),
    ("app in (web api)", "expected a comma between app's values"),
    ("=web", "expected a label key, got '='"),
    ("app=a,app=b", "cannot equal both a and b"),
    ("a b", "expected =, ==, !=, in or notin after a, got 'b'"),
    ("app=web,", "ends with a comma"),
    (",app", "expected a label key, got ','"),
    ("app>1", "compares node labels"),
    ("app=-web", "is not a label value"),
    ("app=" + "x" * 64, "is not a label value"),
    ("-app=web", "expected a label key"),
    ("Bad_Prefix/app=web", "expected a label key"),
    ("in=web", "expected a label key, got 'in'"),
    ("!", "got nothing"),
], ids=["two equals", "set without parentheses", "empty set", "unclosed set", "values without a comma",
        "no key", "contradiction", "two words", "trailing comma", "leading comma", "greater than",
        "value starting with a dash", "value too long", "key starting with a dash", "prefix not a DNS name",
        "a keyword as key", "not without a key"])
def test_unreadable_selectors_are_refused_saying_why(text, says):
    with pytest.raises(SelectorError) as raised:
        parse_selector(text)
    assert says in str(raised.value) and repr(text) in str(raised.value)


@pytest.mark.parametrize("text", ["app in (web,api),tier!=db", "!canary,team", "app=web,zone notin (a,b)",
                                  "example.com/team==a", "app in (web)", ""])
def test_the_written_form_reads_back_as_the_same_selector(text):
    selector = parse_selector(text)
    assert parse_selector(str(selector)) == selector


def test_requirements_are_read_in_their_order_and_kinds():
    assert parse_selector("app in (web,api),tier!=db,canary,!legacy,env=prod").requirements == (
        Requirement("app", "In", ("web", "api")), Requirement("tier", "NotIn", ("db",)),
        Requirement("canary", "Exists"), Requirement("legacy", "DoesNotExist"),
        Requirement("env", "In", ("prod",)))


def test_an_empty_selector_is_false_and_selects_everything():
    assert not parse_selector("") and parse_selector("").matches({"any": "thing"})
    assert parse_selector("app")


# Text made of the grammar's own pieces, so that most of it nearly parses.
PIECES = st.sampled_from(["app", "tier", "example.com/team", "in", "notin", "web", "db", "", "=", "==", "!=",
                          "!", "(", ")", ",", " ", ">", "<", "-x", "a" * 64, "\u00e9", "\t"])


@settings(max_examples=400, deadline=None)
@given(st.lists(PIECES, max_size=12).map("".join) | st.text(max_size=40))
def test_any_text_is_a_selector_that_reads_back_the_same_or_a_selector_error(text):
    try:
        selector = parse_selector(text)
    except SelectorError as exc:
        assert repr(text) in str(exc)
        return
    assert parse_selector(str(selector)) == selector
    labels = {r.key: (r.values or ("x",))[0] for r in selector.requirements}
    selector.matches(labels)  # never raises: every requirement it holds is well formed
