"""A Capacity Block's expiration warning, fanned out: the warning names the reservation, so the
reservation is read (its end is the truth: the block may have been extended since), then the
instances in it that this deployment manages, each to be drained before EC2 terminates it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .aws import Ec2
from .config import Settings
from .drain_policy import capacity_block_end
from .events import (
    CAPACITY_BLOCK_TERMINATION_LEAD,
    CapacityBlockExpiry,
    CapacityBlockWarning,
    block_instance_event,
)
from .ownership import managed_cluster
from .results import Step, StepAction


@dataclass(frozen=True, slots=True)
class FanOut:
    """One drain event per instance of the block (none when the warning drains nothing), and why."""

    events: list[CapacityBlockExpiry] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)


class CapacityBlocks:
    def __init__(self, settings: Settings, ec2: Ec2, *,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._settings = settings
        self._ec2 = ec2
        self._now = now

    def fan_out(self, warning: CapacityBlockWarning) -> FanOut:
        reservation_id = warning.reservation_id
        reservation = self._ec2.capacity_reservation(reservation_id)
        if reservation is None:
            return _ignored(f"{reservation_id}: capacity reservation no longer exists")
        end = capacity_block_end(reservation.reservation_type, reservation.ends_at, warning.ends_at,
                                 self._now())
        if isinstance(end, str):
            return _ignored(f"{reservation_id}: {end}")
        instances = [i for i in self._ec2.reservation_instances(reservation_id)
                     if managed_cluster(i.tags, self._settings.cluster_name)]
        if not instances:
            return _ignored(f"{reservation_id}: no instance of a managed cluster runs in it")
        terminated_from = (end - CAPACITY_BLOCK_TERMINATION_LEAD).isoformat()
        return FanOut([block_instance_event(warning, i.instance_id, end) for i in instances],
                      [Step(StepAction.CONTINUE, reason=f"{i.instance_id}: drained before EC2 terminates "
                                                        f"it from {terminated_from}") for i in instances])


def _ignored(why: str) -> FanOut:
    return FanOut([], [Step(StepAction.IGNORE, reason=why)])
