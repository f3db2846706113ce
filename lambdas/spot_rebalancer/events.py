"""EventBridge events in, typed and immutable domain events out.

`parse_event` takes an event as Lambda delivers it (a dict) or as raw JSON and returns a tuple of
domain events: one for most kinds, one per affected instance for AWS Health. Envelope and details
are decoded by msgspec into typed structs, so a missing field, a wrong type or a malformed instance id
surfaces as `EventError` naming the event and the field, never as a KeyError deep in a handler.

A Capacity Block's expiration warning names its reservation, not instances: it comes back as one
`CapacityBlockWarning`, which the events function fans out to the block's instances
(`CapacityBlockExpiry`, one per instance, built by `block_instance_event`).

Events that arrive but need no action (a `pending` instance, a closed Health issue, a non-EC2 Health
event) come back as `Ignored`, so they
are acknowledged quietly instead of failing and being retried. A closed Health scheduled change, and
an instance a scheduled change says is resolved, come back as SCHEDULED_CHANGE_CLOSED.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta, field

# EC2 instance ids are "i-" and 8 (older) or 17 lowercase hex digits.
# The whole string: "$" would also let a trailing newline through.
INSTANCE_ID_PATTERN = r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})\Z"
InstanceId = Annotated[str, Meta(pattern=INSTANCE_ID_PATTERN)]
_INSTANCE_ID_RE = re.compile(INSTANCE_ID_PATTERN)
# Capacity Reservation ids are "cr-" and 17 lowercase hex digits.
CapacityReservationId = Annotated[str, Meta(pattern=r"^cr-[0-9a-f]{17}\Z")]
AwareTime = Annotated[datetime, Meta(tz=True)]

# EC2 emits the interruption warning two minutes before it stops or terminates a spot instance;
# hibernation starts at once, without the two minutes.
SPOT_WARNING_LEAD = timedelta(minutes=2)
# The source and detail-type of the messages the schedule function sends itself.
PRODUCT_SOURCE = "spot-rebalancer"
STATUS_IMPAIRED_DETAIL_TYPE = "Instance Status Check Impaired"
# EC2 begins terminating a Capacity Block's instances this long before the block ends (its warning
# comes ten minutes before that).
CAPACITY_BLOCK_TERMINATION_LEAD = timedelta(minutes=30)
# Times outside these years are no AWS event's; near the ends of Python's datetime range, the
# arithmetic on them (a deadline, a lead time) would overflow.
# An Auto Scaling lifecycle action's Origin or Destination for an instance in the group's warm pool.
WARM_POOL = "WarmPool"
EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_EVENT_TIME = datetime(9000, 1, 1, tzinfo=UTC)


class EventError(ValueError):
    """An event the product cannot use: unknown kind, missing or malformed fields."""

    def __init__(self, event_id: str, problem: str) -> None:
        self.event_id = event_id
        self.problem = problem
        subject = f"event {event_id}" if event_id else "event without an id"
        super().__init__(f"{subject}: {problem}")


class EventKind(enum.StrEnum):
    SPOT_INTERRUPTION = "spot-interruption"
    # An instance in an interruptible Capacity Reservation its owner reclaims: terminated in 2 minutes.
    CAPACITY_RESERVATION_INTERRUPTION = "capacity-reservation-interruption"
    # A Capacity Block ending: the warning names the reservation (fanned out to its instances), each
    # of which EC2 terminates 30 minutes before the block's end.
    CAPACITY_BLOCK_WARNING = "capacity-block-warning"
    CAPACITY_BLOCK_EXPIRY = "capacity-block-expiry"
    REBALANCE_RECOMMENDATION = "rebalance-recommendation"
    ASG_TERMINATION = "asg-termination"  # terminate lifecycle hook waiting on the instance
    ASG_LAUNCH = "asg-launch"  # launch lifecycle hook waiting on the instance
    LAUNCH_SUCCESSFUL = "launch-successful"
    INSTANCE_STOPPING = "instance-stopping"  # state stopping or shutting-down
    INSTANCE_RUNNING = "instance-running"
    # State stopped or terminated: a backstop for a node whose earlier event was lost.
    INSTANCE_STOPPED = "instance-stopped"
    SCHEDULED_MAINTENANCE = "scheduled-maintenance"  # AWS Health scheduledChange
    # An AWS Health scheduledChange closed, or one that no longer affects the instance: what is
    # pending is called off and what was done is undone.
    SCHEDULED_CHANGE_CLOSED = "scheduled-change-closed"
    DEGRADED_HARDWARE = "degraded-hardware"  # AWS Health issue naming the instance
    # The schedule function found the instance's status check impaired (instanceStatusChecks).
    INSTANCE_IMPAIRED = "instance-impaired"
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    event_id: str
    kind: EventKind
    time: datetime  # when the event was emitted, UTC
    region: str
    account: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceEvent(Event):
    instance_id: str
    deadline: datetime | None = None  # when the instance goes away, when the event says


@dataclass(frozen=True, slots=True, kw_only=True)
class SpotInterruption(InstanceEvent):
    action: str  # terminate, stop or hibernate


@dataclass(frozen=True, slots=True, kw_only=True)
class RebalanceRecommendation(InstanceEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class LifecycleHook(InstanceEvent):
    """An Auto Scaling lifecycle action waiting on the instance until completed or timed out."""

    group: str
    hook: str
    token: str
    transition: str  # autoscaling:EC2_INSTANCE_TERMINATING or autoscaling:EC2_INSTANCE_LAUNCHING
    notification_metadata: str = ""
    origin: str = ""  # EC2, AutoScalingGroup or WarmPool
    destination: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class LaunchSuccessful(InstanceEvent):
    group: str
    activity_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class StateChange(InstanceEvent):
    state: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthNotice(InstanceEvent):
    """One instance named by an AWS Health event. For scheduled changes `deadline` is the change's
    start time; issues have none."""

    event_arn: str
    event_type_code: str
    category: str
    start_time: datetime
    communication_id: str = ""  # shared by backup copies and pages of one notification
    backup: bool = False  # the copy AWS Health also delivers in a backup Region


@dataclass(frozen=True, slots=True, kw_only=True)
class CapacityBlockWarning(Event):
    """A Capacity Block's expiration warning: its reservation and the end the event announces."""

    reservation_id: str
    ends_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CapacityBlockExpiry(InstanceEvent):
    """One instance of an ending Capacity Block; `deadline` is when EC2 begins terminating it."""

    reservation_id: str
    block_ends_at: datetime


