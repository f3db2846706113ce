"""Quantities read the way the API server accepts them for resources, and nothing else."""

import pytest

from spot_rebalancer.quantity import MAX_MAGNITUDE, QuantityError, milli, parse, units
from spot_rebalancer.scheduling.resources import node_allocatable, pod_requests
from tests.unit.builders import make_node, make_pod


@pytest.mark.parametrize(("quantity", "in_milli"), [
    ("100m", 100), ("1.5Gi", 1536 * 2**20 * 1000), ("2e3", 2_000_000), ("2E", 2 * 10**21),
    ("1E3", 1_000_000),
    ("0.1m", 1), (".5", 500), ("1.", 1000), ("+1", 1000), (" 1 ", 1000), ("5e-3", 5), ("1e-999", 1),
    (2, 2000), (1.5, 1500), ("9223372036854775807", MAX_MAGNITUDE * 1000), ("7.9Ei", 9108079886394091110400),
], ids=["millicores", "binary suffix", "decimal exponent", "exa, not an exponent", "capital exponent",
        "a fraction of a milli rounds up", "no integer part", "no fraction", "plus sign",
        "spaces the API server trims", "negative exponent", "a tiny value rounds up to one milli",
        "a JSON integer", "a JSON number", "the largest quantity", "just under 8Ei"])
def test_quantities_the_api_server_accepts(quantity, in_milli):
    assert milli(quantity) == in_milli


@pytest.mark.parametrize(("quantity", "problem"), [
    ("lots", "not a Kubernetes quantity"), ("1_000", "not a Kubernetes quantity"),
    ("\uff11", "not a Kubernetes quantity"), ("1e3m", "not a Kubernetes quantity"),
    ("1Ki2", "not a Kubernetes quantity"), ("", "not a Kubernetes quantity"),
    ("e3", "not a Kubernetes quantity"),
    ("-1", "must not be negative"), ("-0.5Gi", "must not be negative"), (-3, "must not be negative"),
    ("1e19", "larger than the API server accepts"), ("8Ei", "larger than the API server accepts"),
    ("9223372036854775808", "larger than the API server accepts"),
    ("1e400", "larger than the API server accepts"),
    ("9" * 4300, "larger than the API server accepts"), ("1e999999", "exponent the API server refuses"),
    (float("inf"), "not a Kubernetes quantity"), (float("nan"), "not a Kubernetes quantity"),
    (True, "not a Kubernetes quantity"),
], ids=["a word", "underscores", "non-ASCII digit", "an exponent and a suffix", "a suffix then digits",
        "empty", "no number", "negative", "negative binary", "negative JSON number", "past 2^63",
        "8Ei is 2^63", "one past the largest", "a huge exponent", "4,300 digits", "a million-digit exponent",
        "infinity", "not a number", "a boolean"])
def test_quantities_the_api_server_refuses(quantity, problem):
    with pytest.raises(QuantityError, match=problem):
        units(quantity)


def test_an_absurd_quantity_is_refused_before_any_arithmetic(monkeypatch):
    """"1e999999" is 8 bytes; converting it would build a million-digit integer (over 20 s of CPU).
    It, and its kind, are refused from the text alone: no number is ever made of them."""
    def no_arithmetic(*_args):
        raise AssertionError("a number was made of a quantity that is refused")

    monkeypatch.setattr("spot_rebalancer.quantity.Decimal", no_arithmetic)
    for quantity in ("1e999999", "9" * 100_000 + "Ei", "1" + "0" * 100_000, "1e-999999"):
        with pytest.raises(QuantityError):
            parse(quantity)


def test_the_object_and_the_resource_are_named():
    with pytest.raises(QuantityError, match=r"^pod default/web: requests: cpu: a resource quantity must not"):
        pod_requests(make_pod("web", "n", requests={"cpu": "-1"}))
    with pytest.raises(QuantityError, match=r"^node n: allocatable: memory: quantity '1e400' is larger"):
        node_allocatable(make_node("n", allocatable={"cpu": "2", "memory": "1e400"}))
