"""Queue messages read into work: events as EventBridge sent them, and the function's own
continuations; batches acted on; failed records handed back to the queue early."""

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from spot_rebalancer.drain import BatchMember, DrainBatch
from spot_rebalancer.events import EventError, EventKind, block_instance_event
from spot_rebalancer.work import (
    Delivery,
    Work,
    act_on_batch,
    queue_url,
    read_message,
    retry_delay_seconds,
    retry_soon,
)

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


def test_a_capacity_block_warning_is_one_work_item_and_its_fan_out_one_per_instance():
    """The warning names no instance; each of its block's instances comes back as its own message,
    carrying the block's end (from the reservation) through every hop of its drain."""
    raw = json.loads((EVENTS / "capacity-block-expiration-warning.json").read_text())
    (warning,) = read_message(json.dumps(raw))
    assert (warning.event.kind, warning.key) == (EventKind.CAPACITY_BLOCK_WARNING, f"{raw['id']}##0")
    ends = datetime(2024, 6, 21, 11, 30, tzinfo=UTC)
    drain = Work(raw, block_instance_event(warning.event, "i-0d2f4a6c8e0b13579", ends))
    message = drain.continuation()
    assert message["continuation"]["blockEndsAt"] == "2024-06-21T11:30:00+00:00"
    (hop,) = read_message(json.dumps(message))
    assert hop.event == drain.event
    assert hop.event.kind is EventKind.CAPACITY_BLOCK_EXPIRY
    assert hop.event.deadline == ends - timedelta(minutes=30)
    assert hop.key == f"{raw['id']}#i-0d2f4a6c8e0b13579#1"
    later = Work(hop.raw, hop.event, hop.attempt, datetime(2024, 6, 21, 10, 51, tzinfo=UTC)).continuation()
    (next_hop,) = read_message(json.dumps(later))
    assert (next_hop.event, next_hop.attempt) == (drain.event, 2)


def spot_warning(instance_id: str) -> str:
    raw = json.loads((EVENTS / "spot-interruption-terminate.json").read_text())
    raw["detail"]["instance-id"] = instance_id
    return json.dumps(raw)


def test_no_drain_of_a_batch_waits_before_every_node_is_marked():
    """Each work item marks, then drains (waiting for a budget that never gives in, for the first):
    every mark comes before any drain's wait, whatever order the threads run in."""
    happened: list[str] = []
    lock = threading.Lock()

    def act(work: Work, batch: BatchMember) -> dict:
        instance = work.event.instance_id
        if instance.endswith("1"):
            time.sleep(0.2)  # the first record's node is the slowest to mark
        with lock:
            happened.append(f"marked {instance}")
        batch.marked()
        with batch.draining(timeout=5) as admitted:
            assert admitted
            with lock:
                happened.append(f"draining {instance}")
        return {"instance": instance}

    instances = [f"i-0123456789abcdef{n}" for n in range(1, 5)]
    outcomes = act_on_batch([spot_warning(i) for i in instances], act)

    assert outcomes == [[{"instance": i}] for i in instances]
    marks = [n for n, what in enumerate(happened) if what.startswith("marked")]
    drains = [n for n, what in enumerate(happened) if what.startswith("draining")]
    assert max(marks) < min(drains), happened


def test_a_message_that_fails_fails_alone():
    def act(work: Work, batch: BatchMember) -> dict:
        if work.event.instance_id.endswith("2"):
            raise RuntimeError("the API server refused")  # before marking: the batch marks it
        batch.marked()
        with batch.draining(timeout=5) as admitted:
            return {"admitted": admitted}

    outcomes = act_on_batch([spot_warning("i-0123456789abcdef1"), "{not json",
                             spot_warning("i-0123456789abcdef2")], act)

    assert outcomes[0] == [{"admitted": True}]
    assert isinstance(outcomes[1], ValueError)
    assert isinstance(outcomes[2], RuntimeError)


def test_a_drain_admitted_too_late_is_not_admitted():
    batch = DrainBatch(2)
    first, _never_marked = batch.member(), batch.member()
    first.marked()
    with first.draining(timeout=0.05) as admitted:
        assert admitted is False


def test_drains_beyond_the_batch_bound_wait_for_a_slot():
    batch = DrainBatch(2, drains_at_once=1)
    first, second = batch.member(), batch.member()
    first.marked()
    second.marked()
    with first.draining(timeout=1) as admitted:
        assert admitted
        with second.draining(timeout=0.05) as also:
            assert also is False
    with second.draining(timeout=1) as admitted:
        assert admitted


