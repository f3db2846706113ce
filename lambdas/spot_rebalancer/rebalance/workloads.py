"""Workloads as the rebalancer sees them: a pod's controller, and its on-demand floor."""

from __future__ import annotations

import re
from math import ceil
from typing import NamedTuple

from ..objects import Pod


class WorkloadRef(NamedTuple):
    """A pod's controller owner. ReplicaSets stand for their Deployment."""

    namespace: str
    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.kind}/{self.name}"


def workload_of(pod: Pod) -> WorkloadRef | None:
    owner = pod.metadata.controller
    return WorkloadRef(pod.metadata.namespace, owner.kind, owner.name) if owner is not None else None


class FloorError(ValueError):
    """An on-demand floor that is neither a whole number nor a percentage."""


_FLOOR = re.compile(r"\s*([0-9]+)\s*(%?)\s*")


def on_demand_floor(value: str, replicas: int) -> int:
    """Replicas to keep on on-demand for "2" or "30%" (of `replicas`, rounded up: the safe side)."""
    match = _FLOOR.fullmatch(value)
    if match is None:
        raise FloorError(f"expected a whole number or a percentage, got {value!r}")
    number, percent = int(match.group(1)), match.group(2)
    if not percent:
        return number
    if number > 100:
        raise FloorError(f"a percentage above 100: {value!r}")
    return ceil(number * replicas / 100)
