"""Eviction back-offs: spread by jitter, never shorter than the server's Retry-After, never past
the schedule's end."""

from __future__ import annotations

import json

import pytest

from spot_rebalancer.evictions import EvictionSchedule, evict_one
from spot_rebalancer.kube import Response
from spot_rebalancer.results import EvictionOutcome
from tests.unit.builders import make_pod

BLOCKED = json.dumps({"kind": "Status", "message": "Cannot evict pod as it would violate the pod's "
                                                   "disruption budget."}).encode()


class Answers:
    """An evict() that gives these responses in turn."""

    def __init__(self, *responses: Response) -> None:
        self._responses = list(responses)

    def evict(self, namespace, name, grace_period_seconds=None) -> Response:
        return self._responses.pop(0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def schedule(self, until: float, jitter=lambda seconds: seconds) -> EvictionSchedule:
        return EvictionSchedule(until=until, backoff=lambda attempt: 2.0 ** attempt, clock=lambda: self.now,
                                sleep=self.sleep, jitter=jitter)


def test_each_backoff_is_spread_by_the_jitter():
    clock = Clock()
    kube = Answers(Response(429, BLOCKED), Response(429, BLOCKED), Response(201, b"{}"))
    result = evict_one(kube, make_pod("web-1"), lambda _pod: None,
                       clock.schedule(1100.0, jitter=lambda s: s * 0.75))
    assert result.outcome is EvictionOutcome.ACCEPTED and result.attempts == 3
    assert clock.waits == [1.5, 3.0]


@pytest.mark.parametrize(("retry_after", "expected"), [(10.0, 10.0), (0.5, 2.0)],
                         ids=["longer-than-the-backoff", "shorter-than-the-backoff"])
def test_a_retry_after_is_waited_at_least(retry_after, expected):
    clock = Clock()
    kube = Answers(Response(429, BLOCKED, retry_after=retry_after), Response(201, b"{}"))
    result = evict_one(kube, make_pod("web-1"), lambda _pod: None, clock.schedule(1100.0))
    assert result.outcome is EvictionOutcome.ACCEPTED
    assert clock.waits == [expected]


def test_a_retry_after_past_the_schedule_reports_the_pod_blocked_without_waiting():
    clock = Clock()
    kube = Answers(Response(429, BLOCKED, retry_after=30.0))
    result = evict_one(kube, make_pod("web-1"), lambda _pod: None, clock.schedule(1020.0))
    assert result.outcome is EvictionOutcome.BLOCKED and result.attempts == 1
    assert "disruption budget" in result.message
    assert clock.waits == []
