import copy
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spot_rebalancer.events import (
    INSTANCE_ID_PATTERN,
    CapacityBlockWarning,
    Event,
    EventError,
    EventKind,
    HealthNotice,
    Ignored,
    InstanceEvent,
    LaunchSuccessful,
    LifecycleHook,
    RebalanceRecommendation,
    SpotInterruption,
    StateChange,
    StatusImpaired,
    parse_event,
    status_impaired_message,
)

EVENTS = Path(__file__).parent.parent / "events"
# What the events function is sent; the schedule event goes to the schedule function.
SCHEDULE_SAMPLE = "scheduled-event.json"
SAMPLES = sorted(p.name for p in EVENTS.glob("*.json") if p.name != SCHEDULE_SAMPLE)


def sample(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- every sample, as AWS sends it ---------------------------------------------------------------


@pytest.mark.parametrize(("name", "type_", "kind", "instance_ids", "deadline"), [
    ("spot-interruption-terminate.json", SpotInterruption, EventKind.SPOT_INTERRUPTION,
     ["i-0a1b2c3d4e5f60718"], at("2024-03-14T09:28:53")),
    # Hibernation starts at once: no two-minute warning.
    ("spot-interruption-hibernate.json", SpotInterruption, EventKind.SPOT_INTERRUPTION,
     ["i-0f9e8d7c6b5a40312"], at("2024-03-14T09:41:05")),
    ("rebalance-recommendation.json", RebalanceRecommendation, EventKind.REBALANCE_RECOMMENDATION,
     ["i-0a1b2c3d4e5f60718"], None),
    ("lifecycle-terminate.json", LifecycleHook, EventKind.ASG_TERMINATION, ["i-04c2e6a8b0d1f3579"], None),
    ("lifecycle-launch.json", LifecycleHook, EventKind.ASG_LAUNCH, ["i-0b7d9f1a3c5e72468"], None),
    ("launch-successful.json", LaunchSuccessful, EventKind.LAUNCH_SUCCESSFUL, ["i-0b7d9f1a3c5e72468"], None),
    ("state-change-stopping.json", StateChange, EventKind.INSTANCE_STOPPING, ["i-0e5a7c9b1d3f24680"], None),
    ("state-change-shutting-down.json", StateChange, EventKind.INSTANCE_STOPPING,
     ["i-0a1b2c3d4e5f60718"], None),
    ("state-change-running.json", StateChange, EventKind.INSTANCE_RUNNING, ["i-0b7d9f1a3c5e72468"], None),
    ("state-change-stopped.json", StateChange, EventKind.INSTANCE_STOPPED, ["i-0e5a7c9b1d3f24680"], None),
    ("state-change-terminated.json", StateChange, EventKind.INSTANCE_STOPPED, ["i-0a1b2c3d4e5f60718"], None),
    ("capacity-reservation-interruption.json", InstanceEvent, EventKind.CAPACITY_RESERVATION_INTERRUPTION,
     ["i-0f2a4c6e8b0d13579"], at("2024-03-18T13:22:44")),
    ("lifecycle-terminate-warm-pool.json", LifecycleHook, EventKind.ASG_TERMINATION, ["i-0c4e6a8b0d2f13579"],
     None),
    ("lifecycle-launch-warm-pool.json", LifecycleHook, EventKind.ASG_LAUNCH, ["i-0a2c4e6b8d0f13579"], None),
    # The retirement names its instance by ARN, in affectedEntities only (no `resources`).
    ("health-instance-retirement.json", HealthNotice, EventKind.SCHEDULED_MAINTENANCE,
     ["i-07d1e3f5a9b2c4680"], at("2024-03-15T14:00:00")),
    # Three instances named; the RESOLVED one comes as closed (test_settled_instances_come_as_closed).
    ("health-stop-scheduled-several.json", HealthNotice, EventKind.SCHEDULED_MAINTENANCE,
     ["i-0c3e5a7b9d1f24680", "i-0d4f6b8a0c2e35791"], at("2024-03-16T03:00:00")),
    ("health-reboot-maintenance.json", HealthNotice, EventKind.SCHEDULED_MAINTENANCE,
     ["i-0b5d7f9a1c3e46802"], at("2024-03-12T02:00:00")),
    ("health-reboot-maintenance-closed.json", HealthNotice, EventKind.SCHEDULED_CHANGE_CLOSED,
     ["i-0b5d7f9a1c3e46802"], None),
    ("health-store-drive-degraded-backup.json", HealthNotice, EventKind.DEGRADED_HARDWARE,
     ["i-09a1b3c5d7e2f4680"], None),
    ("status-check-impaired.json", StatusImpaired, EventKind.INSTANCE_IMPAIRED, ["i-0e4b6d8f0a2c35791"],
     None),
], ids=["spot interruption terminate", "spot interruption hibernate", "rebalance recommendation",
        "lifecycle terminate", "lifecycle launch", "launch successful", "state change stopping",
        "state change shutting down", "state change running", "state change stopped",
        "state change terminated", "capacity reservation interruption",
        "lifecycle terminate into the warm pool",
        "lifecycle launch into the warm pool", "health instance retirement",
        "health stop scheduled for several", "health reboot maintenance", "health reboot maintenance closed",
        "health store drive degraded backup", "status check impaired"])
def test_instance_events(name, type_, kind, instance_ids, deadline):
    raw = sample(name)
    events = [e for e in parse_event(raw) if e.kind is kind]
    assert [type(e) for e in events] == [type_] * len(instance_ids)
    assert [e.instance_id for e in events] == instance_ids
    for event in events:
        assert event.kind is kind
        assert event.deadline == deadline
        assert event.event_id == raw["id"]
        assert event.region == raw["region"]
        assert event.account == raw["account"]
        assert event.time == datetime.fromisoformat(raw["time"])


def test_spot_interruption_fields():
    (event,) = parse_event(sample("spot-interruption-terminate.json"))
    assert event.action == "terminate"
    assert event.deadline - event.time == timedelta(minutes=2)


def test_lifecycle_hook_fields():
    (event,) = parse_event(sample("lifecycle-terminate.json"))
    assert (event.group, event.hook, event.token) == (
        "eks-workers-spot", "spot-rebalancer-drain", "3f7b1d9e-2c64-4a80-b5e1-8d0c6a2f4e93")
    assert event.transition == "autoscaling:EC2_INSTANCE_TERMINATING"
    assert event.notification_metadata == '{"cluster": "prod"}'
    assert (event.origin, event.destination) == ("AutoScalingGroup", "EC2")


def test_launch_lifecycle_hook_without_notification_metadata():
    (event,) = parse_event(sample("lifecycle-launch.json"))
    assert event.notification_metadata == ""
    assert event.transition == "autoscaling:EC2_INSTANCE_LAUNCHING"


def test_launch_successful_fields():
    (event,) = parse_event(sample("launch-successful.json"))
    assert (event.group, event.activity_id) == ("eks-workers-spot", "4e6a8c0b-2d3f-4b51-97e8-a1c3e5f7092d")


def test_scheduled_change_fields():
    (event,) = parse_event(sample("health-instance-retirement.json"))
    assert event.start_time == event.deadline == at("2024-03-15T14:00:00")
    assert event.event_type_code == "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED"
    assert event.category == "scheduledChange"
    assert event.communication_id == "8a0c2e4b6d1f3a5c7e9b0d2f4a6c8e1b3d5f7a9c-1"
    assert event.backup is False


def test_settled_instances_of_a_scheduled_change_come_as_closed():
    """A change that no longer affects an instance (its entity resolved, or the whole change closed)
    calls off what is pending for it and undoes what was done."""
    events = parse_event(sample("health-stop-scheduled-several.json"))
    assert [(e.instance_id, e.kind) for e in events] == [
        ("i-0c3e5a7b9d1f24680", EventKind.SCHEDULED_MAINTENANCE),
        ("i-0d4f6b8a0c2e35791", EventKind.SCHEDULED_MAINTENANCE),
        ("i-5e7a9c1b", EventKind.SCHEDULED_CHANGE_CLOSED)]
    raw = sample("health-stop-scheduled-several.json")
    raw["detail"]["statusCode"] = "closed"
    closed = parse_event(raw)
    assert {e.kind for e in closed} == {EventKind.SCHEDULED_CHANGE_CLOSED}
    assert [e.instance_id for e in closed] == ["i-0c3e5a7b9d1f24680", "i-0d4f6b8a0c2e35791", "i-5e7a9c1b"]
    assert all(e.deadline is None and e.event_arn == raw["detail"]["eventArn"] for e in closed)


def test_health_issue_has_no_deadline_and_flags_the_backup_copy():
    raw = sample("health-store-drive-degraded-backup.json")
    (event,) = parse_event(raw)
    assert event.deadline is None
    assert event.time == at("2024-03-03T17:48:22")
    assert event.start_time == at("2024-03-03T17:40:09")
    assert event.backup is True


@pytest.mark.parametrize("start_time", [
    "Sat, 16 Mar 2024 03:00:00 GMT",
    "Sat, 16 Mar 2024 03:00:00 -0000",  # RFC 2822 UTC, parsed without a zone
    "Sat, 16 Mar 2024 04:00:00 +0100",
    "16 Mar 2024 03:00:00 GMT",  # the weekday is optional
])
def test_health_start_time_formats(start_time):
    raw = sample("health-stop-scheduled-several.json")
    raw["detail"]["startTime"] = start_time
    assert {e.start_time for e in parse_event(raw)} == {at("2024-03-16T03:00:00")}


def test_the_schedule_event_is_not_for_the_events_function():
    # The schedule rule invokes the schedule function directly; on the work queue it is a mistake.
    with pytest.raises(EventError, match=r"unsupported event: source 'aws\.events'"):
        parse_event(sample(SCHEDULE_SAMPLE))


# --- events acknowledged without action -----------------------------------------------------------


def health(**detail) -> dict:
    raw = sample("health-store-drive-degraded-backup.json")
    raw["detail"].update(detail)
    return raw


@pytest.mark.parametrize(("raw", "why"), [
    ({**sample("state-change-terminated.json"),
      "detail": {"instance-id": "i-0a1b2c3d4e5f60718", "state": "pending"}}, "instance is pending"),
    (sample("health-operational-issue-public.json"), "names no EC2 instance"),
    (health(service="RDS"), "concerns RDS, not EC2"),
    (health(eventTypeCategory="accountNotification"), "in category accountNotification"),
    (health(statusCode="closed"), "is closed"),
    (health(affectedEntities=[{"entityValue": "i-09a1b3c5d7e2f4680", "status": "UNIMPAIRED"}]),
     "names no EC2 instance that is still affected"),
], ids=["instance pending", "health event naming no instance", "health event for rds",
        "account notification", "closed health event", "no instance still affected"])
def test_ignored(raw, why):
    (event,) = parse_event(raw)
    assert isinstance(event, Ignored)
    assert event.kind is EventKind.IGNORED
    assert why in event.why
    assert event.event_id == raw["id"]


def test_a_pending_instance_is_ignored_with_its_id():
    raw = sample("state-change-terminated.json")
    raw["detail"]["state"] = "pending"
    (event,) = parse_event(raw)
    assert (type(event), event.instance_id) == (Ignored, "i-0a1b2c3d4e5f60718")


def test_a_capacity_reservation_interruption_ends_at_its_termination_time():
    raw = sample("capacity-reservation-interruption.json")
    (event,) = parse_event(raw)
    assert event.deadline == at("2024-03-18T13:22:44")
    del raw["detail"]["instance-termination-time"]
    (event,) = parse_event(raw)
    assert event.deadline == event.time + timedelta(minutes=2), "the notice is two minutes"


def test_a_capacity_block_warning_names_its_reservation_and_announced_end():
    raw = sample("capacity-block-expiration-warning.json")
    (event,) = parse_event(raw)
    assert type(event) is CapacityBlockWarning
    assert (event.kind, event.reservation_id) == (EventKind.CAPACITY_BLOCK_WARNING, "cr-0c8e2a4f6b1d35790")
    assert event.ends_at == at("2024-06-21T11:30:00")
    assert event.time == at("2024-06-21T10:50:00")
    # AWS's pages also call it a Capacity Block Reservation Expiration Warning.
    raw["detail-type"] = "Capacity Block Reservation Expiration Warning"
    assert parse_event(raw) == (event,)


@pytest.mark.parametrize("end_date", [None, "", "Fri, 21 Jun 2024 11:30:00 GMT", "2024-06-21T11:30:00",
                                      "9999-12-31T23:59:59Z", 1718969400],
                         ids=["missing", "empty", "RFC 1123", "no zone", "end of time", "a number"])
def test_a_capacity_block_end_date_is_only_a_hint(end_date):
    """The reservation's own EndDate decides; an end the warning gives in no form we know is left
    out rather than failing the warning."""
    raw = sample("capacity-block-expiration-warning.json")
    raw["detail"]["end-date"] = end_date
    (event,) = parse_event(raw)
    assert (event.reservation_id, event.ends_at) == ("cr-0c8e2a4f6b1d35790", None)


@pytest.mark.parametrize("reservation_id", ["", "cr-0C8E2A4F6B1D35790", "cr-0c8e2a4f6b1d35790\n",
                                            "i-0a1b2c3d"])
def test_a_capacity_block_warning_must_name_a_reservation(reservation_id):
    raw = sample("capacity-block-expiration-warning.json")
    raw["detail"]["capacity-reservation-id"] = reservation_id
    with pytest.raises(EventError, match="capacity-reservation-id"):
        parse_event(raw)


def test_the_schedule_functions_status_message_reads_back_as_the_impaired_instance():
    found = datetime(2024, 3, 20, 7, 15, 0, 480000, tzinfo=UTC)
    message = status_impaired_message("i-0e4b6d8f0a2c35791", ("system", "instance"), found, "eu-west-1",
                                      "123456789012")
    (event,) = parse_event(json.dumps(message))
    assert (type(event), event.instance_id, event.checks) == (
        StatusImpaired, "i-0e4b6d8f0a2c35791", ("instance", "system"))
    assert event.time == found.replace(microsecond=0)
    # The same instance found in the same second is the same message (one idempotency key).
    assert status_impaired_message("i-0e4b6d8f0a2c35791", ("instance", "system"), found, "eu-west-1",
                                   "123456789012") == message
    sample_message = sample("status-check-impaired.json")
    assert set(message) == set(sample_message) and set(message["detail"]) == set(sample_message["detail"])


@pytest.mark.parametrize("impaired", [[], ["ebs"], "system", ["system", "system", "system"]],
                         ids=["none", "unknown check", "not a list", "too many"])
def test_a_status_message_names_one_or_both_checks(impaired):
    raw = sample("status-check-impaired.json")
    raw["detail"]["impaired"] = impaired
    with pytest.raises(EventError, match="impaired"):
        parse_event(raw)


def test_warm_pool_lifecycle_actions_say_where_the_instance_goes():
    assert [(e.origin, e.destination) for name in ("lifecycle-launch-warm-pool.json",
                                                   "lifecycle-launch-from-warm-pool.json",
                                                   "lifecycle-terminate-warm-pool.json")
            for e in parse_event(sample(name))] == [
        ("EC2", "WarmPool"), ("WarmPool", "AutoScalingGroup"), ("AutoScalingGroup", "WarmPool")]


def test_health_entities_that_are_not_instances_are_left_out():
    arn = "arn:aws:ec2:eu-west-1:123456789012:instance/i-0123456789abcdef0"
    raw = health(affectedEntities=[{"entityValue": "vol-0123456789abcdef0"}, {"entityValue": arn}])
    raw["resources"] = ["i-0123456789abcdef0", "not-an-instance"]
    assert [e.instance_id for e in parse_event(raw)] == ["i-0123456789abcdef0"]


# --- input forms -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLES)
def test_json_bytes_and_text_parse_like_the_dict(name):
    raw = sample(name)
    text = (EVENTS / name).read_text()
    assert parse_event(text) == parse_event(text.encode()) == parse_event(raw)


def test_events_are_immutable():
    (event,) = parse_event(sample("spot-interruption-terminate.json"))
    with pytest.raises(AttributeError):
        event.instance_id = "i-00000000"


# --- errors ------------------------------------------------------------------------------------


def spot(**changes) -> dict:
    raw = sample("spot-interruption-terminate.json")
    for path, value in changes.items():
        *parents, key = path.split("__")
        target = raw
        for parent in parents:
            target = target[parent]
        if value is ...:
            del target[key]
        else:
            target[key] = value
    return raw


@pytest.mark.parametrize(("raw", "message"), [
    (spot(**{"detail-type": "EC2 Instance Terminate Successful"}),
     "event 1b2f6c8e-4a0d-4c61-9f0e-2d7a9c3b5e11: unsupported event: source 'aws.ec2', "
     "detail-type 'EC2 Instance Terminate Successful'"),
    (spot(source="aws.s3"), "unsupported event: source 'aws.s3'"),
    (spot(**{"detail__instance-id": ...}), "EC2 Spot Instance Interruption Warning detail: "
                                    "Object missing required field `instance-id`"),
    (spot(**{"detail__instance-id": "i-XYZ"}), "Expected `str` matching regex"),
    (spot(**{"detail__instance-id": 42}), "Expected `str`, got `int` - at `$.instance-id`"),
    (spot(**{"detail__instance-action": "reboot"}), "Invalid enum value 'reboot'"),
    (spot(detail=...), "envelope: Object missing required field `detail`"),
    (spot(time="2024-03-14T09:26:53"), "envelope: Expected `datetime` with a timezone component"),
    (spot(time="yesterday"), "envelope: Invalid RFC3339 encoded datetime"),
    (spot(resources="i-0a1b2c3d4e5f60718"), "envelope: Expected `array`, got `str` - at `$.resources`"),
    (spot(id=...), "event without an id: envelope: Object missing required field `id`"),
    (spot(id=7), "event without an id: envelope: Expected `str`, got `int` - at `$.id`"),
    (spot(id=""), "event without an id: envelope: Expected `str` of length >= 1 - at `$.id`"),
], ids=["unsupported detail type", "unsupported source", "instance id missing", "instance id malformed",
        "instance id a number", "unknown instance action", "detail missing", "time without a zone",
        "time not a date", "resources a string", "id missing", "id a number", "id empty"])
def test_malformed_events(raw, message):
    with pytest.raises(EventError) as caught:
        parse_event(raw)
    assert message in str(caught.value)
    assert not isinstance(caught.value.__cause__, KeyError)


def test_error_names_the_event():
    with pytest.raises(EventError) as caught:
        parse_event(spot(detail={}))
    assert caught.value.event_id == "1b2f6c8e-4a0d-4c61-9f0e-2d7a9c3b5e11"
    assert str(caught.value).startswith("event 1b2f6c8e-4a0d-4c61-9f0e-2d7a9c3b5e11: ")


def test_lifecycle_transition_must_match_the_detail_type():
    raw = sample("lifecycle-terminate.json")
    raw["detail"]["LifecycleTransition"] = "autoscaling:EC2_INSTANCE_LAUNCHING"
    with pytest.raises(EventError, match="EC2 Instance-terminate Lifecycle Action with LifecycleTransition "
                                         "autoscaling:EC2_INSTANCE_LAUNCHING"):
        parse_event(raw)


@pytest.mark.parametrize("start_time", ["", "soon", "Sat, 31 Feb 2024 03:00:00 GMT", 1710558000],
                         ids=["empty", "not a date", "no such day", "a number"])
def test_health_start_time_must_be_a_date(start_time):
    raw = sample("health-instance-retirement.json")
    raw["detail"]["startTime"] = start_time
    with pytest.raises(EventError, match=r"^event 2e4c6a8f-0b1d-4f35-97a9-c1e3f5b7d904: .*startTime"):
        parse_event(raw)


@pytest.mark.parametrize(("raw", "message"), [
    (b"{not json", "event without an id: not JSON"),
    ("[1, 2]", "event without an id: expected a JSON object, got list"),
    (b"null", "expected a JSON object, got NoneType"),
    ([], "expected a JSON object, got list"),
], ids=["bytes that are not json", "text of a json list", "json null", "a python list"])
def test_not_an_event_at_all(raw, message):
    with pytest.raises(EventError, match=re.escape(message)):
        parse_event(raw)


# --- fuzzing: mutated samples give events or EventError, nothing else ----------------------------

# Finite floats only: JSON has no NaN or infinity, and the bytes round trip below must be exact.
scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(max_size=20))
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children,
                                                                         max_size=3),
    max_leaves=6)
