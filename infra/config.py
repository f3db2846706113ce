"""Deployment settings: one typed, validated `SpotRebalancerConfig` per cluster.

The CDK app reads them from context (`cdk.json` or `-c key=value`, keys in camelCase); code that uses
the `SpotRebalancer` construct directly builds the dataclass. Either way every value is checked when
the config is built, so a bad value stops `cdk synth` with a message naming the context key instead
of reaching AWS or a running function.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from spot_rebalancer.config import (
    LIFECYCLE_RESULTS,
    RECOMMENDATION_ACTIONS,
    UNOWNED_POD_POLICIES,
    Settings,
)

# The functions' own defaults, so the deployed environment and the code never disagree.
_RUNTIME = Settings()

LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192,
                      2557, 2922, 3288, 3653)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Auto Scaling caps a lifecycle hook's heartbeat timeout at 7200 s; the hook waits for the drain plus
# this margin so the function can still complete the action after a drain that used all its time.
LIFECYCLE_HEARTBEAT_MARGIN_SECONDS = 120
MAX_LIFECYCLE_HEARTBEAT_SECONDS = 7200
# Lambda's environment is at most 4 KB in all; the other variables take well under half of it.
MAX_POLICIES_JSON = 2048

_CLUSTER_NAME = re.compile(r"^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_ACCOUNT = re.compile(r"^\d{12}$")
_VPC_ID = re.compile(r"^vpc-[0-9a-f]{8,17}$")
_SUBNET_ID = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_SECURITY_GROUP_ID = re.compile(r"^sg-[0-9a-f]{8,17}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_TOPIC_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# Kubernetes qualified names: an optional DNS-subdomain prefix, then a name of at most 63 characters.
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


class SpotRebalancerConfigError(ValueError):
    """A deployment setting the product cannot use; the message names the context key."""


@dataclass(frozen=True)
class RecommendationPolicy:
    """What a rebalance recommendation does to nodes whose labels match every pair in `selector`."""

    selector: Mapping[str, str]
    action: str

    def to_json(self) -> dict[str, Any]:
        return {"selector": dict(self.selector), "action": self.action}


def _context_key(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


@dataclass(frozen=True)
class SpotRebalancerConfig:
    """Everything one cluster's deployment needs. Context keys are these names in camelCase."""

    cluster_name: str
    # The schedule function's period: sweep, census metrics and one rebalancer cycle.
    schedule_minutes: int = 5
    dry_run: bool = _RUNTIME.dry_run
    # Rebalance recommendations: the first policy whose selector matches a node's labels decides.
    recommendation_policies: tuple[RecommendationPolicy, ...] = ()
    recommendation_default: str = _RUNTIME.recommendation_default
    recommendation_ttl_seconds: int = _RUNTIME.recommendation_ttl_seconds
    # Drains.
    drain_timeout_seconds: int = _RUNTIME.drain_timeout_seconds
    lifecycle_default_result: str = _RUNTIME.lifecycle_timeout_result
    unowned_pods: str = _RUNTIME.unowned_pods
    excluded_namespaces: tuple[str, ...] = _RUNTIME.excluded_namespaces
    opt_out_annotation: str = _RUNTIME.opt_out_annotation
    exclude_from_load_balancers: bool = _RUNTIME.exclude_from_load_balancers
    health_lead_time_seconds: int = _RUNTIME.health_lead_time_seconds
    # Auto Scaling groups that get the terminate hook (and the launch hook when asked for); they
    # also scope the lifecycle and launch rules and the lifecycle permissions.
    asg_names: tuple[str, ...] = ()
    launch_lifecycle_hook: bool = False
    lifecycle_tag_key: str = _RUNTIME.lifecycle_tag_key
    lifecycle_label_key: str = _RUNTIME.lifecycle_label_key
    # Rebalancer caps.
    max_evictions_per_cycle: int = _RUNTIME.max_evictions_per_cycle
    max_evictions_per_node: int = _RUNTIME.max_evictions_per_node
    max_evictions_per_namespace: int = _RUNTIME.max_evictions_per_namespace
    min_pod_age_seconds: int = _RUNTIME.min_pod_age_seconds
    capacity_nudge: bool = _RUNTIME.capacity_nudge
    # At most this many event-function invocations at once, however many events arrive.
    events_max_concurrency: int = 5
    # The schedule function holds the whole snapshot: about 700 MB at 5,000 nodes / 150,000 pods
    # (BENCHMARKS.md). More memory also means more CPU.
    schedule_memory_mb: int = 1024
    # A private cluster endpoint: the functions run in these subnets.
    vpc_id: str | None = None
    subnet_ids: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    # Alarms go to this topic, or to a new encrypted one; the e-mail address is subscribed to it.
    alarm_topic_arn: str | None = None
    alarm_email: str | None = None
    spot_share_target_percent: float | None = None
    misplaced_pods_threshold: int | None = 20
    pdb_blocked_alarm_minutes: int = 30
    log_retention_days: int = 30
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        # Accept lists from Python callers; the dataclass stays hashable and immutable.
        for name in ("recommendation_policies", "excluded_namespaces", "asg_names", "subnet_ids",
                     "security_group_ids"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for check in _CHECKS:
            check(self)

    @property
    def lifecycle_heartbeat_seconds(self) -> int:
        return self.drain_timeout_seconds + LIFECYCLE_HEARTBEAT_MARGIN_SECONDS

    @property
    def vpc_attached(self) -> bool:
        return self.vpc_id is not None

    @classmethod
    def from_context(cls, context: Mapping[str, Any]) -> SpotRebalancerConfig:
        """Build from context values, which arrive as JSON types from cdk.json and as strings from -c."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = _context_key(f.name)
            if key in context and context[key] is not None:
                values[f.name] = _COERCE[f.name](key, context[key])
        if "cluster_name" not in values:
            raise SpotRebalancerConfigError("clusterName: required (e.g. cdk deploy -c clusterName=prod)")
        return cls(**values)


CONTEXT_KEYS = frozenset(_context_key(f.name) for f in fields(SpotRebalancerConfig))


def _fail(key: str, message: str) -> SpotRebalancerConfigError:
    return SpotRebalancerConfigError(f"{key}: {message}")


# ---- coercion of raw context values ------------------------------------------------------------


def _as_str(key: str, raw: Any) -> str:
    if not isinstance(raw, str):
        raise _fail(key, f"expected a string, got {raw!r}")
    return raw


def _as_bool(key: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    raise _fail(key, f"expected true or false, got {raw!r}")


def _as_int(key: str, raw: Any) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and re.fullmatch(r"-?\d+", raw.strip()):
        return int(raw)
    raise _fail(key, f"expected a whole number, got {raw!r}")


def _as_float(key: str, raw: Any) -> float:
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return float(raw)
    if isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            pass
    raise _fail(key, f"expected a number, got {raw!r}")


def _as_json_or_raw(key: str, raw: Any) -> Any:
    if isinstance(raw, str) and raw.strip()[:1] in ("[", "{"):
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise _fail(key, f"not valid JSON: {exc}") from None
    return raw


def _as_str_tuple(key: str, raw: Any) -> tuple[str, ...]:
    """A JSON list, or from the command line a JSON list or comma-separated text."""
    raw = _as_json_or_raw(key, raw)
    if isinstance(raw, str):
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        return tuple(raw)
    raise _fail(key, f"expected a list of strings, got {raw!r}")


def _as_policies(key: str, raw: Any) -> tuple[RecommendationPolicy, ...]:
    raw = _as_json_or_raw(key, raw)
    if not isinstance(raw, list):
        raise _fail(key, f'expected a list like [{{"selector": {{"label": "value"}}, "action": "drain"}}], '
                         f"got {raw!r}")
    policies = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or set(item) != {"selector", "action"}:
            raise _fail(key, f"item {index}: expected exactly the keys selector and action, got {item!r}")
        if not isinstance(item["selector"], dict):
            raise _fail(key, f"item {index}: selector must map label names to values")
        policies.append(RecommendationPolicy(selector=dict(item["selector"]), action=item["action"]))
    return tuple(policies)


def _as_optional(coerce: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    # An empty string on the command line clears an optional setting.
    return lambda key, raw: None if raw == "" else coerce(key, raw)


_COERCE: dict[str, Callable[[str, Any], Any]] = {}
for _f in fields(SpotRebalancerConfig):
    _kind = str(_f.type)
    if _f.name == "recommendation_policies":
        _COERCE[_f.name] = _as_policies
    elif _kind.startswith("tuple[str"):
        _COERCE[_f.name] = _as_str_tuple
    elif _kind.startswith("bool"):
        _COERCE[_f.name] = _as_bool
    elif _kind.startswith("int"):
        _COERCE[_f.name] = _as_optional(_as_int) if "None" in _kind else _as_int
    elif _kind.startswith("float"):
        _COERCE[_f.name] = _as_optional(_as_float)
    elif _kind.startswith("str"):
        _COERCE[_f.name] = _as_optional(_as_str) if "None" in _kind else _as_str
    else:
        raise TypeError(f"no context coercion for {_f.name}: {_kind}")


# ---- validation --------------------------------------------------------------------------------


def _int_in(key: str, value: Any, low: int, high: int, why: str = "") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _fail(key, f"must be a whole number from {low} to {high}{why}, got {value!r}")


def _check_cluster(c: SpotRebalancerConfig) -> None:
    if not isinstance(c.cluster_name, str) or not _CLUSTER_NAME.match(c.cluster_name):
        raise _fail("clusterName", "must be an EKS cluster name (1-100 letters, digits, - and _, "
                                   f"starting with a letter or digit), got {c.cluster_name!r}")


def _check_schedule(c: SpotRebalancerConfig) -> None:
    _int_in("scheduleMinutes", c.schedule_minutes, 2, 60,
            " (one cycle must finish before the next; under 2 minutes leaves it too little time)")


def _check_choices(c: SpotRebalancerConfig) -> None:
    for key, value, choices in (
        ("recommendationDefault", c.recommendation_default, RECOMMENDATION_ACTIONS),
        ("lifecycleDefaultResult", c.lifecycle_default_result, LIFECYCLE_RESULTS),
        ("unownedPods", c.unowned_pods, UNOWNED_POD_POLICIES),
        ("logLevel", c.log_level, LOG_LEVELS),
    ):
        if value not in choices:
            raise _fail(key, f"expected one of {', '.join(choices)}, got {value!r}")


def _check_policies(c: SpotRebalancerConfig) -> None:
    encoded = json.dumps([p.to_json() for p in c.recommendation_policies
                          if isinstance(p, RecommendationPolicy)], separators=(",", ":"))
    if len(encoded) > MAX_POLICIES_JSON:
        raise _fail("recommendationPolicies",
                    f"{len(encoded)} characters of JSON; Lambda keeps all environment variables in 4 KB, "
                    f"so at most {MAX_POLICIES_JSON} fit here")
    for index, policy in enumerate(c.recommendation_policies):
        where = f"item {index}"
        if not isinstance(policy, RecommendationPolicy):
            raise _fail("recommendationPolicies", f"{where}: expected a RecommendationPolicy")
        if policy.action not in RECOMMENDATION_ACTIONS:
            raise _fail("recommendationPolicies",
                        f"{where}: action must be one of {', '.join(RECOMMENDATION_ACTIONS)}, "
                        f"got {policy.action!r}")
        if not policy.selector:
            raise _fail("recommendationPolicies",
                        f"{where}: an empty selector would match every node; use recommendationDefault")
        for label, value in policy.selector.items():
            if not isinstance(label, str) or not _LABEL_KEY.match(label):
                raise _fail("recommendationPolicies", f"{where}: {label!r} is not a Kubernetes label name")
            if not isinstance(value, str) or not _LABEL_VALUE.match(value):
                raise _fail("recommendationPolicies",
                            f"{where}: {value!r} is not a Kubernetes label value (for {label})")


def _check_durations(c: SpotRebalancerConfig) -> None:
    longest_drain = MAX_LIFECYCLE_HEARTBEAT_SECONDS - LIFECYCLE_HEARTBEAT_MARGIN_SECONDS
    _int_in("drainTimeoutSeconds", c.drain_timeout_seconds, 30, longest_drain,
            f" (the lifecycle hook waits for it plus {LIFECYCLE_HEARTBEAT_MARGIN_SECONDS} s, "
            f"and Auto Scaling allows at most {MAX_LIFECYCLE_HEARTBEAT_SECONDS} s)")
    _int_in("recommendationTtlSeconds", c.recommendation_ttl_seconds, 60, 7 * 86400)
    _int_in("healthLeadTimeSeconds", c.health_lead_time_seconds, 0, 14 * 86400)
    _int_in("minPodAgeSeconds", c.min_pod_age_seconds, 0, 7 * 86400)


def _check_caps(c: SpotRebalancerConfig) -> None:
    for key, value in (
        ("maxEvictionsPerCycle", c.max_evictions_per_cycle),
        ("maxEvictionsPerNode", c.max_evictions_per_node),
        ("maxEvictionsPerNamespace", c.max_evictions_per_namespace),
    ):
        _int_in(key, value, 0, 1000)
    # Lambda's SQS event sources accept a maximum concurrency from 2 to 1000.
    _int_in("eventsMaxConcurrency", c.events_max_concurrency, 2, 1000)
    # Lambda's memory range, in MB.
    _int_in("scheduleMemoryMb", c.schedule_memory_mb, 128, 10240)


def _check_namespaces(c: SpotRebalancerConfig) -> None:
    for namespace in c.excluded_namespaces:
        if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
            raise _fail("excludedNamespaces", f"{namespace!r} is not a Kubernetes namespace name")


def _check_tags_and_labels(c: SpotRebalancerConfig) -> None:
    key = c.lifecycle_tag_key
    if not isinstance(key, str) or not 1 <= len(key) <= 128 or key.lower().startswith("aws:"):
        raise _fail("lifecycleTagKey", f"must be an EC2 tag key (1-128 characters, not aws:...), got {key!r}")
    if not isinstance(c.lifecycle_label_key, str) or not _LABEL_KEY.match(c.lifecycle_label_key):
        raise _fail("lifecycleLabelKey", f"{c.lifecycle_label_key!r} is not a Kubernetes label name")
    if not isinstance(c.opt_out_annotation, str) or not _LABEL_KEY.match(c.opt_out_annotation):
        raise _fail("optOutAnnotation", f"{c.opt_out_annotation!r} is not a Kubernetes annotation name")


def _check_asgs(c: SpotRebalancerConfig) -> None:
    for name in c.asg_names:
        if not isinstance(name, str) or not 1 <= len(name) <= 255 or name.strip() != name:
            raise _fail("asgNames", f"{name!r} is not an Auto Scaling group name")
    if len(set(c.asg_names)) != len(c.asg_names):
        raise _fail("asgNames", f"lists a group twice: {list(c.asg_names)}")
    if c.launch_lifecycle_hook and not c.asg_names:
        raise _fail("launchLifecycleHook", "needs asgNames: the launch hook is only put on named groups, "
                                           "and an unnamed group's launches would wait for nobody")


def _check_network(c: SpotRebalancerConfig) -> None:
    if c.vpc_id is None:
        if c.subnet_ids or c.security_group_ids:
            raise _fail("vpcId", "required when subnetIds or securityGroupIds are given")
        return
    if not _VPC_ID.match(c.vpc_id):
        raise _fail("vpcId", f"expected vpc-<hex>, got {c.vpc_id!r}")
    if not c.subnet_ids:
        raise _fail("subnetIds", "required with vpcId: the private subnets the functions run in")
    for subnet in c.subnet_ids:
        if not _SUBNET_ID.match(subnet):
            raise _fail("subnetIds", f"expected subnet-<hex>, got {subnet!r}")
    for group in c.security_group_ids:
        if not _SECURITY_GROUP_ID.match(group):
            raise _fail("securityGroupIds", f"expected sg-<hex>, got {group!r}")


def _check_alarms(c: SpotRebalancerConfig) -> None:
    if c.alarm_topic_arn is not None and not _TOPIC_ARN.match(c.alarm_topic_arn):
        raise _fail("alarmTopicArn", f"expected an SNS topic ARN, got {c.alarm_topic_arn!r}")
    if c.alarm_email is not None and not _EMAIL.match(c.alarm_email):
        raise _fail("alarmEmail", f"expected an e-mail address, got {c.alarm_email!r}")
    target = c.spot_share_target_percent
    if target is not None and (not isinstance(target, (int, float)) or isinstance(target, bool)
                               or math.isnan(target) or not 0 < target <= 100):
        raise _fail("spotShareTargetPercent", f"must be a percentage above 0 and at most 100, got {target!r}")
    if c.misplaced_pods_threshold is not None:
        _int_in("misplacedPodsThreshold", c.misplaced_pods_threshold, 0, 1_000_000)
    _int_in("pdbBlockedAlarmMinutes", c.pdb_blocked_alarm_minutes, 5, 24 * 60)
    if c.log_retention_days not in LOG_RETENTION_DAYS:
        raise _fail("logRetentionDays", f"CloudWatch Logs accepts {', '.join(map(str, LOG_RETENTION_DAYS))}; "
                                        f"got {c.log_retention_days!r}")


_CHECKS = (_check_cluster, _check_schedule, _check_choices, _check_policies, _check_durations, _check_caps,
           _check_namespaces, _check_tags_and_labels, _check_asgs, _check_network, _check_alarms)


# ---- the app: several clusters, one stack each -------------------------------------------------


@dataclass(frozen=True)
class AppConfig:
    """What `app.py` deploys: one stack per cluster, all in one account and region."""

    clusters: tuple[SpotRebalancerConfig, ...]
    account: str | None = None
    region: str | None = None
    stack_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        names = tuple(stack_name(c.cluster_name) for c in self.clusters)
        if len(set(names)) != len(names):
            raise _fail("clusterName", f"two clusters would share a stack name: {list(names)}")
        object.__setattr__(self, "stack_names", names)


APP_KEYS = frozenset({"account", "region", "clusterOverrides"})


def stack_name(cluster_name: str) -> str:
    # Stack names allow letters, digits and hyphens only.
    return "SpotRebalancer-" + cluster_name.replace("_", "-")


def load_app_config(context: Mapping[str, Any]) -> AppConfig:
    """Settings from the app's context: `clusterName` may name several clusters (comma-separated or a
    JSON list); `clusterOverrides` maps a cluster name to the settings that differ for it."""
    ours = {k: v for k, v in context.items() if ":" not in k and not k.startswith("@")}
    unknown = sorted(set(ours) - CONTEXT_KEYS - APP_KEYS)
    if unknown:
        raise SpotRebalancerConfigError(f"unknown context key(s) {', '.join(unknown)}; "
                                        f"known: {', '.join(sorted(CONTEXT_KEYS | APP_KEYS))}")
    account = ours.get("account")
    if account is not None and not _ACCOUNT.match(str(account)):
        raise _fail("account", f"expected a 12-digit AWS account id, got {account!r}")
    region = ours.get("region")
    if region is not None and not _REGION.match(str(region)):
        raise _fail("region", f"expected a region name like eu-west-1, got {region!r}")

    names = _as_str_tuple("clusterName", ours["clusterName"]) if ours.get("clusterName") else ()
    if not names:
        raise SpotRebalancerConfigError("clusterName: required (e.g. cdk deploy -c clusterName=prod)")
    overrides = _as_json_or_raw("clusterOverrides", ours.get("clusterOverrides") or {})
    if not isinstance(overrides, dict):
        raise _fail("clusterOverrides",
                    f"expected an object mapping cluster names to settings, got {overrides!r}")
    strays = sorted(set(overrides) - set(names))
    if strays:
        raise _fail("clusterOverrides", f"names cluster(s) not in clusterName: {', '.join(strays)}")

    shared = {k: v for k, v in ours.items() if k in CONTEXT_KEYS and k != "clusterName"}
    clusters = []
    for name in names:
        own = overrides.get(name, {})
        if not isinstance(own, dict) or "clusterName" in own or set(own) - CONTEXT_KEYS:
            raise _fail("clusterOverrides", f"{name}: expected an object of settings (not clusterName), "
                                            f"got {own!r}")
        clusters.append(SpotRebalancerConfig.from_context({**shared, **own, "clusterName": name}))
    return AppConfig(clusters=tuple(clusters), account=account and str(account), region=region)
