"""Deployment settings: one typed, validated `SpotRebalancerConfig` per cluster.

It is the functions' `Settings` (spot_rebalancer/config.py, where every setting is declared once)
plus what only the stack reads: the schedule, the groups that get hooks, sizes, networking and
alarms, declared the same way. The CDK app reads them from context (`cdk.json` or `-c key=value`,
keys in camelCase); code that uses the `SpotRebalancer` construct directly builds the dataclass.
Either way every value is checked when the config is built, so a bad value stops `cdk synth` with a
message naming the context key instead of reaching AWS or a running function.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from spot_rebalancer.config import (
    CLUSTER_NAME,
    CLUSTER_NAME_NOUN,
    LIFECYCLE_HEARTBEAT_MARGIN_SECONDS,
    TOPIC_ARN,
    Choice,
    ConfigError,
    OrNone,
    Percentage,
    RecommendationPolicy,
    Settings,
    Text,
    TextList,
    Whole,
    cluster_overrides,
    context_keys,
    read_setting,
    setting,
)

__all__ = ["RecommendationPolicy", "SpotRebalancerConfig", "SpotRebalancerConfigError", "load_app_config"]

# A bad deployment setting: the message starts with its context key.
SpotRebalancerConfigError = ConfigError

LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192,
                      2557, 2922, 3288, 3653)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

PDB_ALARM_MINIMUM_MINUTES = 5  # one alarm period
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_ACCOUNT = re.compile(r"^\d{12}$")
_EMAIL = r"[^@\s]+@[^@\s]+\.[^@\s]+"
_KMS_KEY_ARN = r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]{1,128}"


@dataclass(frozen=True, kw_only=True)
class SpotRebalancerConfig(Settings):
    """Everything one cluster's deployment needs. Context keys are the field names in camelCase."""

    # The schedule function's period: sweep, census metrics and one rebalancer cycle. Under 2 minutes
    # leaves a cycle too little time before the next.
    schedule_minutes: int = setting(5, Whole(2, 60, " (one cycle must finish before the next; under 2 "
                                                   "minutes leaves it too little time)"), env=False)
    # At most this many event-function invocations at once, however many events arrive (Lambda's SQS
    # event sources accept 2 to 1000).
    events_max_concurrency: int = setting(5, Whole(2, 1000), env=False)
    # The schedule function holds the whole snapshot: about 700 MB at 5,000 nodes / 150,000 pods
    # (BENCHMARKS.md). More memory also means more CPU. Lambda's range, in MB.
    schedule_memory_mb: int = setting(1024, Whole(128, 10240), env=False)
    # A private cluster endpoint: the functions run in these subnets.
    vpc_id: str | None = setting(None, OrNone(Text(r"vpc-[0-9a-f]{8,17}", "vpc-<hex>")), env=False)
    subnet_ids: tuple[str, ...] = setting((), TextList(Text(r"subnet-[0-9a-f]{8,17}", "subnet-<hex>")),
                                          env=False)
    security_group_ids: tuple[str, ...] = setting((), TextList(Text(r"sg-[0-9a-f]{8,17}", "sg-<hex>")),
                                                  env=False)
    # Alarms go to this topic, or to a new encrypted one; the e-mail address is subscribed to it.
    alarm_topic_arn: str | None = setting(None, OrNone(Text(TOPIC_ARN, "an SNS topic ARN")), env=False)
    # The customer managed KMS key notificationTopicArn is encrypted with, if any: publishing to it
    # needs kms:GenerateDataKey and kms:Decrypt on that key.
    notification_topic_key_arn: str | None = setting(None, OrNone(Text(_KMS_KEY_ARN, "a KMS key ARN")),
                                                     env=False)
    alarm_email: str | None = setting(None, OrNone(Text(_EMAIL, "an e-mail address")), env=False)
    spot_share_target_percent: float | None = setting(None, OrNone(Percentage()), env=False)
    misplaced_pods_threshold: int | None = setting(20, OrNone(Whole(0, 1_000_000)), env=False)
    # Alarm when more than this share of the moves settled in an hour failed (at least
    # MOVE_FAILURE_MIN_SETTLED of them); None turns it off.
    move_failure_alarm_percent: float | None = setting(50, OrNone(Percentage()), env=False)
    # Drains stop evicting at drainTimeoutSeconds, so a longer alarm could only ever see the rebalancer's.
    pdb_blocked_alarm_minutes: int = setting(10, Whole(PDB_ALARM_MINIMUM_MINUTES, 24 * 60), env=False)
    log_retention_days: int = setting(30, Whole(1, 3653, allowed=LOG_RETENTION_DAYS,
                                                allowed_note="CloudWatch Logs"), env=False)
    log_level: str = setting("INFO", Choice(LOG_LEVELS), env="POWERTOOLS_LOG_LEVEL")

    def __post_init__(self) -> None:
        # Accept lists from Python callers; the dataclass stays immutable.
        for name in ("recommendation_policies", "excluded_namespaces", "scheduler_names", "asg_names",
                     "subnet_ids", "security_group_ids"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        Settings.__post_init__(self)
        if not re.fullmatch(CLUSTER_NAME, self.cluster_name):
            raise ConfigError("clusterName", f"expected {CLUSTER_NAME_NOUN}, got {self.cluster_name!r}")
        if self.launch_lifecycle_hook and not self.asg_names:
            raise ConfigError("launchLifecycleHook", "needs asgNames: the launch hook is only put on named "
                                                     "groups, and an unnamed group's launches would wait for "
                                                     "nobody")
        # The shortest alarm (one 5-minute period) stays allowed under drains shorter than that.
        longest = max(self.drain_timeout_seconds // 60, PDB_ALARM_MINIMUM_MINUTES)
        if self.pdb_blocked_alarm_minutes > longest:
            raise ConfigError("pdbBlockedAlarmMinutes",
                              f"must be at most drainTimeoutSeconds in minutes ({longest}): a drain stops "
                              "evicting then, so a longer alarm never sees one blocked; got "
                              f"{self.pdb_blocked_alarm_minutes}")
        if self.notification_topic_key_arn and not self.notification_topic_arn:
            raise ConfigError("notificationTopicKeyArn",
                              "needs notificationTopicArn: the key of which topic?")
        if self.vpc_id is None and (self.subnet_ids or self.security_group_ids):
            raise ConfigError("vpcId", "required when subnetIds or securityGroupIds are given")
        if self.vpc_id is not None and not self.subnet_ids:
            raise ConfigError("subnetIds", "required with vpcId: the private subnets the functions run in")

    @property
    def lifecycle_heartbeat_seconds(self) -> int:
        return self.drain_timeout_seconds + LIFECYCLE_HEARTBEAT_MARGIN_SECONDS

    @property
    def vpc_attached(self) -> bool:
        return self.vpc_id is not None

    @classmethod
    def from_app_context(cls, context: Mapping[str, Any]) -> SpotRebalancerConfig:
        """From context values, which arrive as JSON types from cdk.json and as strings from -c;
        clusterName is required."""
        if not context.get("clusterName"):
            raise ConfigError("clusterName", "required (e.g. cdk deploy -c clusterName=prod)")
        return cls.from_context(context)


CONTEXT_KEYS = context_keys(SpotRebalancerConfig)


# ---- the app: several clusters, one stack each -------------------------------------------------


@dataclass(frozen=True)
class AppConfig:
    """What `app.py` deploys: one stack per cluster, all in one account and region."""

    clusters: tuple[SpotRebalancerConfig, ...]
    account: str | None = None
    region: str | None = None
    # Context that is not wrong enough to stop the synth: each stack shows these as CDK warnings.
    warnings: tuple[str, ...] = ()
    stack_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        names = tuple(stack_name(c.cluster_name) for c in self.clusters)
        if len(set(names)) != len(names):
            raise ConfigError("clusterName", f"two clusters would share a stack name: {list(names)}")
        object.__setattr__(self, "stack_names", names)


APP_KEYS = frozenset({"account", "region", "clusterOverrides"})


def stack_name(cluster_name: str) -> str:
    # Stack names allow letters, digits and hyphens only.
    return "SpotRebalancer-" + cluster_name.replace("_", "-")


def load_app_config(context: Mapping[str, Any]) -> AppConfig:
    """Settings from the app's context: `clusterName` may name several clusters (comma-separated or a
    JSON list); `clusterOverrides` maps a cluster name to the settings that differ for it."""
    ours = {k: v for k, v in context.items() if ":" not in k and not k.startswith("@")}
    known = CONTEXT_KEYS | APP_KEYS
    unknown = sorted(set(ours) - known)
    # The CDK CLI writes keys of its own (`cdk acknowledge`: acknowledged-issue-numbers, `cdk
    # cli-telemetry`: cli-telemetry), and other tools may too: only a near miss of ours is refused.
    typos = {key: meant for key in unknown if (meant := _meant(key, known)) is not None}
    if typos:
        raise ConfigError(f"unknown context key(s) {', '.join(typos)}",
                          "did you mean " + ", ".join(f"{meant} (for {key})" for key, meant in typos.items())
                          + f"? known: {', '.join(sorted(known))}")
    warnings = [f"context key {key} is not a spot-rebalancer setting; ignored" for key in unknown]
    account = ours.get("account")
    if account is not None and not _ACCOUNT.match(str(account)):
        raise ConfigError("account", f"expected a 12-digit AWS account id, got {account!r}")
    region = ours.get("region")
    if region is not None and not _REGION.match(str(region)):
        raise ConfigError("region", f"expected a region name like eu-west-1, got {region!r}")

    names = _cluster_names(ours.get("clusterName"))
    overrides = cluster_overrides(ours.get("clusterOverrides"))
    # cdk.json may keep every cluster's overrides while one deploy names only some of them.
    warnings += [f"clusterOverrides for {name} ignored: {name} is not in clusterName"
                 for name in sorted(set(overrides) - set(names))]
    shared = {k: v for k, v in ours.items() if k in CONTEXT_KEYS and k != "clusterName"}
    clusters = []
    for name in names:
        own = overrides.get(name, {})
        if not isinstance(own, dict) or "clusterName" in own or set(own) - CONTEXT_KEYS:
            raise ConfigError("clusterOverrides",
                              f"{name}: expected an object of settings (not clusterName), got {own!r}")
        clusters.append(SpotRebalancerConfig.from_app_context({**shared, **own, "clusterName": name}))
    return AppConfig(clusters=tuple(clusters), account=account and str(account), region=region,
                     warnings=tuple(warnings))


def _meant(key: str, known: Collection[str]) -> str | None:
    """The product's key `key` is likely a typo of: the same but for case, a prefix of it (or it of
    one), or a close spelling."""
    lowered = key.lower()
    for candidate in sorted(known):
        other = candidate.lower()
        if lowered == other or (min(len(lowered), len(other)) >= 4
                                and (other.startswith(lowered) or lowered.startswith(other))):
            return candidate
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.8)
    return close[0] if close else None


def _cluster_names(raw: object) -> tuple[str, ...]:
    names: tuple[str, ...]
    names = read_setting(TextList(Text()), "clusterName", raw) if raw else ()
    if not names:
        raise ConfigError("clusterName", "required (e.g. cdk deploy -c clusterName=prod)")
    return names
