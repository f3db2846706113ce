"""Queue messages read into work: events as EventBridge sent them, and the function's own
continuations."""

import json
from pathlib import Path

import pytest

from spot_rebalancer.events import EventError
from spot_rebalancer.work import read_message

EVENTS = Path(__file__).parents[1] / "events"


def continuation(instance_id: str) -> str:
    event = json.loads((EVENTS / "health-stop-scheduled-several.json").read_text())
    return json.dumps({"continuation": {"event": event, "instanceId": instance_id,
                                        "startedAt": "2024-03-14T09:27:00+00:00", "attempt": 2}})


def test_a_continuation_carries_on_for_the_one_instance_it_was_queued_for():
    event = json.loads((EVENTS / "health-stop-scheduled-several.json").read_text())
    first = read_message(json.dumps(event))[0].event.instance_id
    (work,) = read_message(continuation(first))
    assert (work.event.instance_id, work.attempt) == (first, 2)


def test_a_continuation_for_an_instance_its_event_does_not_name_fails():
    """Dropped silently, a forged or garbled continuation would be lost without a trace; failing it
    sends it to the dead-letter queue, where someone can look at it."""
    with pytest.raises(EventError, match="continuation for 'i-0fedcba9876543210', which its event does not"):
        read_message(continuation("i-0fedcba9876543210"))


def test_a_chain_waiting_for_its_drain_carries_no_start_and_one_under_way_keeps_its_own():
    """A continuation once carried its first invocation's time for a drain that had not begun: a
    change announced days ahead then began its drain with a deadline days in the past."""
    event = json.loads((EVENTS / "health-instance-retirement.json").read_text())
    (work,) = read_message(json.dumps(event))
    waiting = work.continuation()["continuation"]
    assert "startedAt" not in waiting
    (hop,) = read_message(json.dumps({"continuation": waiting}))
    assert (hop.started_at, hop.attempt) == (None, 1)
    (under_way,) = read_message(continuation("i-0c3e5a7b9d1f24680"))
    assert under_way.started_at is not None
    carried = type(under_way)(under_way.raw, under_way.event, 2, under_way.started_at).continuation()
    assert carried["continuation"]["startedAt"] == "2024-03-14T09:27:00+00:00"
