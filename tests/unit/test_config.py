"""Settings are declared once (spot_rebalancer/config.py): the environment the stack writes is what
the functions read back, and every setting is checked the same way however it arrives."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spot_rebalancer.config import ConfigError, RecommendationPolicy, Settings, schema

ENTRIES = {entry.field: entry for entry in schema(Settings)}
# A value of each kind that its setting refuses, as the environment would carry it.
REFUSED = {
    "cluster_name": "-prod", "dry_run": "yes", "recommendation_policies": '{"x": 1}',
    "recommendation_default": "evict", "recommendation_ttl_seconds": "59", "drain_timeout_seconds": "0",
    "lifecycle_default_result": "continue", "unowned_pods": "delete", "excluded_namespaces": "Bad_NS",
    "opt_out_annotation": "a b", "exclude_from_load_balancers": "1", "health_lead_time_seconds": "-1",
    "force_at_deadline": "on",
    "launch_lifecycle_hook": "on", "lifecycle_tag_key": "aws:x", "lifecycle_label_key": "a b",
    "max_evictions_per_cycle": "1001", "max_evictions_per_node": "-1", "max_evictions_per_namespace": "x",
    "max_evictions_per_workload": "1.5", "min_pod_age_seconds": "-1", "max_priority": str(2**31),
    "min_on_demand_annotation": "?", "scheduler_names": "A B", "capacity_nudge": "maybe",
    "max_nudge_nodes": "101", "replacement_timeout_seconds": "59", "backoff_base_seconds": "0",
    "backoff_cap_seconds": "0", "rebalance_windows": '[{"cron": "0 25 * * *", "minutes": 60}]',
    "price_overrides": '{"m6i.large": {"onDemand": "cheap"}}',
    "scheduler_score_weights": '{"TaintToleration": 101}',
    "asg_names": "ng-a,ng-a", "move_single_replica_workloads": "yes", "scale_in_emptied_nodes": "yes",
    "scale_in_settle_seconds": "59", "instance_status_checks": "sometimes",
    "notification_topic_arn": "arn:aws:sns:eu-west-1:111122223333:n.fifo", "pod_selector": "app in web",
    "namespace_selector": "team>1",
}


def test_every_setting_has_a_refused_value_here():
    assert set(ENTRIES) - set(REFUSED) == {"state_table", "work_queue_url"}  # any text the stack sets


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_refused_value_in_the_environment_names_its_variable(name):
    variable = ENTRIES[name].env
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({variable: REFUSED[name]})
    assert str(raised.value).startswith(f"{variable}: ")


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_the_same_value_from_context_names_its_key(name):
    key = ENTRIES[name].context or ENTRIES[name].field
    with pytest.raises(ConfigError) as raised:
        Settings.from_context({key: REFUSED[name]})
    assert str(raised.value).startswith(f"{key}: ")


def test_names_follow_the_field():
    for entry in ENTRIES.values():
        assert entry.env == entry.field.upper()
        head, *rest = entry.field.split("_")
        assert entry.context in (None, head + "".join(part.title() for part in rest))


def test_one_boolean_grammar():
    for text, value in (("true", True), ("False", False), ("TRUE", True), (" false ", False)):
        assert Settings.from_env({"DRY_RUN": text}).dry_run is value
        assert Settings.from_context({"dryRun": text}).dry_run is value
    assert Settings.from_context({"dryRun": True}).dry_run is True


labels = st.from_regex(r"[a-z]([a-z0-9-]{0,18}[a-z0-9])?", fullmatch=True)


@given(st.builds(
    Settings,
    cluster_name=st.from_regex(r"[a-z][a-z0-9_-]{0,30}", fullmatch=True),
    dry_run=st.booleans(),
    recommendation_policies=st.lists(st.builds(
        RecommendationPolicy, selector=st.dictionaries(labels, labels, min_size=1, max_size=2),
        action=st.sampled_from(["none", "taint", "cordon", "drain"])), max_size=3).map(tuple),
    drain_timeout_seconds=st.integers(1, 1800),  # at most the default recommendation TTL
    excluded_namespaces=st.lists(labels, max_size=3).map(tuple),
    max_priority=st.integers(-(2**31), 2**31 - 1),
    scheduler_names=st.lists(labels, min_size=1, max_size=2).map(tuple),
))
def test_the_environment_written_is_read_back(settings):
    assert Settings.from_env(settings.to_env()) == settings
