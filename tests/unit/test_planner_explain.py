"""`explain`: the plan's verdict on one pod, rule by rule, in the planner's order."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from spot_rebalancer.config import Settings
from spot_rebalancer.rebalance import History, RuleResult, SkipCode, explain, plan
from spot_rebalancer.rebalance.explain import RULES
from spot_rebalancer.rebalance.planner import EVALUATION_ORDER
from spot_rebalancer.snapshot import ClusterSnapshot
from tests.unit.builders import PREFER_SPOT, make_pdb, make_pod, on_demand_node, spot_node

NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)


def verdicts(pod, *others, pdbs=(), **settings):
    snapshot = ClusterSnapshot(nodes=[on_demand_node("od-1"), spot_node("spot-1")], pods=[pod, *others],
                               pdbs=list(pdbs))
    settings.setdefault("move_single_replica_workloads", True)  # each pod is its workload's only one
    explanation = explain(plan(snapshot, Settings(**settings), History(), NOW), pod)
    return explanation, {r.code: r.result for r in explanation.rules}


def test_every_skip_is_a_rule_the_planner_applies():
    assert set(EVALUATION_ORDER) == set(SkipCode) == set(RULES)


def test_a_moved_pod_passed_every_rule_and_names_its_target():
    explanation, results = verdicts(make_pod("web-1", "od-1", preferred=[PREFER_SPOT]))
    assert (explanation.verdict, explanation.target, explanation.score, explanation.target_score) == \
        ("evict", "spot-1", 0, 100)
    assert set(results.values()) == {RuleResult.PASSED}


def test_a_pod_kept_by_its_budget_passed_the_rules_before_and_reached_none_after():
    web = make_pod("web-1", "od-1", labels={"app": "web"}, preferred=[PREFER_SPOT])
    explanation, results = verdicts(web, pdbs=[make_pdb("web", {"app": "web"}, 0)])
    assert explanation.verdict == "keep" and explanation.target is None
    failed = [r for r in explanation.rules if r.result is RuleResult.FAILED]
    assert [(r.code, r.detail) for r in failed] == [(SkipCode.PDB_EXHAUSTED,
                                                     "PodDisruptionBudget default/web allows no more")]
    for code in (SkipCode.WELL_PLACED, SkipCode.TOO_YOUNG, SkipCode.MULTIPLE_PDBS, SkipCode.WORKLOAD_CAP):
        assert results[code] is RuleResult.PASSED, code
    for code in (SkipCode.ON_DEMAND_FLOOR, SkipCode.NO_ROOM, SkipCode.CONSTRAINED):
        assert results[code] is RuleResult.NOT_REACHED, code


@pytest.mark.parametrize(("pod", "failed", "passed", "not_reached"), [
    (make_pod("young", "od-1", preferred=[PREFER_SPOT], created="2024-05-01T11:59:00Z"), SkipCode.TOO_YOUNG,
     {SkipCode.MIRROR_POD, SkipCode.NOT_READY, SkipCode.NODE_DRAINING},
     {SkipCode.WELL_PLACED, SkipCode.HIGH_PRIORITY, SkipCode.INVALID_SPEC}),
    (make_pod("fine", "spot-1", preferred=[PREFER_SPOT]), SkipCode.WELL_PLACED,
     {SkipCode.TOO_YOUNG, SkipCode.BACKING_OFF},
     # Checked in part before (constraints not simulated), in part after (anti-affinity).
     {SkipCode.UNSUPPORTED_CONSTRAINT, SkipCode.CYCLE_CAP}),
    (make_pod("bare", "od-1", preferred=[PREFER_SPOT], owner=None), SkipCode.BARE_POD,
     {SkipCode.MIRROR_POD, SkipCode.TERMINATING}, {SkipCode.OTHER_SCHEDULER, SkipCode.UNSUPPORTED_OWNER}),
], ids=["too young", "well placed", "bare pod"])
def test_rules_passed_are_those_wholly_before_the_failure(pod, failed, passed, not_reached):
    explanation, results = verdicts(pod)
    assert [r.code for r in explanation.rules if r.result is RuleResult.FAILED] == [failed]
    assert {code for code in passed if results[code] is RuleResult.PASSED} == passed
    assert {code for code in not_reached if results[code] is RuleResult.NOT_REACHED} == not_reached


def test_a_pod_without_a_preferred_affinity_is_never_moved():
    explanation, _ = verdicts(make_pod("plain", "od-1"))
    assert (explanation.verdict, explanation.rules) == ("ignored", ())
