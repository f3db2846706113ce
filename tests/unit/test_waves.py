"""The pure parts of waves: when a budget has caught up with a wave's replacements, and how long the
schedule function lets a cycle wait."""

from __future__ import annotations

import time

import pytest

from spot_rebalancer.handlers.schedule import FINISHING_RESERVE_SECONDS, waves_until
from spot_rebalancer.objects import PodDisruptionBudgetStatus
from spot_rebalancer.rebalance.budgets import budgets_caught_up
from tests.unit.builders import make_pdb, make_pod

WEB = {"app": "web"}


def web(name, **kwargs):
    return make_pod(name, "node", labels=WEB, **kwargs)


def budget(current_healthy):
    pdb = make_pdb("web", WEB, 1)
    pdb.status = PodDisruptionBudgetStatus(disruptions_allowed=1, current_healthy=current_healthy)
    return pdb


MOVED = [web("web-1")]
NOW_THERE = [web("web-2"), web("web-3", ready=False), web("web-1", deleting=True), make_pod("other", "node")]


@pytest.mark.parametrize("healthy, caught_up", [(1, True), (2, False), (0, False)],
                         ids=["counts what is Ready", "still counts the evicted pod",
                              "not the replacement yet"])
def test_a_budget_has_caught_up_when_it_counts_the_ready_pods_it_covers(healthy, caught_up):
    assert budgets_caught_up([budget(healthy)], NOW_THERE, MOVED) is caught_up


def test_budgets_not_covering_a_moved_pod_do_not_matter():
    assert budgets_caught_up([budget(7)], NOW_THERE, [make_pod("other-1", "node")])
    assert budgets_caught_up([], NOW_THERE, MOVED)


class Context:
    def __init__(self, millis):
        self.millis = millis

    def get_remaining_time_in_millis(self):
        return self.millis


def test_a_cycle_waits_for_its_waves_until_the_reserve_before_the_invocation_ends():
    before = time.monotonic()
    until = waves_until(Context(270_000))
    waits = 270 - FINISHING_RESERVE_SECONDS
    assert before + waits <= until <= time.monotonic() + waits


def test_without_a_lambda_context_a_cycle_is_one_wave():
    assert waves_until(None) is None