# Values that pass some checks, so mutations reach deeper code than the first type check.
plausible = st.sampled_from([
    "i-0123456789abcdef0", "i-12345678", "arn:aws:ec2:eu-west-1:123456789012:instance/i-12345678", "",
    "terminate", "hibernate", "stopping", "running", "terminated", "EC2", "issue", "scheduledChange",
    "closed", "RESOLVED", "true", "Sat, 16 Mar 2024 03:00:00 GMT", "2024-03-14T09:26:53Z",
    "2024-03-14T09:26:53+05:30", "autoscaling:EC2_INSTANCE_LAUNCHING", "aws.health", "Scheduled Event"])


def paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from paths(child, (*prefix, index))


@st.composite
def mutated(draw, original: dict):
    event = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(paths(event))))
        operation = draw(st.sampled_from(["drop", "replace", "plausible", "text"]))
        if not path:
            event = {} if operation == "drop" else draw(json_values)
            if not isinstance(event, dict):
                break
            continue
        parent = event
        for step in path[:-1]:
            parent = parent[step]
        if operation == "drop":
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw({"replace": json_values, "plausible": plausible,
                                     "text": st.text()}[operation])
    return event


@pytest.mark.parametrize("name", SAMPLES)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_mutated_samples_parse_or_raise_event_error(name, data):
    raw = data.draw(mutated(sample(name)))
    try:
        events = parse_event(raw)
    except EventError as exc:
        event_id = raw.get("id") if isinstance(raw, dict) else None
        if isinstance(event_id, str) and event_id:
            assert str(exc).startswith(f"event {event_id}: ")
        else:
            assert str(exc).startswith("event without an id: ")
        outcome = str(exc)
    else:
        assert events
        assert all(isinstance(e, Event) for e in events)
        for event in events:
            if isinstance(event, InstanceEvent):
                assert re.match(INSTANCE_ID_PATTERN, event.instance_id)
            assert event.time.tzinfo is not None
        outcome = events
    if not isinstance(raw, dict):
        return  # a str or bytes root would be read as JSON text, not as the value it is
    # JSON text goes the same way as the dict it encodes.
    try:
        from_bytes = parse_event(msgspec.json.encode(raw))
    except EventError as exc:
        from_bytes = str(exc)
    assert from_bytes == outcome


