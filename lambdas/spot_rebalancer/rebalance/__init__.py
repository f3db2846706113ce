"""The rebalancer's pure core: plan moves, judge them afterwards, nudge capacity, take a census.

The shell reads a snapshot, calls `plan`, evicts, records `move_records` into the History it keeps,
and next cycle calls `review` before planning again.
"""

from .census import Census, CensusRow, census
from .cluster import NodeGroup
from .cost import CostRow, FleetCost, PriceBook, fleet_cost
from .explain import Explanation, RuleResult, explain
from .history import (
    MOVE_REASON,
    Backoff,
    Eviction,
    History,
    Judgement,
    MoveRecord,
    Outcome,
    Review,
    move_records,
    review,
)
from .nudge import CapacityRequest
from .planner import Plan, Skip, SkipCode, plan
from .timestamps import NaiveClockError
from .workloads import FloorError, WorkloadRef, on_demand_floor, workload_of

__all__ = [
    "MOVE_REASON",
    "Backoff",
    "CapacityRequest",
    "Census",
    "CensusRow",
    "CostRow",
    "Eviction",
    "Explanation",
    "FleetCost",
    "FloorError",
    "History",
    "Judgement",
    "MoveRecord",
    "NaiveClockError",
    "NodeGroup",
    "Outcome",
    "Plan",
    "PriceBook",
    "Review",
    "RuleResult",
    "Skip",
    "SkipCode",
    "WorkloadRef",
    "census",
    "explain",
    "fleet_cost",
    "move_records",
    "on_demand_floor",
    "plan",
    "review",
    "workload_of",
]
