"""Settings, declared once: each is one field of `Settings` (or of the deployment's
`infra.config.SpotRebalancerConfig`, which adds what only the stack reads) with its default, its
kind (type, bounds, how text becomes a value) and its names: the environment variable the functions
read (the field in upper case) and the CDK context key (the field in camelCase).

The functions read `Settings.from_env()`; the stack writes `to_env()` into their environment and
reads `from_context()` from cdk.json and `-c key=value`; every value, however it arrives, passes the
same checks when the settings are built, so a bad value stops `cdk synth` or a function's start
with a message naming the setting instead of reaching AWS or acting wrongly.
"""

from __future__ import annotations

import json
import math
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from datetime import datetime
from typing import Any, TypeVar

from .label_selector import Selector, SelectorError, parse_selector

RECOMMENDATION_ACTIONS = ("none", "taint", "cordon", "drain")
LIFECYCLE_RESULTS = ("CONTINUE", "ABANDON")
UNOWNED_POD_POLICIES = ("evict", "skip")
# Lambda keeps all environment variables in 4 KB; the other variables take well under half of it.
MAX_POLICIES_JSON = 2048
# Auto Scaling caps a lifecycle hook's heartbeat timeout at 7200 s; the hook waits for the drain plus
# this margin so the function can still complete the action after a drain that used all its time.
LIFECYCLE_HEARTBEAT_MARGIN_SECONDS = 120
MAX_LIFECYCLE_HEARTBEAT_SECONDS = 7200


MAX_PROBLEM = 300


class ConfigError(ValueError):
    """A setting with a value the product cannot use; the message starts with the setting's name."""

    def __init__(self, name: str, problem: str) -> None:
        if len(problem) > MAX_PROBLEM:  # a value pasted by mistake (or by malice) stays a one-liner
            problem = f"{problem[:MAX_PROBLEM - 40]}... ({len(problem)} characters)"
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem


class BadValue(ValueError):
    """A value a setting's kind refuses; the message says why (its setting is named by the caller)."""


# --- kinds: how a setting's values are read, checked and written -----------------------------


class Kind(ABC):
    """Reads a value from the environment (text) or CDK context (text, or a JSON value from
    cdk.json), checks a value however it was made, and writes it back as environment text."""

    @abstractmethod
    def read(self, raw: object) -> object:
        """The value `raw` stands for; BadValue when it stands for none."""

    @abstractmethod
    def check(self, value: object) -> None:
        """Raise BadValue when the value is not one this setting takes."""

    def write(self, value: Any) -> str:
        return str(value)


_WHOLE = re.compile(r"-?[0-9]{1,19}")


@dataclass(frozen=True)
class Whole(Kind):
    low: int
    high: int
    why: str = ""  # said after the range
    allowed: tuple[int, ...] = ()  # when only some values in the range exist
    allowed_note: str = ""

    def read(self, raw: object) -> object:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and _WHOLE.fullmatch(raw.strip()):
            return int(raw)
        raise BadValue(f"expected a whole number, got {raw!r}")

    def check(self, value: object) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not self.low <= value <= self.high:
            raise BadValue(f"must be a whole number from {self.low} to {self.high}{self.why}, got {value!r}")
        if self.allowed and value not in self.allowed:
            raise BadValue(f"{self.allowed_note} accepts {', '.join(map(str, self.allowed))}; got {value!r}")


@dataclass(frozen=True)
class Percentage(Kind):
    """Above 0, at most 100."""

    def read(self, raw: object) -> object:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)
        if isinstance(raw, str):
            try:
                return float(raw)
            except ValueError:
                pass
        raise BadValue(f"expected a number, got {raw!r}")

    def check(self, value: object) -> None:
        if (not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value)
                or not 0 < value <= 100):
            raise BadValue(f"must be a percentage above 0 and at most 100, got {value!r}")


