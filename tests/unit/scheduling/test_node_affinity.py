import pytest

from spot_rebalancer.label_selector import SelectorError
from spot_rebalancer.scheduling.node_affinity import (
    fits_required,
    preferred_score,
    referenced_node_keys,
    term_matches,
)
from tests.unit.builders import make_node, make_pod, prefer, preference, requirement, term

NODE = make_node("node-a", labels={"zone": "a", "arch": "arm64", "cores": "8", "spot": "true"})
LABELS = NODE.metadata.labels
ON_NODE_A = preference(7, term(fields=[requirement("metadata.name", "In", "node-a")]))


@pytest.mark.parametrize(("node_term", "expected"), [
    (term(requirement("zone", "In", "a", "b")), True),
    (term(requirement("zone", "In", "b")), False),
    (term(requirement("zone", "NotIn", "b")), True),
    (term(requirement("gpu", "NotIn", "yes")), True),
    (term(requirement("spot", "Exists")), True),
    (term(requirement("gpu", "Exists")), False),
    (term(requirement("gpu", "DoesNotExist")), True),
    (term(requirement("cores", "Gt", "4")), True),
    (term(requirement("cores", "Gt", "8")), False),
    (term(requirement("cores", "Lt", "9")), True),
    (term(requirement("cores", "Lt", "-1")), False),
    (term(requirement("zone", "Gt", "1")), False),  # a non-integer label never compares
    (term(requirement("gpu", "Lt", "1")), False),
    # Requirements inside a term are ANDed.
    (term(requirement("zone", "In", "a"), requirement("arch", "In", "arm64")), True),
    (term(requirement("zone", "In", "a"), requirement("arch", "In", "amd64")), False),
    # Fields: only metadata.name.
    (term(fields=[requirement("metadata.name", "In", "node-a")]), True),
    (term(fields=[requirement("metadata.name", "NotIn", "node-a")]), False),
    (term(requirement("zone", "In", "a"), fields=[requirement("metadata.name", "In", "node-b")]), False),
    # A term with nothing in it matches no node.
    (term(), False),
], ids=["in matches", "in misses", "not in matches", "not in on a missing label", "exists",
        "exists on a missing label", "does not exist on a missing label", "gt holds", "gt on an equal value",
        "lt holds", "lt a negative bound", "gt on a non-integer label", "lt on a missing label",
        "requirements are anded", "one requirement fails", "node name field", "node name field not in",
        "label holds but field fails", "empty term"])
def test_term(node_term, expected):
    assert term_matches(node_term, LABELS, "node-a") is expected


@pytest.mark.parametrize("node_term", [
    term(requirement("cores", "Gt", "4", "5")),
    term(requirement("cores", "Gt", "four")),
    term(requirement("cores", "Lt")),
    term(requirement("zone", "Near", "a")),
    term(fields=[requirement("metadata.uid", "In", "x")]),
    term(fields=[requirement("metadata.name", "Exists")]),
], ids=["gt with two values", "gt with a non-integer", "lt without a value", "unknown operator",
        "field other than the name", "exists on a field"])
def test_invalid_term_raises(node_term):
    with pytest.raises(SelectorError):
        term_matches(node_term, LABELS, "node-a")


@pytest.mark.parametrize(("pod", "expected"), [
    (make_pod("p"), True),
    (make_pod("p", node_selector={"zone": "a"}), True),
    (make_pod("p", node_selector={"zone": "a", "arch": "amd64"}), False),
    # Terms are ORed.
    (make_pod("p", required=[term(requirement("zone", "In", "b")), term(requirement("arch", "In", "arm64"))]),
     True),
    (make_pod("p", required=[term(requirement("zone", "In", "b"))]), False),
    # No terms at all, or only an empty one, matches nothing.
    (make_pod("p", required=[]), False),
    (make_pod("p", required=[term()]), False),
    # nodeSelector and required affinity must both hold.
    (make_pod("p", node_selector={"zone": "b"}, required=[term(requirement("arch", "In", "arm64"))]), False),
    # Preferences never filter.
    (make_pod("p", preferred=[prefer(10, "zone", "z")]), True),
], ids=["no constraints", "node selector holds", "node selector fails", "terms are ored", "only term fails",
        "no terms", "only an empty term", "node selector and affinity both needed",
        "preferences never filter"])
def test_fits_required(pod, expected):
    assert fits_required(pod, NODE) is expected


@pytest.mark.parametrize(("preferred", "expected"), [
    ([], 0),
    ([prefer(10, "zone", "a")], 10),
    ([prefer(10, "zone", "a"), prefer(5, "arch", "arm64"), prefer(80, "arch", "amd64")], 15),
    ([prefer(3, "gpu", operator="DoesNotExist")], 3),
    ([prefer(0, "zone", "a")], 0),
], ids=["no preferences", "one that holds", "sum of those that hold", "does not exist holds", "zero weight"])
def test_preferred_score_sums_weights_of_terms_that_hold(preferred, expected):
    assert preferred_score(make_pod("p", preferred=preferred), NODE) == expected


def test_empty_preference_term_scores_nothing():
    assert preferred_score(make_pod("p", preferred=[preference(50, term())]), NODE) == 0


def test_preference_on_node_name():
    pod = make_pod("p", preferred=[ON_NODE_A])
    assert preferred_score(pod, NODE) == 7
    assert preferred_score(pod, make_node("node-b")) == 0


def test_referenced_node_keys():
    pod = make_pod("p", node_selector={"pool": "x"}, required=[term(requirement("arch", "In", "arm64"))],
                   preferred=[prefer(1, "zone", "a"), ON_NODE_A])
    assert referenced_node_keys(pod) == (frozenset({"pool", "arch", "zone"}), True)
    assert referenced_node_keys(make_pod("p")) == (frozenset(), False)


@pytest.mark.parametrize(("label", "node_term", "expected"), [
    ("9223372036854775807", term(requirement("n", "Gt", "9223372036854775806")), True),
    ("9223372036854775808", term(requirement("n", "Gt", "1")), False),
    ("-9223372036854775809", term(requirement("n", "Lt", "1")), False),
    ("-9223372036854775808", term(requirement("n", "Lt", "-9223372036854775807")), True),
    ("1_000", term(requirement("n", "Gt", "1")), False),
    (" 5", term(requirement("n", "Gt", "1")), False),
], ids=["the largest int64 compares", "a label above int64 never matches",
        "a label below int64 never matches",
        "the smallest int64 compares", "underscores are not digits to ParseInt", "nor are spaces"])
def test_gt_and_lt_compare_labels_as_64_bit_integers(label, node_term, expected):
    """apimachinery's Requirement.Matches reads both sides with strconv.ParseInt(v, 10, 64); a label
    that fails to parse (out of range included) does not match."""
    assert term_matches(node_term, {"n": label}, "node-a") is expected


def test_a_gt_bound_beyond_64_bits_is_refused_as_the_api_server_would():
    with pytest.raises(SelectorError):
        term_matches(term(requirement("n", "Gt", "9223372036854775808")), {"n": "1"}, "node-a")
