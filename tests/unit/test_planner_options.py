"""Rebalancer options and on-demand floors."""

import pytest

from spot_rebalancer.config import Settings
from spot_rebalancer.rebalance import FloorError, OptionsError, RebalanceOptions, on_demand_floor


@pytest.mark.parametrize(("value", "replicas", "floor"), [
    ("2", 10, 2), ("0", 10, 0), (" 3 ", 1, 3),
    ("30%", 10, 3), ("30%", 7, 3), ("25%", 1, 1), ("0%", 10, 0), ("100%", 4, 4), ("50%", 0, 0),
])
def test_on_demand_floor(value, replicas, floor):
    assert on_demand_floor(value, replicas) == floor


@pytest.mark.parametrize("value", ["", "two", "-1", "1.5", "30 %%", "101%", "%"])
def test_unreadable_floors_raise(value):
    with pytest.raises(FloorError):
        on_demand_floor(value, 10)


@pytest.mark.parametrize("changes", [
    {"max_evictions_per_cycle": -1}, {"min_pod_age_seconds": -5}, {"backoff_base_seconds": 0},
    {"backoff_base_seconds": 600, "backoff_cap_seconds": 300},
])
def test_nonsense_options_raise(changes):
    with pytest.raises(OptionsError):
        RebalanceOptions(**changes)


def test_negative_priorities_are_a_valid_threshold():
    assert RebalanceOptions(max_priority=-10).max_priority == -10


def test_options_from_settings():
    settings = Settings.from_env({
        "EXCLUDED_NAMESPACES": "kube-system,istio-system", "MAX_EVICTIONS_PER_CYCLE": "4",
        "MAX_EVICTIONS_PER_NODE": "2", "MAX_EVICTIONS_PER_NAMESPACE": "1", "MIN_POD_AGE_SECONDS": "60",
        "OPT_OUT_ANNOTATION": "example.com/pin", "LIFECYCLE_LABEL_KEY": "example.com/lifecycle"})
    options = RebalanceOptions.from_settings(settings, max_evictions_per_workload=2)
    assert options == RebalanceOptions(
        excluded_namespaces=frozenset({"kube-system", "istio-system"}), opt_out_annotation="example.com/pin",
        min_pod_age_seconds=60, max_evictions_per_cycle=4, max_evictions_per_node=2,
        max_evictions_per_namespace=1, max_evictions_per_workload=2, lifecycle_label="example.com/lifecycle")
