"""Settings, read once from the environment (the CDK stack sets them; the CLI takes flags on top).

Every variable is optional except where a deployed function needs it; a bad value raises ConfigError
naming the variable, so a misconfigured function fails at its first event instead of acting wrongly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

RECOMMENDATION_ACTIONS = ("none", "taint", "cordon", "drain")
LIFECYCLE_RESULTS = ("CONTINUE", "ABANDON")
UNOWNED_POD_POLICIES = ("evict", "skip")


def opts_out(value: str | None) -> bool:
    """Whether an opt-out annotation with this value (None: absent) protects its object: any value
    but "false" does, so that a value like "yes" protects rather than silently not."""
    return value is not None and value.strip().lower() != "false"


class ConfigError(ValueError):
    """A setting with a value the product cannot use."""


@dataclass(frozen=True, slots=True)
class RecommendationPolicy:
    """What a rebalance recommendation does to nodes whose labels match `selector`."""

    selector: dict[str, str]
    action: str


@dataclass(frozen=True, slots=True)
class Settings:
    # Which cluster(s): the single configured cluster, used when an instance's tags name none.
    cluster_name: str = ""
    # DynamoDB table for idempotency records and drain / move / recommendation state.
    state_table: str = ""
    # SQS queue where a drain that outlives one invocation is continued.
    work_queue_url: str = ""
    dry_run: bool = False
    # Rebalance recommendations: first matching policy wins, else `recommendation_default`.
    recommendation_policies: tuple[RecommendationPolicy, ...] = ()
    recommendation_default: str = "taint"
    recommendation_ttl_seconds: int = 1800
    # Drains.
    drain_timeout_seconds: int = 600
    lifecycle_timeout_result: str = "CONTINUE"
    unowned_pods: str = "evict"
    excluded_namespaces: tuple[str, ...] = ("kube-system",)
    opt_out_annotation: str = "spot-rebalancer.io/disable"
    exclude_from_load_balancers: bool = False
    health_lead_time_seconds: int = 3600
    complete_launch_lifecycle: bool = False
    # Lifecycle tag and label.
    lifecycle_tag_key: str = "Lifecycle"
    lifecycle_label_key: str = "node.kubernetes.io/lifecycle"
    # Rebalancer caps.
    max_evictions_per_cycle: int = 10
    max_evictions_per_node: int = 3
    max_evictions_per_namespace: int = 5
    min_pod_age_seconds: int = 300
    capacity_nudge: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            cluster_name=env.get("CLUSTER_NAME", ""),
            state_table=env.get("STATE_TABLE", ""),
            work_queue_url=env.get("WORK_QUEUE_URL", ""),
            dry_run=_bool(env, "DRY_RUN", False),
            recommendation_policies=_policies(env, "RECOMMENDATION_POLICIES"),
            recommendation_default=_choice(env, "RECOMMENDATION_DEFAULT", "taint", RECOMMENDATION_ACTIONS),
            recommendation_ttl_seconds=_int(env, "RECOMMENDATION_TTL_SECONDS", 1800),
            drain_timeout_seconds=_int(env, "DRAIN_TIMEOUT_SECONDS", 600),
            lifecycle_timeout_result=_choice(env, "LIFECYCLE_TIMEOUT_RESULT", "CONTINUE", LIFECYCLE_RESULTS),
            unowned_pods=_choice(env, "UNOWNED_PODS", "evict", UNOWNED_POD_POLICIES),
            excluded_namespaces=_list(env, "EXCLUDED_NAMESPACES", ("kube-system",)),
            opt_out_annotation=env.get("OPT_OUT_ANNOTATION", "spot-rebalancer.io/disable"),
            exclude_from_load_balancers=_bool(env, "EXCLUDE_FROM_LOAD_BALANCERS", False),
            health_lead_time_seconds=_int(env, "HEALTH_LEAD_TIME_SECONDS", 3600),
            complete_launch_lifecycle=_bool(env, "COMPLETE_LAUNCH_LIFECYCLE", False),
            lifecycle_tag_key=env.get("LIFECYCLE_TAG_KEY", "Lifecycle"),
            lifecycle_label_key=env.get("LIFECYCLE_LABEL_KEY", "node.kubernetes.io/lifecycle"),
            max_evictions_per_cycle=_int(env, "MAX_EVICTIONS_PER_CYCLE", 10),
            max_evictions_per_node=_int(env, "MAX_EVICTIONS_PER_NODE", 3),
            max_evictions_per_namespace=_int(env, "MAX_EVICTIONS_PER_NAMESPACE", 5),
            min_pod_age_seconds=_int(env, "MIN_POD_AGE_SECONDS", 300),
            capacity_nudge=_bool(env, "CAPACITY_NUDGE", False),
        )

    def recommendation_action(self, node_labels: Mapping[str, str]) -> str:
        """The rebalance-recommendation action for a node, by the first policy its labels match."""
        for policy in self.recommendation_policies:
            if all(node_labels.get(k) == v for k, v in policy.selector.items()):
                return policy.action
        return self.recommendation_default


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise ConfigError(f"{name}: expected true or false, got {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a whole number, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name}: must not be negative, got {value}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name) or default
    if raw not in choices:
        raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {raw!r}")
    return raw


def _list(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name)
    if raw is None:
        return default
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _policies(env: Mapping[str, str], name: str) -> tuple[RecommendationPolicy, ...]:
    """JSON: [{"selector": {"label": "value"}, "action": "cordon"}, ...]."""
    raw = env.get(name)
    if not raw:
        return ()
    try:
        items = json.loads(raw)
        if not isinstance(items, list):
            raise TypeError("not a list")
        policies = []
        for item in items:
            selector, action = item["selector"], item["action"]
            if not isinstance(selector, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in selector.items()
            ):
                raise TypeError("selector must map label names to values")
            if action not in RECOMMENDATION_ACTIONS:
                raise TypeError(f"action must be one of {', '.join(RECOMMENDATION_ACTIONS)}")
            policies.append(RecommendationPolicy(selector=dict(selector), action=action))
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"{name}: {exc}") from None
    return tuple(policies)