def block_instance_event(warning: CapacityBlockWarning, instance_id: str,
                         block_ends_at: datetime) -> CapacityBlockExpiry:
    """The warning as it concerns one of its block's instances; `block_ends_at` is the end the
    reservation itself gives (the event's may be stale)."""
    return CapacityBlockExpiry(event_id=warning.event_id, time=warning.time, region=warning.region,
                               account=warning.account, kind=EventKind.CAPACITY_BLOCK_EXPIRY,
                               instance_id=instance_id, reservation_id=warning.reservation_id,
                               block_ends_at=block_ends_at,
                               deadline=block_ends_at - CAPACITY_BLOCK_TERMINATION_LEAD)


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusImpaired(InstanceEvent):
    """An instance whose EC2 status checks the schedule function found impaired."""

    checks: tuple[str, ...]  # which: "instance", "system"


@dataclass(frozen=True, slots=True, kw_only=True)
class Ignored(Event):
    detail_type: str
    why: str
    instance_id: str = ""


# --- wire shapes -------------------------------------------------------------------------------


class _Envelope(msgspec.Struct, frozen=True):
    id: Annotated[str, Meta(min_length=1)]
    detail_type: str = field(name="detail-type")
    source: str
    account: str
    time: AwareTime
    region: str
    detail: dict[str, Any]
    resources: list[str] = []


class _Ec2InstanceDetail(msgspec.Struct, frozen=True):
    instance_id: InstanceId = field(name="instance-id")


class _SpotDetail(msgspec.Struct, frozen=True):
    instance_id: InstanceId = field(name="instance-id")
    instance_action: Literal["terminate", "stop", "hibernate"] = field(name="instance-action")


class _ReservationInterruptionDetail(msgspec.Struct, frozen=True):
    instance_id: InstanceId = field(name="instance-id")
    instance_action: Literal["terminate"] = field(name="instance-action")
    termination_time: AwareTime | None = field(default=None, name="instance-termination-time")


class _CapacityBlockDetail(msgspec.Struct, frozen=True):
    reservation_id: CapacityReservationId = field(name="capacity-reservation-id")
    # AWS shows no example value: read leniently, as only a hint (the reservation's EndDate decides).
    end_date: Any = field(default=None, name="end-date")


class _StatusImpairedDetail(msgspec.Struct, frozen=True):
    instance_id: InstanceId = field(name="instance-id")
    impaired: Annotated[list[Literal["instance", "system"]], Meta(min_length=1, max_length=2)]


