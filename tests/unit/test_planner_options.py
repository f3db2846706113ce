"""The rebalancer's settings and on-demand floors."""

import pytest

from spot_rebalancer.config import ConfigError, Settings
from spot_rebalancer.rebalance import FloorError, on_demand_floor


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


@pytest.mark.parametrize(("changes", "named"), [
    ({"max_evictions_per_cycle": -1}, "maxEvictionsPerCycle"),
    ({"min_pod_age_seconds": -5}, "minPodAgeSeconds"),
    ({"backoff_base_seconds": 0}, "backoffBaseSeconds"),
    ({"backoff_base_seconds": 600, "backoff_cap_seconds": 300}, "backoffCapSeconds"),
], ids=["negative cap", "negative age", "no back-off", "cap below base"])
def test_nonsense_rebalancer_settings_raise(changes, named):
    with pytest.raises(ConfigError, match=f"^{named}: "):
        Settings(**changes)


def test_negative_priorities_are_a_valid_threshold():
    assert Settings(max_priority=-10).max_priority == -10


def test_rebalancer_settings_from_the_environment():
    settings = Settings.from_env({
        "EXCLUDED_NAMESPACES": "kube-system,istio-system", "MAX_EVICTIONS_PER_CYCLE": "4",
        "MAX_EVICTIONS_PER_NODE": "2", "MAX_EVICTIONS_PER_NAMESPACE": "1", "MIN_POD_AGE_SECONDS": "60",
        "MAX_EVICTIONS_PER_WORKLOAD": "2", "OPT_OUT_ANNOTATION": "example.com/pin",
        "LIFECYCLE_LABEL_KEY": "example.com/lifecycle"})
    assert settings == Settings(
        excluded_namespaces=("kube-system", "istio-system"), opt_out_annotation="example.com/pin",
        min_pod_age_seconds=60, max_evictions_per_cycle=4, max_evictions_per_node=2,
        max_evictions_per_namespace=1, max_evictions_per_workload="2",
        lifecycle_label_key="example.com/lifecycle")