def test_copies_of_one_event_in_a_batch_act_once_and_share_the_outcome():
    """EventBridge delivers at least once: two copies in one batch once drained the node twice at
    once (or one failed as still in progress, to come back after the queue's visibility timeout)."""
    acted: list[str] = []

    def act(work: Work, batch: BatchMember) -> dict:
        acted.append(work.key)
        return {"instance": work.event.instance_id}

    warning = spot_warning("i-0123456789abcdef1")
    outcomes = act_on_batch([warning, spot_warning("i-0123456789abcdef2"), warning], act)

    assert len(acted) == len(set(acted)) == 2, acted
    assert outcomes[0] == outcomes[2] == [{"instance": "i-0123456789abcdef1"}]
    assert outcomes[1] == [{"instance": "i-0123456789abcdef2"}]


def test_two_events_for_one_instance_act_one_after_the_other_and_hold_back_no_other_node():
    """A spot warning and a rebalance recommendation for one instance in one batch: both act, never
    at once (one node, one drain at a time); the other instance's drain is not held back by them."""
    happened: list[str] = []
    lock = threading.Lock()
    gone = threading.Event()

    def act(work: Work, batch: BatchMember) -> dict:
        name = f"{work.event.kind} {work.event.instance_id}"
        with lock:
            happened.append(f"start {name}")
        batch.marked()
        with batch.draining(timeout=5) as admitted:
            assert admitted
            if work.event.instance_id.endswith("2"):
                gone.set()
            elif work.event.kind == "spot-interruption":
                assert gone.wait(5), "the other node's drain waited for this one"
        with lock:
            happened.append(f"end {name}")
        return {"kind": str(work.event.kind)}

    recommendation = json.loads((EVENTS / "rebalance-recommendation.json").read_text())
    recommendation["detail"]["instance-id"] = "i-0123456789abcdef1"
    outcomes = act_on_batch([spot_warning("i-0123456789abcdef1"), json.dumps(recommendation),
                             spot_warning("i-0123456789abcdef2")], act)

    assert [o[0]["kind"] for o in outcomes if isinstance(o, list)] == [
        "spot-interruption", "rebalance-recommendation", "spot-interruption"]
    same = [what for what in happened if what.endswith("i-0123456789abcdef1")]
    assert same == [f"{what} i-0123456789abcdef1" for what in (
        "start spot-interruption", "end spot-interruption",
        "start rebalance-recommendation", "end rebalance-recommendation")], happened


def test_a_failed_record_comes_back_sooner_than_a_spot_warning_ends_and_later_with_each_receive():
    delays = [retry_delay_seconds(count) for count in range(1, 6)]  # the queue's five receives
    assert delays == sorted(delays) and delays[0] >= 1
    assert sum(delays) < 60, "every retry the queue allows lands inside a spot warning's two minutes"
    assert retry_delay_seconds(10_000) == delays[-1]


def test_the_queue_url_comes_from_the_records_arn_at_the_clients_endpoint():
    assert (queue_url("arn:aws-cn:sqs:cn-north-1:123456789012:work", "https://sqs.cn-north-1.amazonaws.com.cn")
            == "https://sqs.cn-north-1.amazonaws.com.cn/123456789012/work")
    with pytest.raises(ValueError, match="not an SQS queue ARN"):
        queue_url("arn:aws:sns:eu-west-1:123456789012:work", "https://sqs.eu-west-1.amazonaws.com")


def test_a_delivery_reads_its_receive_count_and_takes_a_missing_one_as_the_first():
    record = {"messageId": "m", "receiptHandle": "h", "eventSourceARN": "arn:aws:sqs:eu-west-1:1:work",
              "attributes": {"ApproximateReceiveCount": "3"}}
    assert Delivery.of(record) == Delivery("m", "arn:aws:sqs:eu-west-1:1:work", "h", 3)
    assert Delivery.of({"messageId": "m", "attributes": {"ApproximateReceiveCount": "x"}}).receive_count == 1


def test_retry_soon_makes_a_received_message_visible_again_and_survives_what_it_cannot_hand_back(caplog):
    with mock_aws():
        sqs = boto3.client("sqs", region_name="eu-west-1")
        url = sqs.create_queue(QueueName="work", Attributes={"VisibilityTimeout": "660"})["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="event")
        (message,) = sqs.receive_message(QueueUrl=url)["Messages"]
        arn = "arn:aws:sqs:eu-west-1:123456789012:work"
        delay = retry_delay_seconds(1)

        retry_soon(sqs, [Delivery("good", arn, message["ReceiptHandle"], 1),
                         Delivery("stale", arn, "not-a-receipt", 1),
                         Delivery("elsewhere", "arn:aws:sqs:eu-west-1:123456789012:gone", "r", 1)])

        assert "Messages" not in sqs.receive_message(QueueUrl=url), "hidden for its back-off first"
        time.sleep(delay + 0.5)
        (again,) = sqs.receive_message(QueueUrl=url, AttributeNames=["ApproximateReceiveCount"])["Messages"]
        assert again["Attributes"]["ApproximateReceiveCount"] == "2"
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "stale" in warned and "elsewhere" in warned and "good" not in warned