class _StateDetail(msgspec.Struct, frozen=True):
    instance_id: InstanceId = field(name="instance-id")
    state: Literal["pending", "running", "stopping", "stopped", "shutting-down", "terminated"]


class _LifecycleDetail(msgspec.Struct, frozen=True):
    token: str = field(name="LifecycleActionToken")
    group: str = field(name="AutoScalingGroupName")
    hook: str = field(name="LifecycleHookName")
    instance_id: InstanceId = field(name="EC2InstanceId")
    transition: Literal["autoscaling:EC2_INSTANCE_TERMINATING", "autoscaling:EC2_INSTANCE_LAUNCHING"] = (
        field(name="LifecycleTransition"))
    notification_metadata: str = field(default="", name="NotificationMetadata")
    origin: str = field(default="", name="Origin")
    destination: str = field(default="", name="Destination")


class _LaunchDetail(msgspec.Struct, frozen=True):
    instance_id: InstanceId = field(name="EC2InstanceId")
    group: str = field(name="AutoScalingGroupName")
    activity_id: str = field(default="", name="ActivityId")


class _HealthEntity(msgspec.Struct, frozen=True, rename="camel"):
    entity_value: str
    status: str = ""


class _HealthDetail(msgspec.Struct, frozen=True, rename="camel"):
    event_arn: str
    service: str
    event_type_code: str
    event_type_category: str
    start_time: str  # RFC 1123, e.g. "Sat, 05 Jun 2021 06:27:57 GMT"
    status_code: str = ""
    communication_id: str = ""
    backup_event: str = "false"  # a JSON string, "true" or "false"
    affected_entities: list[_HealthEntity] = []


# Entity statuses that mean the instance needs nothing (any longer).
_SETTLED_ENTITY_STATUSES = frozenset({"RESOLVED", "UNIMPAIRED"})
_HEALTH_KINDS = {"scheduledChange": EventKind.SCHEDULED_MAINTENANCE, "issue": EventKind.DEGRADED_HARDWARE}


_T = TypeVar("_T")


# --- parsing -----------------------------------------------------------------------------------


def parse_event(raw: Mapping[str, Any] | bytes | str) -> tuple[Event, ...]:
    """The domain events in one EventBridge event (never an empty tuple).

    Raises EventError for unknown kinds and malformed events.
    """
    if isinstance(raw, bytes | str):
        try:
            raw = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            raise EventError("", f"not JSON: {exc}") from None
    if not isinstance(raw, Mapping):
        raise EventError("", f"expected a JSON object, got {type(raw).__name__}")
    raw_id = raw.get("id")
    event_id = raw_id if isinstance(raw_id, str) else ""
    envelope = _convert(raw, _Envelope, event_id, "envelope")
    parser = _PARSERS.get((envelope.source, envelope.detail_type))
    if parser is None:
        raise EventError(envelope.id, f"unsupported event: source {envelope.source!r}, "
                                      f"detail-type {envelope.detail_type!r}")
    return parser(envelope)


def _convert(data: Any, type_: type[_T], event_id: str, part: str) -> _T:
    try:
        return msgspec.convert(data, type_)
    except msgspec.ValidationError as exc:
        raise EventError(event_id, f"{part}: {exc}") from None


def _common(env: _Envelope) -> dict[str, Any]:
    return {"event_id": env.id, "time": _in_range(env.time, "time", env.id), "region": env.region,
            "account": env.account}


def _in_range(moment: datetime, name: str, event_id: str) -> datetime:
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST_EVENT_TIME <= utc < LATEST_EVENT_TIME:
        raise EventError(event_id, f"{name} {moment.isoformat()} is outside the years "
                                   f"{EARLIEST_EVENT_TIME.year}-{LATEST_EVENT_TIME.year - 1}")
    return utc


def _detail(env: _Envelope, type_: type[_T]) -> _T:
    return _convert(env.detail, type_, env.id, f"{env.detail_type} detail")


def _spot(env: _Envelope) -> tuple[Event, ...]:
    detail = _detail(env, _SpotDetail)
    common = _common(env)
    lead = timedelta(0) if detail.instance_action == "hibernate" else SPOT_WARNING_LEAD
    return (SpotInterruption(**common, kind=EventKind.SPOT_INTERRUPTION, instance_id=detail.instance_id,
                             deadline=common["time"] + lead, action=detail.instance_action),)


