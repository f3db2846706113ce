"""What the rebalancer may do: its safety rails and caps, with safe defaults."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from ..scheduling.capacity_type import LIFECYCLE_LABEL

if TYPE_CHECKING:
    from ..config import Settings

# Why the planner moves a pod; back-off is kept per workload and reason.
MOVE_REASON = "preferred-node-affinity"


class OptionsError(ValueError):
    """Rebalancer options that make no sense (a negative cap, a back-off cap below its base)."""


@dataclass(frozen=True, slots=True)
class RebalanceOptions:
    excluded_namespaces: frozenset[str] = frozenset({"kube-system"})
    # A pod, or its workload, with this annotation set to "true" is never moved.
    opt_out_annotation: str = "spot-rebalancer.io/disable"
    # "2" or "30%": replicas of a workload kept on on-demand nodes (on the workload or the pod).
    min_on_demand_annotation: str = "spot-rebalancer.io/min-on-demand"
    # The scheduler that will place the replacement must be the one whose rules we simulate.
    scheduler_names: frozenset[str] = frozenset({"", "default-scheduler"})
    min_pod_age_seconds: int = 300
    # Pods with a higher priority are left alone; the default spares the system-* classes.
    max_priority: int = 1_000_000_000
    max_evictions_per_cycle: int = 10
    max_evictions_per_node: int = 3
    max_evictions_per_namespace: int = 5
    # One replica of a workload in motion at a time.
    max_evictions_per_workload: int = 1
    # New nodes the capacity nudge may ask for in one cycle, over all node groups.
    max_nudge_nodes: int = 3
    lifecycle_label: str = LIFECYCLE_LABEL
    # Closed loop: a replacement not Ready after this long counts as a failed move; each failure
    # doubles the workload's back-off from the base, up to the cap.
    replacement_timeout_seconds: int = 900
    backoff_base_seconds: int = 300
    backoff_cap_seconds: int = 6 * 3600

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int) and f.name != "max_priority" and value < 0:
                raise OptionsError(f"{f.name} must not be negative, got {value}")
        if self.backoff_base_seconds == 0:
            raise OptionsError("backoff_base_seconds must be positive")
        if self.backoff_cap_seconds < self.backoff_base_seconds:
            raise OptionsError("backoff_cap_seconds must not be below backoff_base_seconds")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides) -> RebalanceOptions:
        """The options the deployed settings name; everything else keeps its default."""
        return cls(
            excluded_namespaces=frozenset(settings.excluded_namespaces),
            opt_out_annotation=settings.opt_out_annotation,
            min_pod_age_seconds=settings.min_pod_age_seconds,
            max_evictions_per_cycle=settings.max_evictions_per_cycle,
            max_evictions_per_node=settings.max_evictions_per_node,
            max_evictions_per_namespace=settings.max_evictions_per_namespace,
            lifecycle_label=settings.lifecycle_label_key,
            **overrides,
        )
