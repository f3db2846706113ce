"""A Capacity Block's expiration warning fanned out to the instances of its reservation, read
through botocore's Stubber in the shapes EC2 documents (moto knows no capacity reservations)."""

import json
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from spot_rebalancer.aws import Ec2
from spot_rebalancer.capacity_blocks import CapacityBlocks
from spot_rebalancer.config import Settings
from spot_rebalancer.events import EventKind, parse_event
from spot_rebalancer.results import StepAction
from tests.ec2 import capacity_block_answers

SAMPLE = Path(__file__).parents[1] / "events" / "capacity-block-expiration-warning.json"
RESERVATION = "cr-0c8e2a4f6b1d35790"


def warning(**detail):
    raw = json.loads(SAMPLE.read_text())
    raw["detail"].update(detail)
    (event,) = parse_event(raw)
    return event


def fan_out(event, stubbed, *, cluster="prod", now=None):
    client = boto3.client("ec2", region_name="us-east-2", aws_access_key_id="k", aws_secret_access_key="s")
    with Stubber(client) as stub:
        stubbed(stub)
        result = CapacityBlocks(Settings(cluster_name=cluster), Ec2(client),
                                now=lambda: now or event.time).fan_out(event)
        stub.assert_no_pending_responses()
    return result


def test_each_instance_of_the_cluster_in_the_block_gets_a_drain_before_ec2_terminates_it():
    event = warning()
    instances = {"i-0a1b2c3d4e5f60718": "prod", "i-0b2c3d4e5f6071829": "prod", "i-0c3d4e5f607182930": "dev"}
    result = fan_out(event, lambda stub: capacity_block_answers(stub, RESERVATION, event.ends_at, instances))
    assert [e.instance_id for e in result.events] == ["i-0a1b2c3d4e5f60718", "i-0b2c3d4e5f6071829"]
    for drain in result.events:
        assert drain.kind is EventKind.CAPACITY_BLOCK_EXPIRY
        assert (drain.reservation_id, drain.block_ends_at) == (RESERVATION, event.ends_at)
        assert drain.deadline == event.ends_at - timedelta(minutes=30)
        assert (drain.event_id, drain.time) == (event.event_id, event.time)
    assert [s.action for s in result.steps] == [StepAction.CONTINUE] * 2
    assert "from 2024-06-21T11:00:00+00:00" in result.steps[0].reason


def test_the_reservations_end_decides_not_the_warnings():
    """A warning without its end still drains by the end EC2 gives the reservation."""
    event = warning(**{"end-date": None})
    ends = event.time + timedelta(minutes=40)
    result = fan_out(event, lambda stub: capacity_block_answers(stub, RESERVATION, ends,
                                                                {"i-0a1b2c3d4e5f60718": "prod"}))
    assert [e.deadline for e in result.events] == [ends - timedelta(minutes=30)]


@pytest.mark.parametrize(("answers", "why"), [
    (lambda stub, event: capacity_block_answers(stub, RESERVATION, event.ends_at + timedelta(days=7), None),
     "extended to 2024-06-28T11:30:00+00:00"),
    (lambda stub, event: capacity_block_answers(stub, RESERVATION, event.ends_at, None,
                                                reservation_type="default"),
     "not a Capacity Block"),
    (lambda stub, event: capacity_block_answers(stub, RESERVATION, event.ends_at,
                                                {"i-0a1b2c3d4e5f60718": "dev"}),
     "no instance of a managed cluster runs in it"),
    (lambda stub, event: stub.add_client_error(
        "describe_capacity_reservations", "InvalidCapacityReservationId.NotFound",
        f"The capacity reservation ID '{RESERVATION}' does not exist", expected_params={
            "CapacityReservationIds": [RESERVATION]}),
     "capacity reservation no longer exists"),
], ids=["extended", "an On-Demand reservation", "other clusters only", "gone"])
def test_a_warning_that_drains_nothing_says_why(answers, why):
    event = warning()
    result = fan_out(event, lambda stub: answers(stub, event))
    assert result.events == []
    [step] = result.steps
    assert step.action is StepAction.IGNORE
    assert step.reason.startswith(f"{RESERVATION}: ") and why in step.reason


def test_a_warning_replayed_after_the_block_ended_drains_nothing():
    event = warning()
    result = fan_out(event, lambda stub: capacity_block_answers(stub, RESERVATION, event.ends_at, None),
                     now=event.ends_at + timedelta(hours=1))
    assert result.events == []
    assert result.steps[0].reason == f"{RESERVATION}: ended at 2024-06-21T11:30:00+00:00"