# --- which cluster -----------------------------------------------------------------------------


@pytest.mark.parametrize("instance_id", [
    "i-0123456789abcdef0\n", " i-0123456789abcdef0", "i-0123456789ABCDEF0",
], ids=["trailing newline", "leading space", "upper case"])
def test_an_instance_id_must_be_the_whole_string(instance_id):
    """With `$`, a trailing newline passed: the event was then dropped as "not a node" and the
    lifecycle action completed with that id."""
    raw = sample("spot-interruption-terminate.json")
    raw["detail"]["instance-id"] = instance_id
    with pytest.raises(EventError, match="instance-id"):
        parse_event(raw)


@pytest.mark.parametrize(("where", "value"), [
    ("time", "9999-12-31T23:59:59Z"), ("time", "0001-01-01T00:00:00+05:00"), ("time", "1970-01-01T00:00:00Z"),
    ("startTime", "Fri, 31 Dec 9999 23:00:00 GMT"), ("startTime", "Mon, 01 Jan 1900 00:30:00 GMT"),
], ids=["event at the end of time", "event before the start of time", "event before AWS",
        "change at the end of time", "change before AWS"])
def test_times_at_the_ends_of_the_range_are_refused_not_overflowed(where, value):
    raw = sample("health-instance-retirement.json")
    if where == "time":
        raw["time"] = value
    else:
        raw["detail"]["startTime"] = value
    with pytest.raises(EventError, match=f"{where} .* is outside the years 2000-8999"):
        parse_event(raw)