def _reservation_interruption(env: _Envelope) -> tuple[Event, ...]:
    detail = _detail(env, _ReservationInterruptionDetail)
    common = _common(env)
    deadline = (common["time"] + SPOT_WARNING_LEAD if detail.termination_time is None
                else _in_range(detail.termination_time, "instance-termination-time", env.id))
    return (InstanceEvent(**common, kind=EventKind.CAPACITY_RESERVATION_INTERRUPTION,
                          instance_id=detail.instance_id, deadline=deadline),)


def _capacity_block(env: _Envelope) -> tuple[Event, ...]:
    detail = _detail(env, _CapacityBlockDetail)
    return (CapacityBlockWarning(**_common(env), kind=EventKind.CAPACITY_BLOCK_WARNING,
                                 reservation_id=detail.reservation_id,
                                 ends_at=_hinted_time(detail.end_date)),)


def _hinted_time(value: Any) -> datetime | None:
    """An ISO 8601 time with a zone, in the years events may carry; else None."""
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
        utc = None if moment is None or moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return utc if utc is not None and EARLIEST_EVENT_TIME <= utc < LATEST_EVENT_TIME else None


def _status_impaired(env: _Envelope) -> tuple[Event, ...]:
    detail = _detail(env, _StatusImpairedDetail)
    return (StatusImpaired(**_common(env), kind=EventKind.INSTANCE_IMPAIRED, instance_id=detail.instance_id,
                           checks=tuple(dict.fromkeys(detail.impaired))),)


def status_impaired_message(instance_id: str, checks: Iterable[str], found_at: datetime, region: str,
                            account: str) -> dict[str, Any]:
    """The work-queue message the schedule function sends for an instance it found impaired: an
    event in EventBridge's envelope, from the product's own source (never an AWS one), so it is
    read, continued and shown (`handle --dry-run`) like any other."""
    found = found_at.astimezone(UTC).replace(microsecond=0)
    return {"version": "0", "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{instance_id}/{found.isoformat()}")),
            "detail-type": STATUS_IMPAIRED_DETAIL_TYPE, "source": PRODUCT_SOURCE, "account": account,
            "time": found.strftime("%Y-%m-%dT%H:%M:%SZ"), "region": region, "resources": [],
            "detail": {"instance-id": instance_id, "impaired": sorted(checks)}}


def _rebalance(env: _Envelope) -> tuple[Event, ...]:
    detail = _detail(env, _Ec2InstanceDetail)
    return (RebalanceRecommendation(**_common(env), kind=EventKind.REBALANCE_RECOMMENDATION,
                                    instance_id=detail.instance_id),)


def _state(env: _Envelope) -> tuple[Event, ...]:
    detail = _detail(env, _StateDetail)
    if detail.state in ("stopping", "shutting-down"):
        kind = EventKind.INSTANCE_STOPPING
    elif detail.state == "running":
        kind = EventKind.INSTANCE_RUNNING
    elif detail.state in ("stopped", "terminated"):
        kind = EventKind.INSTANCE_STOPPED
    else:
        return (Ignored(**_common(env), kind=EventKind.IGNORED, detail_type=env.detail_type,
                        instance_id=detail.instance_id, why=f"instance is {detail.state}"),)
    return (StateChange(**_common(env), kind=kind, instance_id=detail.instance_id, state=detail.state),)


def _lifecycle(env: _Envelope) -> tuple[Event, ...]:
    detail = _detail(env, _LifecycleDetail)
    expected, kind = _LIFECYCLE_TRANSITIONS[env.detail_type]
    if detail.transition != expected:
        raise EventError(env.id, f"{env.detail_type} with LifecycleTransition {detail.transition}")
    return (LifecycleHook(**_common(env), kind=kind, instance_id=detail.instance_id, group=detail.group,
                          hook=detail.hook, token=detail.token, transition=detail.transition,
                          notification_metadata=detail.notification_metadata, origin=detail.origin,
                          destination=detail.destination),)


def _launch(env: _Envelope) -> tuple[Event, ...]:
    detail = _detail(env, _LaunchDetail)
    return (LaunchSuccessful(**_common(env), kind=EventKind.LAUNCH_SUCCESSFUL, instance_id=detail.instance_id,
                             group=detail.group, activity_id=detail.activity_id),)