_COUNT_OR_SHARE = re.compile(r"([0-9]{1,19})(%?)")


@dataclass(frozen=True)
class CountOrShare(Kind):
    """A count from 0 to `high` ("3", or a JSON number) or a percentage from 1% to 100% ("25%"),
    kept as its text; `share_of` says how many it allows of a total."""

    high: int

    def read(self, raw: object) -> object:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return str(raw)
        if isinstance(raw, str):
            return raw.strip()
        raise BadValue(f"expected a count or a percentage, got {raw!r}")

    def check(self, value: object) -> None:
        match = _COUNT_OR_SHARE.fullmatch(value) if isinstance(value, str) else None
        number = int(match.group(1)) if match else -1
        if match is None or (number > self.high if not match.group(2) else not 1 <= number <= 100):
            raise BadValue(f"must be a count from 0 to {self.high} or a percentage from 1% to 100%, "
                           f"got {value!r}")


def share_of(value: str, total: int) -> int:
    """What a CountOrShare value allows of `total`: the count, or the percentage rounded down but at
    least 1."""
    match = _COUNT_OR_SHARE.fullmatch(value)
    assert match is not None, "settings are checked when built"
    number = int(match.group(1))
    return max(1, number * total // 100) if match.group(2) else number


@dataclass(frozen=True)
class Flag(Kind):
    """true or false, in any case (or a JSON boolean)."""

    def read(self, raw: object) -> object:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
            return raw.strip().lower() == "true"
        raise BadValue(f"expected true or false, got {raw!r}")

    def check(self, value: object) -> None:
        if not isinstance(value, bool):
            raise BadValue(f"expected true or false, got {value!r}")

    def write(self, value: Any) -> str:
        return "true" if value else "false"


@dataclass(frozen=True)
class Choice(Kind):
    choices: tuple[str, ...]

    def read(self, raw: object) -> object:
        self.check(raw)
        return raw

    def check(self, value: object) -> None:
        if value not in self.choices:
            raise BadValue(f"expected one of {', '.join(self.choices)}, got {value!r}")


@dataclass(frozen=True)
class Text(Kind):
    """A string, optionally matching `pattern` (or passing `valid`); `noun` says what it must be."""

    pattern: str = ""
    noun: str = ""
    valid: Callable[[str], bool] | None = None
    empty_ok: bool = False

    def read(self, raw: object) -> object:
        if not isinstance(raw, str):
            raise BadValue(f"expected a string, got {raw!r}")
        return raw

    def check(self, value: object) -> None:
        if not isinstance(value, str):
            raise BadValue(f"expected a string, got {value!r}")
        if not self.fits(value):
            raise BadValue(f"expected {self.noun}, got {value!r}")

    def fits(self, value: str) -> bool:
        if self.empty_ok and value == "":
            return True
        return (not self.pattern or re.fullmatch(self.pattern, value) is not None) and (
            self.valid is None or self.valid(value))


@dataclass(frozen=True)
class TextList(Kind):
    """A JSON list of strings, or text separated by commas; each item a valid `item`."""

    item: Text
    unique: str = ""  # when set, an item listed twice is refused with this noun ("a group")

    def read(self, raw: object) -> object:
        raw = parse_json_or_text(raw)
        if isinstance(raw, str):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if isinstance(raw, list) and all(isinstance(part, str) for part in raw):
            return tuple(raw)
        raise BadValue(f"expected a list of strings, got {raw!r}")

    def check(self, value: object) -> None:
        if not isinstance(value, tuple) or not all(isinstance(part, str) for part in value):
            raise BadValue(f"expected a list of strings, got {value!r}")
        for part in value:
            if not self.item.fits(part):
                raise BadValue(f"{part!r} is not {self.item.noun}")
        if self.unique and len(set(value)) != len(value):
            raise BadValue(f"lists {self.unique} twice: {list(value)}")

    def write(self, value: Any) -> str:
        return ",".join(value)


@dataclass(frozen=True)
class OrNone(Kind):
    """Unset (None) or a value of `inner`; empty text unsets it."""

    inner: Kind

    def read(self, raw: object) -> object:
        return None if raw == "" else self.inner.read(raw)

    def check(self, value: object) -> None:
        if value is not None:
            self.inner.check(value)

    def write(self, value: Any) -> str:
        return "" if value is None else self.inner.write(value)


@dataclass(frozen=True)
class LabelSelectorText(Kind):
    """A label selector in kubectl's syntax (`app in (web,api),tier!=db`); empty selects everything."""

    def read(self, raw: object) -> object:
        if not isinstance(raw, str):
            raise BadValue(f"expected a label selector as text, got {raw!r}")
        try:
            return parse_selector(raw)
        except SelectorError as exc:
            raise BadValue(str(exc)) from None

    def check(self, value: object) -> None:
        if not isinstance(value, Selector):
            raise BadValue(f"expected a label selector, got {value!r}")


def parse_json_or_text(raw: object) -> object:
    """JSON text (a list or an object) as its value; anything else as it is."""
    if isinstance(raw, str) and raw.strip()[:1] in ("[", "{"):
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise BadValue(f"not valid JSON: {exc}") from None
    return raw


# Kubernetes qualified names: an optional DNS-subdomain prefix, then a name of at most 63 characters.
LABEL_KEY = (r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
             r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
LABEL_NOUN = "a Kubernetes label name"
ANNOTATION_NOUN = "a Kubernetes annotation name"
LABEL_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?"
NAMESPACE = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
CLUSTER_NAME = r"[0-9A-Za-z][A-Za-z0-9_-]{0,99}"
CLUSTER_NAME_NOUN = "an EKS cluster name (1-100 letters, digits, - and _, starting with a letter or digit)"


@dataclass(frozen=True, slots=True)
class RecommendationPolicy:
    """What a rebalance recommendation does to nodes whose labels match every pair in `selector`."""

    selector: Mapping[str, str]
    action: str

    def to_json(self) -> dict[str, Any]:
        return {"selector": dict(self.selector), "action": self.action}


@dataclass(frozen=True)
class Policies(Kind):
    """JSON: [{"selector": {"label": "value"}, "action": "cordon"}, ...]."""

    def read(self, raw: object) -> object:
        raw = parse_json_or_text(raw)
        if not isinstance(raw, list):
            raise BadValue(f'expected a list like [{{"selector": {{"label": "value"}}, "action": "drain"}}], '
                           f"got {raw!r}")
        policies = []
        for index, item in enumerate(raw):
            if not isinstance(item, dict) or set(item) != {"selector", "action"}:
                raise BadValue(f"item {index}: expected exactly the keys selector and action, got {item!r}")
            if not isinstance(item["selector"], dict):
                raise BadValue(f"item {index}: selector must map label names to values")
            policies.append(RecommendationPolicy(selector=dict(item["selector"]), action=item["action"]))
        return tuple(policies)

    def check(self, value: object) -> None:
        if not isinstance(value, tuple):
            raise BadValue(f"expected a list of policies, got {value!r}")
        for index, policy in enumerate(value):
            where = f"item {index}"
            if not isinstance(policy, RecommendationPolicy):
                raise BadValue(f"{where}: expected a RecommendationPolicy")
            if policy.action not in RECOMMENDATION_ACTIONS:
                raise BadValue(f"{where}: action must be one of {', '.join(RECOMMENDATION_ACTIONS)}, "
                               f"got {policy.action!r}")
            if not policy.selector:
                raise BadValue(f"{where}: an empty selector would match every node; "
                               "use recommendationDefault")
            for label, label_value in policy.selector.items():
                if not isinstance(label, str) or not re.fullmatch(LABEL_KEY, label):
                    raise BadValue(f"{where}: {label!r} is not a Kubernetes label name")
                if not isinstance(label_value, str) or not re.fullmatch(LABEL_VALUE, label_value):
                    raise BadValue(f"{where}: {label_value!r} is not a Kubernetes label value (for {label})")
        encoded = self.write(value)
        if len(encoded) > MAX_POLICIES_JSON:
            raise BadValue(f"{len(encoded)} characters of JSON; Lambda keeps all environment variables in "
                           f"4 KB, so at most {MAX_POLICIES_JSON} fit here")

    def write(self, value: Any) -> str:
        return json.dumps([p.to_json() for p in value], separators=(",", ":"))


def read_setting(kind: Kind, name: str, raw: object) -> Any:
    """`kind.read(raw)`, a refusal raised as ConfigError naming `name`."""
    try:
        return kind.read(raw)
    except BadValue as exc:
        raise ConfigError(name, str(exc)) from None


@dataclass(frozen=True, slots=True)
class Window:
    """When the rebalancer may move pods: from each time `cron` names (in `time_zone`), for
    `minutes`."""

    cron: str
    minutes: int
    time_zone: str = "UTC"

    def to_json(self) -> dict[str, Any]:
        return {"cron": self.cron, "minutes": self.minutes, "timeZone": self.time_zone}


_WINDOW_KEYS = {"cron", "minutes", "timeZone"}
_INSTANCE_TYPE = re.compile(r"[a-z0-9-]+\.[a-z0-9-]+")


@dataclass(frozen=True)
class Windows(Kind):
    """JSON: [{"cron": "0 22 * * 1-5", "minutes": 240, "timeZone": "Europe/Paris"}, ...]."""

    def read(self, raw: object) -> object:
        raw = parse_json_or_text(raw)
        if not isinstance(raw, list):
            raise BadValue(f'expected a list like [{{"cron": "0 22 * * 1-5", "minutes": 240, '
                           f'"timeZone": "Europe/Paris"}}], got {raw!r}')
        windows = []
        for index, item in enumerate(raw):
            if not isinstance(item, dict) or not {"cron", "minutes"} <= set(item) <= _WINDOW_KEYS:
                raise BadValue(f"item {index}: expected the keys cron, minutes and (optionally) timeZone, "
                               f"got {item!r}")
            windows.append(Window(item["cron"], item["minutes"], item.get("timeZone", "UTC")))
        return tuple(windows)

    def check(self, value: object) -> None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        from cronsim import CronSim, CronSimError

        if not isinstance(value, tuple) or not all(isinstance(w, Window) for w in value):
            raise BadValue(f"expected a list of windows, got {value!r}")
        for index, window in enumerate(value):
            if not isinstance(window.minutes, int) or isinstance(window.minutes, bool) \
                    or not 1 <= window.minutes <= 7 * 24 * 60:
                raise BadValue(f"item {index}: minutes must be a whole number from 1 to {7 * 24 * 60}, "
                               f"got {window.minutes!r}")
            try:
                zone = ZoneInfo(window.time_zone)
            except (ZoneInfoNotFoundError, ValueError):
                raise BadValue(f"item {index}: {window.time_zone!r} is not a time zone") from None
            try:
                CronSim(window.cron, datetime.now(zone))
            except (CronSimError, TypeError):
                raise BadValue(f"item {index}: {window.cron!r} is not a cron expression "
                               "(minute hour day-of-month month day-of-week)") from None

    def write(self, value: Any) -> str:
        return json.dumps([w.to_json() for w in value], separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Price:
    """What an instance type costs an hour (USD) where list prices are not what is paid."""

    on_demand: float | None = None
    spot: float | None = None


@dataclass(frozen=True)
class Prices(Kind):
    """JSON: {"m6i.large": {"onDemand": 0.08, "spot": 0.03}, ...} (either price may be left out)."""

    def read(self, raw: object) -> object:
        raw = parse_json_or_text(raw)
        if not isinstance(raw, dict):
            raise BadValue(f'expected an object like {{"m6i.large": {{"onDemand": 0.08}}}}, got {raw!r}')
        prices = {}
        for instance_type, price in raw.items():
            if not isinstance(price, dict) or not price or set(price) - {"onDemand", "spot"}:
                raise BadValue(f"{instance_type}: expected onDemand and/or spot, got {price!r}")
            prices[instance_type] = Price(price.get("onDemand"), price.get("spot"))
        return tuple(sorted(prices.items()))

    def check(self, value: object) -> None:
        if not isinstance(value, tuple):
            raise BadValue(f"expected instance types and their prices, got {value!r}")
        for instance_type, price in value:
            if not isinstance(instance_type, str) or not _INSTANCE_TYPE.fullmatch(instance_type):
                raise BadValue(f"{instance_type!r} is not an EC2 instance type")
            for name, amount in (("onDemand", price.on_demand), ("spot", price.spot)):
                if amount is not None and (not isinstance(amount, (int, float)) or isinstance(amount, bool)
                                           or math.isnan(amount) or not 0 <= amount <= 1000):
                    raise BadValue(f"{instance_type}: {name} must be dollars an hour from 0 to 1000, "
                                   f"got {amount!r}")

    def write(self, value: Any) -> str:
        return json.dumps({t: {k: v for k, v in (("onDemand", p.on_demand), ("spot", p.spot))
                               if v is not None} for t, p in value}, separators=(",", ":"))


# The default scheduler profile's score plugins and their weights since Kubernetes 1.31 (EKS runs
# the default profile); the planner predicts a replacement's node with them.
DEFAULT_SCORE_WEIGHTS: dict[str, int] = {
    "TaintToleration": 3, "NodeAffinity": 2, "PodTopologySpread": 2, "InterPodAffinity": 2,
    "NodeResourcesFit": 1, "NodeResourcesBalancedAllocation": 1, "ImageLocality": 1,
}
# A KubeSchedulerConfiguration takes plugin weights from 1 to 100; 0 here leaves the plugin out.
MAX_SCORE_WEIGHT = 100


class ScoreWeights(Kind):
    """JSON: {"TaintToleration": 3, ...}, the default profile's weights for the plugins named (0 turns
    a plugin off); plugins left out keep their default."""

    def read(self, raw: object) -> object:
        raw = parse_json_or_text(raw)
        if not isinstance(raw, dict):
            raise BadValue(f'expected an object like {{"TaintToleration": 3}}, got {raw!r}')
        return tuple(sorted({**DEFAULT_SCORE_WEIGHTS, **raw}.items()))

    def check(self, value: object) -> None:
        if not isinstance(value, tuple):
            raise BadValue(f"expected score plugins and their weights, got {value!r}")
        names = [name for name, _ in value]
        if sorted(names) != sorted(DEFAULT_SCORE_WEIGHTS):
            unknown = sorted(set(map(str, names)) - set(DEFAULT_SCORE_WEIGHTS))
            raise BadValue(f"knows the plugins {', '.join(sorted(DEFAULT_SCORE_WEIGHTS))}"
                           + (f"; got {', '.join(unknown)}" if unknown else f"; got {names!r}"))
        for name, weight in value:
            if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= MAX_SCORE_WEIGHT:
                raise BadValue(f"{name}: must be a whole number from 0 to {MAX_SCORE_WEIGHT}, got {weight!r}")

    def write(self, value: Any) -> str:
        return json.dumps(dict(value), separators=(",", ":"), sort_keys=True)


# --- the schema ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: its field, kind and default, and its names (None: not set that way)."""

    field: str
    kind: Kind
    default: Any
    env: str | None
    context: str | None


def setting(default: Any, kind: Kind, *, env: bool | str = True, context: bool = True) -> Any:
    """A settings field: `env` True names its variable after the field (upper case), a string names
    it so, False gives it none; `context` False keeps it out of the CDK context (the stack sets it)."""
    return field(default=default, metadata={"kind": kind, "env": env, "context": context})


def context_key(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def schema(cls: type) -> tuple[Setting, ...]:
    """Every setting of a settings class, in declaration order."""
    found = []
    for f in fields(cls):
        meta = f.metadata
        env = meta["env"]
        found.append(Setting(
            field=f.name, kind=meta["kind"], default=_default(f),
            env=f.name.upper() if env is True else (env or None),
            context=context_key(f.name) if meta["context"] else None))
    return tuple(found)


def _default(f: Field[Any]) -> Any:
    return f.default if f.default is not MISSING else None


S = TypeVar("S", bound="Settings")


def _is_group_name(name: str) -> bool:
    return 1 <= len(name) <= 255 and name.strip() == name


def _is_tag_key(key: str) -> bool:
    return 1 <= len(key) <= 128 and not key.lower().startswith("aws:")


# An SNS topic's ARN, in any partition (standard or FIFO).
TOPIC_ARN = r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?"

@dataclass(frozen=True, kw_only=True)
class Settings:
    """What the functions (and the CLI, and the stack) run with."""

    # Which cluster: the one the deployment manages; instances tagged for another are left alone.
    cluster_name: str = setting("", Text(CLUSTER_NAME, CLUSTER_NAME_NOUN, empty_ok=True))
    # Set by the stack: the DynamoDB table for idempotency records and drain / move state, and the
    # SQS queue drains continue through.
    state_table: str = setting("", Text(), context=False)
    work_queue_url: str = setting("", Text(), context=False)
    # Each drained node and each cycle that moved pods is told to this topic, in the shape AWS
    # Chatbot forwards to Slack or Teams (notices.py); none when empty.
    notification_topic_arn: str = setting("", Text(
        TOPIC_ARN, "a standard SNS topic ARN (AWS Chatbot reads no FIFO topic)",
        valid=lambda arn: not arn.endswith(".fifo"), empty_ok=True))
    dry_run: bool = setting(False, Flag())
    # Rebalance recommendations: the first policy whose selector matches a node's labels decides,
    # else the default; a recommendation's taint/cordon is reverted after the TTL.
    recommendation_policies: tuple[RecommendationPolicy, ...] = setting((), Policies())
    recommendation_default: str = setting("taint", Choice(RECOMMENDATION_ACTIONS))
    recommendation_ttl_seconds: int = setting(1800, Whole(60, 7 * 86400))
    # Drains.
    drain_timeout_seconds: int = setting(600, Whole(
        1, MAX_LIFECYCLE_HEARTBEAT_SECONDS - LIFECYCLE_HEARTBEAT_MARGIN_SECONDS,
        f" (the lifecycle hook waits for it plus {LIFECYCLE_HEARTBEAT_MARGIN_SECONDS} s, and Auto Scaling "
        f"allows at most {MAX_LIFECYCLE_HEARTBEAT_SECONDS} s)"))
    # What a terminate lifecycle hook does when nobody answers, and what a drain that missed its
    # deadline completes it with.
    lifecycle_default_result: str = setting("CONTINUE", Choice(LIFECYCLE_RESULTS))
    # On a drain whose deadline is its instance's end (a spot warning, an ASG termination, a stop, a
    # Health change), delete the pods budgets still block once only their grace period is left:
    # needs the optional ClusterRole infra/rbac/spot-rebalancer-force-at-deadline.yaml.
    force_at_deadline: bool = setting(False, Flag())
    unowned_pods: str = setting("evict", Choice(UNOWNED_POD_POLICIES))
    excluded_namespaces: tuple[str, ...] = setting(("kube-system",), TextList(
        Text(NAMESPACE, "a Kubernetes namespace name")))
    opt_out_annotation: str = setting("spot-rebalancer.io/disable", Text(LABEL_KEY, ANNOTATION_NOUN))
    exclude_from_load_balancers: bool = setting(False, Flag())
    health_lead_time_seconds: int = setting(3600, Whole(0, 14 * 86400))
    # Opt-in: every cycle, the schedule function drains the nodes whose instance or system status
    # check EC2 reports impaired, as for degraded hardware.
    instance_status_checks: bool = setting(False, Flag())
    # Auto Scaling groups that get the terminate hook (and the launch hook when asked for); they also
    # scope the lifecycle and launch rules and what the functions may do to groups. None: any group
    # tagged kubernetes.io/cluster/<name>=owned.
    asg_names: tuple[str, ...] = setting((), TextList(
        Text(noun="an Auto Scaling group name", valid=_is_group_name), unique="a group"))
    # The launch lifecycle hook: the stack puts it on the named groups, the function completes it.
    launch_lifecycle_hook: bool = setting(False, Flag())
    # Lifecycle tag and label.
    lifecycle_tag_key: str = setting("Lifecycle", Text(
        noun="an EC2 tag key (1-128 characters, not aws:...)", valid=_is_tag_key))
    lifecycle_label_key: str = setting("node.kubernetes.io/lifecycle", Text(LABEL_KEY, LABEL_NOUN))
    # Rebalancer rails and caps.
    # Per cycle over all its waves, and per node and namespace in each wave (bench/return_to_spot.py:
    # a storm's 210 pods back within one cycle, without a budget broken).
    max_evictions_per_cycle: int = setting(250, Whole(0, 1000))
    max_evictions_per_node: int = setting(25, Whole(0, 1000))
    max_evictions_per_namespace: int = setting(50, Whole(0, 1000))
    # Replicas of one workload in motion at a time (each wave): a count, or a share of its replicas
    # ("25%", rounded down, at least 1). Its budget may allow fewer.
    max_evictions_per_workload: str = setting("25%", CountOrShare(1000))
    # Evicting a workload's only replica is an outage however short: off, such pods stay.
    move_single_replica_workloads: bool = setting(False, Flag())
    # Which pods the rebalancer may move: those whose labels, and whose namespace's labels, these
    # select (empty: all). Drains ignore them.
    pod_selector: Selector = setting(Selector(), LabelSelectorText())
    namespace_selector: Selector = setting(Selector(), LabelSelectorText())
    min_pod_age_seconds: int = setting(300, Whole(0, 7 * 86400))
    # Pods with a higher priority are left alone; the default spares the system-* classes.
    max_priority: int = setting(1_000_000_000, Whole(-(2**31), 2**31 - 1))
    # "2" or "30%": replicas of a workload kept on on-demand nodes (on the workload or the pod).
    min_on_demand_annotation: str = setting("spot-rebalancer.io/min-on-demand",
                                            Text(LABEL_KEY, ANNOTATION_NOUN))
    # The scheduler that will place a replacement must be one whose rules the planner simulates.
    scheduler_names: tuple[str, ...] = setting(("default-scheduler",), TextList(Text(
        r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", "a scheduler name")))
    # The score weights of that scheduler's profile: a move is planned only where the replacement,
    # scored with them, lands on a node its preferred affinity favours.
    scheduler_score_weights: tuple[tuple[str, int], ...] = setting(
        tuple(sorted(DEFAULT_SCORE_WEIGHTS.items())), ScoreWeights())
    # The rebalancer moves pods only inside one of these windows (none: at any time); drains ignore
    # them.
    rebalance_windows: tuple[Window, ...] = setting((), Windows())
    # Prices that list prices would get wrong (savings plans, private pricing), by instance type.
    price_overrides: tuple[tuple[str, Price], ...] = setting((), Prices())
    # Terminate on-demand nodes the rebalancer emptied (only DaemonSet and mirror pods left for the
    # settle time) through their Auto Scaling group, decrementing it, never below its minimum.
    scale_in_emptied_nodes: bool = setting(False, Flag())
    scale_in_settle_seconds: int = setting(600, Whole(60, 86400))
    capacity_nudge: bool = setting(False, Flag())
    # New nodes the capacity nudge may ask for in one cycle, over all node groups.
    max_nudge_nodes: int = setting(3, Whole(0, 100))
    # Closed loop: a replacement not Ready after this long counts as a failed move; each failure
    # doubles the workload's back-off from the base, up to the cap.
    replacement_timeout_seconds: int = setting(900, Whole(60, 86400))
    backoff_base_seconds: int = setting(300, Whole(1, 86400))
    backoff_cap_seconds: int = setting(6 * 3600, Whole(1, 7 * 86400))

    def __post_init__(self) -> None:
        for entry in schema(type(self)):
            try:
                entry.kind.check(getattr(self, entry.field))
            except BadValue as exc:
                raise ConfigError(entry.context or entry.field, str(exc)) from None
        if self.recommendation_ttl_seconds < self.drain_timeout_seconds:
            raise ConfigError("recommendationTtlSeconds",
                              f"must be at least drainTimeoutSeconds ({self.drain_timeout_seconds}): a "
                              "recommendation's drain may last that long, and the sweep must not undo "
                              f"it meanwhile; got {self.recommendation_ttl_seconds}")
        if self.backoff_cap_seconds < self.backoff_base_seconds:
            raise ConfigError("backoffCapSeconds", f"must not be below backoffBaseSeconds "
                                                   f"({self.backoff_base_seconds}), "
                                                   f"got {self.backoff_cap_seconds}")

    # --- reading and writing ----------------------------------------------------------------------

    @classmethod
    def from_env(cls: type[S], env: Mapping[str, str] | None = None) -> S:
        """The settings in an environment (os.environ by default); an unset variable means the
        default. Errors name the variable."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for entry in schema(cls):
            if entry.env is None:
                continue
            raw = env.get(entry.env)
            if raw is not None:
                values[entry.field] = read_setting(entry.kind, entry.env, raw)
        try:
            return cls(**values)
        except ConfigError as exc:
            env_names = {e.context or e.field: e.env for e in schema(cls)}
            raise ConfigError(env_names.get(exc.name) or exc.name, exc.problem) from None

    @classmethod
    def from_context(cls: type[S], context: Mapping[str, Any], *, ignore: Collection[str] = ()) -> S:
        """The settings in CDK context values (JSON types from cdk.json, text from -c); errors name
        the context key."""
        values: dict[str, Any] = {}
        for entry in schema(cls):
            key = entry.context
            if key is not None and key not in ignore and context.get(key) is not None:
                values[entry.field] = read_setting(entry.kind, key, context[key])
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment from which `from_env` reads these settings back."""
        return {entry.env: entry.kind.write(getattr(self, entry.field))
                for entry in schema(type(self)) if entry.env}

    def recommendation_action(self, node_labels: Mapping[str, str]) -> str:
        """The rebalance-recommendation action for a node, by the first policy its labels match."""
        for policy in self.recommendation_policies:
            if all(node_labels.get(k) == v for k, v in policy.selector.items()):
                return policy.action
        return self.recommendation_default


def context_keys(cls: type) -> frozenset[str]:
    return frozenset(entry.context for entry in schema(cls) if entry.context)


def cluster_overrides(raw: object) -> dict[str, Any]:
    """The `clusterOverrides` context value: cluster name to the settings that differ for it (JSON from
    cdk.json, or its text from -c)."""
    try:
        overrides = parse_json_or_text(raw or {})
    except ValueError as exc:
        raise ConfigError("clusterOverrides", str(exc)) from None
    if not isinstance(overrides, dict):
        raise ConfigError("clusterOverrides",
                          f"expected an object mapping cluster names to settings, got {overrides!r}")
    return overrides
