"""podSelector and namespaceSelector: the planner moves only the pods both select, skips the others
saying which selector left them out, and `explain` shows it rule by rule."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from spot_rebalancer.config import Settings
from spot_rebalancer.label_selector import parse_selector
from spot_rebalancer.objects import Namespace, ObjectMeta
from spot_rebalancer.rebalance import History, RuleResult, SkipCode, explain, plan
from spot_rebalancer.snapshot import ClusterSnapshot
from tests.unit.builders import PREFER_SPOT, make_pod, on_demand_node, spot_node

NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)
NAMESPACES = [Namespace(metadata=ObjectMeta(name="shop", labels={"team": "shop", "env": "dev"})),
              Namespace(metadata=ObjectMeta(name="prod-shop", labels={"team": "shop", "env": "prod"})),
              Namespace(metadata=ObjectMeta(name="lab", labels={}))]


def pod(namespace: str, app: str):
    return make_pod(f"{app}-1", "od-1", namespace, labels={"app": app}, preferred=[PREFER_SPOT],
                    owner=("ReplicaSet", f"{app}-7d4b9"))


def verdict(pod_selector: str, namespace_selector: str, target, namespaces=NAMESPACES):
    snapshot = ClusterSnapshot(nodes=[on_demand_node("od-1"), spot_node("spot-1")], pods=[target],
                               namespaces=list(namespaces))
    settings = Settings(move_single_replica_workloads=True, pod_selector=parse_selector(pod_selector),
                        namespace_selector=parse_selector(namespace_selector))
    result = plan(snapshot, settings, History(), NOW)
    if result.evictions:
        return "evict", ""
    (skip,) = result.skipped
    return skip.code, skip.detail


@pytest.mark.parametrize(("pod_selector", "namespace_selector", "namespace", "app", "expected"), [
    ("", "", "lab", "web", "evict"),  # both empty: every pod, as before the settings
    ("app in (web,api)", "", "lab", "api", "evict"),
    ("app in (web,api)", "", "lab", "db", SkipCode.NOT_SELECTED),
    ("app!=db", "", "shop", "db", SkipCode.NOT_SELECTED),
    ("!app", "", "shop", "web", SkipCode.NOT_SELECTED),
    ("", "team=shop", "shop", "web", "evict"),
    ("", "team=shop", "lab", "web", SkipCode.NAMESPACE_NOT_SELECTED),
    ("", "team=shop,env!=prod", "prod-shop", "web", SkipCode.NAMESPACE_NOT_SELECTED),
    ("", "!team", "lab", "web", "evict"),
    ("", "team", "gone", "web", SkipCode.NAMESPACE_NOT_SELECTED),  # not in the snapshot: labels unknown
    ("", "!team", "gone", "web", SkipCode.NAMESPACE_NOT_SELECTED),  # even where no labels would match
    ("app=web", "env in (dev,test)", "shop", "web", "evict"),
    ("app=db", "env in (dev,test)", "prod-shop", "web", SkipCode.NOT_SELECTED),  # the pod's is asked first
], ids=["no selectors", "pod in the set", "pod outside the set", "pod not-equal", "pod without the label",
        "namespace selected", "namespace without the label", "namespace of another env", "namespace absence",
        "unknown namespace", "unknown namespace, absence", "both select", "both fail, pod first"])
def test_only_pods_both_selectors_select_are_moved(pod_selector, namespace_selector, namespace, app,
                                                   expected):
    assert verdict(pod_selector, namespace_selector, pod(namespace, app))[0] == expected


def test_the_skip_names_the_selector_and_the_namespace():
    assert verdict("app=web", "", pod("shop", "db")) == (
        SkipCode.NOT_SELECTED, "its labels do not match podSelector 'app=web'")
    assert verdict("", "team=shop,env!=prod", pod("prod-shop", "web")) == (
        SkipCode.NAMESPACE_NOT_SELECTED,
        "namespace prod-shop's labels do not match namespaceSelector 'team=shop,env!=prod'")
    assert verdict("", "team", pod("gone", "web")) == (
        SkipCode.NAMESPACE_NOT_SELECTED,
        "namespace gone is not in the snapshot: namespaceSelector needs its labels")


def test_without_a_namespace_selector_namespaces_are_not_needed():
    assert verdict("app=web", "", pod("anywhere", "web"), namespaces=[]) == ("evict", "")


def test_a_pod_left_out_keeps_its_on_demand_node_from_being_emptied():
    snapshot = ClusterSnapshot(nodes=[on_demand_node("od-1"), spot_node("spot-1")],
                               pods=[pod("shop", "web"), pod("shop", "db")], namespaces=NAMESPACES)
    settings = Settings(move_single_replica_workloads=True, pod_selector=parse_selector("app=web"))
    result = plan(snapshot, settings, History(), NOW)
    assert [e.name for e in result.evictions] == ["web-1"] and result.emptying == ()


@pytest.mark.parametrize(("pod_selector", "namespace_selector", "failed"), [
    ("app=api", "", SkipCode.NOT_SELECTED), ("", "team=other", SkipCode.NAMESPACE_NOT_SELECTED),
])
def test_explain_says_which_selector_left_the_pod_out(pod_selector, namespace_selector, failed):
    target = pod("shop", "web")
    snapshot = ClusterSnapshot(nodes=[on_demand_node("od-1"), spot_node("spot-1")], pods=[target],
                               namespaces=NAMESPACES)
    settings = Settings(move_single_replica_workloads=True, pod_selector=parse_selector(pod_selector),
                        namespace_selector=parse_selector(namespace_selector))
    explanation = explain(plan(snapshot, settings, History(), NOW), target)
    results = {r.code: r for r in explanation.rules}
    assert explanation.verdict == "keep" and results[failed].result is RuleResult.FAILED
    assert "Selector" in results[failed].detail
    assert results[SkipCode.EXCLUDED_NAMESPACE].result is RuleResult.PASSED
    assert results[SkipCode.TOO_YOUNG].result is RuleResult.NOT_REACHED