def _health(env: _Envelope) -> tuple[Event, ...]:
    detail = _detail(env, _HealthDetail)
    common = _common(env)
    kind = _HEALTH_KINDS.get(detail.event_type_category)

    def ignored(why: str) -> tuple[Event, ...]:
        return (Ignored(**common, kind=EventKind.IGNORED, detail_type=env.detail_type, why=why),)

    if detail.service != "EC2":
        return ignored(f"{detail.event_type_code} concerns {detail.service}, not EC2")
    if kind is None:
        return ignored(f"{detail.event_type_code} is in category {detail.event_type_category}")
    change = kind is EventKind.SCHEDULED_MAINTENANCE
    closed = detail.status_code == "closed"
    if closed and not change:
        return ignored(f"{detail.event_type_code} is closed")
    start = _health_time(detail.start_time, env.id)
    affected, settled = _affected_instances(env.resources, detail.affected_entities)
    if closed:
        affected, settled = [], affected + settled
    if not change:
        settled = []
    if not affected and not settled:
        return ignored(f"{detail.event_type_code} names no EC2 instance that is still affected")

    def notice(instance_id: str, kind: EventKind) -> HealthNotice:
        return HealthNotice(**common, kind=kind, instance_id=instance_id,
                            deadline=start if kind is EventKind.SCHEDULED_MAINTENANCE else None,
                            event_arn=detail.event_arn, event_type_code=detail.event_type_code,
                            category=detail.event_type_category, start_time=start,
                            communication_id=detail.communication_id, backup=detail.backup_event == "true")

    return (*(notice(i, kind) for i in affected),
            *(notice(i, EventKind.SCHEDULED_CHANGE_CLOSED) for i in settled))


def _health_time(value: str, event_id: str) -> datetime:
    """AWS Health times are RFC 1123 ("Fri, 3 Jun 2022 05:01:10 GMT")."""
    try:
        parsed = parsedate_to_datetime(value)
    except (ValueError, TypeError, OverflowError):
        raise EventError(event_id, f"startTime {value!r} is not an RFC 1123 date") from None
    # "-0000" (UTC, per RFC 2822) comes back without a zone.
    return _in_range(parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed, "startTime", event_id)


def _affected_instances(resources: Iterable[str], entities: Iterable[_HealthEntity]
                        ) -> tuple[list[str], list[str]]:
    """Instance ids named by `resources` and `affectedEntities`, in order, without duplicates: those
    still affected, and those whose entity is settled (resolved). Either may hold a bare id or an
    instance ARN."""
    entities = list(entities)
    settled = {_instance_id(e.entity_value) for e in entities if e.status in _SETTLED_ENTITY_STATUSES}
    candidates = [_instance_id(r) for r in resources]
    candidates += [_instance_id(e.entity_value) for e in entities]
    named = [i for i in dict.fromkeys(candidates) if i]
    return [i for i in named if i not in settled], [i for i in named if i in settled]


def _instance_id(value: str) -> str:
    """The instance id in "i-..." or "arn:aws:ec2:<region>:<account>:instance/i-...", else ""."""
    candidate = value.rsplit("/", 1)[-1] if value.startswith("arn:") else value
    return candidate if _INSTANCE_ID_RE.match(candidate) else ""  # anchored at both ends


# detail-type -> the LifecycleTransition it must carry, and the kind it becomes.
_LIFECYCLE_TRANSITIONS = {
    "EC2 Instance-terminate Lifecycle Action":
        ("autoscaling:EC2_INSTANCE_TERMINATING", EventKind.ASG_TERMINATION),
    "EC2 Instance-launch Lifecycle Action": ("autoscaling:EC2_INSTANCE_LAUNCHING", EventKind.ASG_LAUNCH),
}
_Parser = Callable[[_Envelope], tuple[Event, ...]]
_PARSERS: dict[tuple[str, str], _Parser] = {
    ("aws.ec2", "EC2 Spot Instance Interruption Warning"): _spot,
    ("aws.ec2", "EC2 Instance Rebalance Recommendation"): _rebalance,
    ("aws.ec2", "EC2 Capacity Reservation Instance Interruption Warning"): _reservation_interruption,
    # AWS's pages give the warning both names.
    ("aws.ec2", "Capacity Block Expiration Warning"): _capacity_block,
    ("aws.ec2", "Capacity Block Reservation Expiration Warning"): _capacity_block,
    ("aws.ec2", "EC2 Instance State-change Notification"): _state,
    ("aws.autoscaling", "EC2 Instance-terminate Lifecycle Action"): _lifecycle,
    ("aws.autoscaling", "EC2 Instance-launch Lifecycle Action"): _lifecycle,
    ("aws.autoscaling", "EC2 Instance Launch Successful"): _launch,
    ("aws.health", "AWS Health Event"): _health,
    (PRODUCT_SOURCE, STATUS_IMPAIRED_DETAIL_TYPE): _status_impaired,
}
