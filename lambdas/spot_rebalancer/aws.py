"""EC2 and Auto Scaling: what the product reads about instances and the calls it makes on them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .results import StepOutcome

# DescribeInstanceStatus's two checks: the instance's own (its OS, its network configuration) and
# the system's (the host, its power and network).
STATUS_CHECKS = ("instance", "system")
DESCRIBE_BATCH = 1000  # DescribeInstances accepts at most 1,000 instance ids a call
# Throttling and transient errors are retried by botocore's standard mode with backoff.
RETRY_CONFIG = {"mode": "standard", "max_attempts": 8}
# How Auto Scaling's ValidationError begins when a lifecycle action is no longer waiting.
ENDED_ACTION = "No active Lifecycle Action found"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Instance:
    instance_id: str
    lifecycle: str  # "spot" or "on-demand" (EC2 leaves InstanceLifecycle out for on-demand)
    state: str
    private_dns_name: str = ""
    availability_zone: str = ""
    architecture: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    launched_at: datetime | None = None  # when it last started running (a stop and start moves it)


@dataclass(frozen=True, slots=True)
class CapacityReservation:
    reservation_id: str
    reservation_type: str  # "capacity-block" for a Capacity Block, "default" for an On-Demand one
    state: str  # active, expired, scheduled, payment-pending, ...
    ends_at: datetime | None  # None: no end date (an unlimited On-Demand reservation)


def boto_config() -> Any:
    from botocore.config import Config

    return Config(retries=RETRY_CONFIG)


# A call an invocation makes on its way out (handing failed records back early) takes at most this
# long: one attempt, short timeouts. Failing it costs only speed.
QUICK_CALL_SECONDS = 2


def quick_config() -> Any:
    from botocore.config import Config

    return Config(connect_timeout=QUICK_CALL_SECONDS / 2, read_timeout=QUICK_CALL_SECONDS / 2,
                  retries={"mode": "standard", "max_attempts": 0})


class Ec2:
    def __init__(self, client: Any) -> None:
        self._client = client

    def describe(self, instance_ids: Iterable[str]) -> dict[str, Instance]:
        """The instances that exist among `instance_ids`, batched; missing ones are left out."""
        ids = sorted(set(instance_ids))
        found: dict[str, Instance] = {}
        for start in range(0, len(ids), DESCRIBE_BATCH):
            batch = ids[start:start + DESCRIBE_BATCH]
            for page in self._describe_pages(batch):
                for reservation in page.get("Reservations", []):
                    for raw in reservation.get("Instances", []):
                        instance = _instance(raw)
                        found[instance.instance_id] = instance
        return found

    def _describe_pages(self, batch: list[str]) -> Iterable[dict]:
        # Asking by id fails the whole call when one id no longer exists; a filter on the id
        # simply leaves it out, which is what a fleet sweep wants.
        paginator = self._client.get_paginator("describe_instances")
        return paginator.paginate(Filters=[{"Name": "instance-id", "Values": batch}])

    def capacity_reservation(self, reservation_id: str) -> CapacityReservation | None:
        """The reservation, or None when EC2 no longer knows it."""
        from botocore.exceptions import ClientError

        try:
            found = self._client.describe_capacity_reservations(
                CapacityReservationIds=[reservation_id]).get("CapacityReservations", [])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidCapacityReservationId.NotFound":
                return None
            raise
        if not found:
            return None
        raw = found[0]
        return CapacityReservation(reservation_id=raw["CapacityReservationId"],
                                   reservation_type=raw.get("ReservationType", "default"),
                                   state=raw.get("State", ""), ends_at=raw.get("EndDate"))

    def reservation_instances(self, reservation_id: str) -> list[Instance]:
        """The pending and running instances in the capacity reservation."""
        paginator = self._client.get_paginator("describe_instances")
        pages = paginator.paginate(Filters=[
            {"Name": "capacity-reservation-id", "Values": [reservation_id]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]}])
        return [_instance(raw) for page in pages for reservation in page.get("Reservations", [])
                for raw in reservation.get("Instances", [])]

    def impaired_instances(self) -> dict[str, tuple[str, ...]]:
        """The running instances of the region whose instance or system status check is impaired,
        with which ("instance", "system"). Two filtered listings (filters of different names are
        ANDed), each paginated: impaired instances are few, so neither is long."""
        paginator = self._client.get_paginator("describe_instance_status")
        impaired: dict[str, list[str]] = {}
        for check in STATUS_CHECKS:
            impaired_only = [{"Name": f"{check}-status.status", "Values": ["impaired"]}]
            for page in paginator.paginate(Filters=impaired_only):
                for status in page.get("InstanceStatuses", []):
                    impaired.setdefault(status["InstanceId"], []).append(check)
        return {instance: tuple(checks) for instance, checks in impaired.items()}

    def tag(self, instance_ids: list[str], key: str, value: str) -> None:
        if instance_ids:
            self._client.create_tags(Resources=instance_ids, Tags=[{"Key": key, "Value": value}])


def _instance(raw: dict) -> Instance:
    return Instance(
        instance_id=raw["InstanceId"],
        lifecycle="spot" if raw.get("InstanceLifecycle") == "spot" else "on-demand",
        state=raw.get("State", {}).get("Name", ""),
        private_dns_name=raw.get("PrivateDnsName", ""),
        availability_zone=raw.get("Placement", {}).get("AvailabilityZone", ""),
        architecture=raw.get("Architecture", ""),
        tags={t["Key"]: t.get("Value", "") for t in raw.get("Tags", [])},
        launched_at=raw.get("LaunchTime"),
    )


@dataclass(frozen=True, slots=True)
class LifecycleAction:
    """An Auto Scaling lifecycle hook waiting on one instance."""

    group: str
    hook: str
    token: str
    instance_id: str


class AutoScaling:
    def __init__(self, client: Any) -> None:
        self._client = client

    def heartbeat(self, action: LifecycleAction) -> bool:
        """Extend the hook's timeout; False if the action has already ended."""
        return self._still_active(action, lambda: self._client.record_lifecycle_action_heartbeat(
            AutoScalingGroupName=action.group, LifecycleHookName=action.hook,
            LifecycleActionToken=action.token, InstanceId=action.instance_id))

    def complete(self, action: LifecycleAction, result: str) -> StepOutcome:
        """Complete the action with `result` (CONTINUE or ABANDON); the outcome: that result, or
        ALREADY_ENDED if the action had already ended (completed, timed out, abandoned)."""
        completed = self._still_active(action, lambda: self._client.complete_lifecycle_action(
            AutoScalingGroupName=action.group, LifecycleHookName=action.hook,
            LifecycleActionToken=action.token, InstanceId=action.instance_id,
            LifecycleActionResult=result))
        return StepOutcome(result) if completed else StepOutcome.ALREADY_ENDED

    @staticmethod
    def _still_active(action: LifecycleAction, call: Callable[[], object]) -> bool:
        # Auto Scaling answers a call on an action that is over with a ValidationError: retrying
        # it (or sending the event to the DLQ) cannot help, so it is an outcome, not a failure.
        from botocore.exceptions import ClientError

        try:
            call()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") == "ValidationError" and ENDED_ACTION in error.get("Message", ""):
                log.warning("lifecycle action %s on %s had already ended", action.hook, action.instance_id)
                return False
            raise
        return True

    def scale_in(self, instance_id: str, managed: Callable[[str, dict[str, str]], bool]) -> StepOutcome:
        """Terminate the instance through its Auto Scaling group, decrementing the group's desired
        capacity, if `managed(group name, group tags)` and the group stays at or above its minimum."""
        found = self._client.describe_auto_scaling_instances(InstanceIds=[instance_id]).get(
            "AutoScalingInstances", [])
        if not found:
            return StepOutcome.NOT_MANAGED
        name = found[0]["AutoScalingGroupName"]
        groups = self._client.describe_auto_scaling_groups(AutoScalingGroupNames=[name]).get(
            "AutoScalingGroups", [])
        if not groups or not managed(name, {t["Key"]: t.get("Value", "") for t in groups[0].get("Tags", [])}):
            return StepOutcome.NOT_MANAGED
        if groups[0]["DesiredCapacity"] - 1 < groups[0]["MinSize"]:
            return StepOutcome.AT_MINIMUM
        self._client.terminate_instance_in_auto_scaling_group(InstanceId=instance_id,
                                                              ShouldDecrementDesiredCapacity=True)
        return StepOutcome.SCALED_IN

    def raise_desired_capacity(self, group: str, by: int) -> int:
        """Add up to `by` instances to the group, never above its max size; returns how many."""
        described = self._client.describe_auto_scaling_groups(AutoScalingGroupNames=[group])
        groups = described.get("AutoScalingGroups", [])
        if not groups or by <= 0:
            return 0
        current, maximum = groups[0]["DesiredCapacity"], groups[0]["MaxSize"]
        added = max(0, min(by, maximum - current))
        if added:
            self._client.set_desired_capacity(AutoScalingGroupName=group,
                                              DesiredCapacity=current + added, HonorCooldown=False)
        return added
