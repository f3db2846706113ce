"""What the services did, as plain values: the steps of one event or sweep, and each eviction's
outcome. Every service returns these and the CLI prints them; nothing decides by matching text."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class StepAction(enum.StrEnum):
    TAINT = "taint"
    CORDON = "cordon"
    EVICT = "evict"
    SKIP = "skip"
    WAIT = "wait"  # a pod already terminating: waited for, not evicted again
    BLOCKED = "blocked"  # a budget kept refusing the pod's eviction until the drain stopped
    IGNORE = "ignore"
    CONTINUE = "continue"  # carried on in a later invocation
    COMPLETE_LIFECYCLE = "complete-lifecycle"
    TAG = "tag"
    LABEL = "label"
    REVERT = "revert"
    CANCEL = "cancel"  # a drain still to come called off
    SCALE_IN = "scale-in"


class StepOutcome(enum.StrEnum):
    NONE = ""
    # An eviction's (EvictionOutcome's values).
    ACCEPTED = "accepted"
    GONE = "gone"
    BLOCKED = "blocked"
    FAILED = "failed"
    DELETED = "deleted"
    # A lifecycle action's: the result it was completed with, or that it had already ended.
    CONTINUE = "CONTINUE"
    ABANDON = "ABANDON"
    ALREADY_ENDED = "already-ended"
    # A label's.
    ADDED = "added"
    CORRECTED = "corrected"
    # A revert's.
    REVERTED = "reverted"
    DRY_RUN = "dry-run"
    # A scale-in's.
    SCALED_IN = "scaled-in"
    AT_MINIMUM = "at-minimum"  # its group would go below its minimum size
    NOT_MANAGED = "not-managed"  # in no group, or one this deployment does not manage


@dataclass(frozen=True, slots=True)
class Step:
    """One thing done (or, in a dry run, to be done); the CLI prints these as JSON lines."""

    action: StepAction
    node: str = ""
    namespace: str = ""
    pod: str = ""
    reason: str = ""  # for people: why, or what exactly
    outcome: StepOutcome = StepOutcome.NONE

    def as_json(self) -> dict[str, str]:
        return {k: str(v) for k, v in (("action", self.action), ("node", self.node),
                                       ("namespace", self.namespace), ("pod", self.pod),
                                       ("reason", self.reason), ("outcome", self.outcome)) if v}


class DrainEnd(enum.StrEnum):
    """How a drain that ran ended (one continued in a later invocation has not ended)."""

    DRAINED = "drained"  # every pod to evict (or wait for) left the node in time
    DEADLINE_MISSED = "deadline-missed"  # pods were still on the node when its deadline came
    # A spot hibernation begins as its warning arrives: what could be evicted at once was, the rest
    # hibernates with the instance and resumes with it. No deadline was given, so none was missed.
    NO_NOTICE = "no-notice"


@dataclass(frozen=True, slots=True)
class DrainReport:
    """A drain that ended, for the people who run the fleet: what the notification says. The counts
    are of its last invocation; the events worker adds the pods its earlier invocations evicted."""

    node: str
    instance_id: str
    reason: str
    event_kind: str
    end: DrainEnd
    evicted: int
    blocked: int
    deleted: int = 0  # deleted at the deadline (forceAtDeadline)


@dataclass
class HandleResult:
    """What handling one event did, and whether it must be continued in another invocation."""

    steps: list[Step] = field(default_factory=list)
    continue_at: datetime | None = None
    started_at: datetime | None = None  # when its drain began; None while none has (a lead time)
    drain: DrainReport | None = None  # set when a drain ran and ended in this invocation


class EvictionOutcome(enum.Enum):
    ACCEPTED = "accepted"  # 201: the pod is being deleted
    GONE = "gone"  # 404: nothing left to evict
    BLOCKED = "blocked"  # 429 until the deadline: a PDB never allowed it
    FAILED = "failed"  # refused for another reason (403, 400, ...) or unreachable to the end
    DELETED = "deleted"  # still blocked when only its grace period was left: deleted (forceAtDeadline)

    @property
    def step_outcome(self) -> StepOutcome:
        return StepOutcome(self.value)


@dataclass(frozen=True, slots=True)
class EvictionResult:
    namespace: str
    name: str
    outcome: EvictionOutcome
    attempts: int
    message: str = ""
