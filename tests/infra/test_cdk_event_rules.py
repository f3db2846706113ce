"""Each synthesized rule matches the AWS sample events of its kind (tests/events) and no others.

The expected rule for a sample is decided here from the event's source, detail-type and fields, as the
deployment's intent, independently of the patterns; an EventBridge matcher (moto's) then runs the
synthesized patterns over every sample.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from cdk_support import BATCH_GROUPS, REPO
from moto.events.models import EventPattern

from infra.construct import LAUNCH_HOOK_NAME, TERMINATE_HOOK_NAME

EVENTS_DIR = REPO / "tests" / "events"
DRAIN_STATES = {"stopping", "shutting-down"}
BACKSTOP_STATES = {"stopped", "terminated"}
TAG_STATES = {"running"}
DELIVERED_STATES = DRAIN_STATES | BACKSTOP_STATES | TAG_STATES


def load_samples() -> dict[str, dict[str, Any]]:
    samples = {}
    for path in sorted(EVENTS_DIR.glob("*.json")):
        event = json.loads(path.read_text())
        # EventBridge events only: the directory may hold other payloads too.
        if isinstance(event, dict) and "source" in event and "detail-type" in event:
            samples[path.name] = event
    return samples


SAMPLES = load_samples()


def expected_rule(event: dict[str, Any], *, launch_hook: bool) -> str | None:
    """The rule that should deliver this event to the events function, if any."""
    source, kind, detail = event["source"], event["detail-type"], event.get("detail", {})
    if source == "aws.ec2":
        return {
            "EC2 Spot Instance Interruption Warning": "SpotInterruptionWarningRule",
            "EC2 Capacity Reservation Instance Interruption Warning": "CapacityReservationInterruptionRule",
            "Capacity Block Expiration Warning": "CapacityBlockExpirationRule",
            "Capacity Block Reservation Expiration Warning": "CapacityBlockExpirationRule",
            "EC2 Instance Rebalance Recommendation": "RebalanceRecommendationRule",
            "EC2 Instance State-change Notification":
                "InstanceStateChangeRule" if detail.get("state") in DELIVERED_STATES else None,
        }.get(kind)
    if source == "aws.autoscaling":
        if kind == "EC2 Instance-terminate Lifecycle Action":
            ours = detail.get("LifecycleHookName") == TERMINATE_HOOK_NAME
            return "TerminateLifecycleActionRule" if ours else None
        if kind == "EC2 Instance-launch Lifecycle Action":
            ours = launch_hook and detail.get("LifecycleHookName") == LAUNCH_HOOK_NAME
            return "LaunchLifecycleActionRule" if ours else None
        return "LaunchSuccessfulRule" if kind == "EC2 Instance Launch Successful" else None
    if source == "aws.health" and kind == "AWS Health Event":
        # Whatever its scope: AWS's EC2 samples carry none, and the parser ignores an event that
        # names no instance.
        relevant = (detail.get("service") == "EC2"
                    and detail.get("eventTypeCategory") in ("scheduledChange", "issue"))
        return "HealthEventRule" if relevant else None
    return None


def patterns(synth, cluster: str) -> dict[str, EventPattern]:
    """Synthesized pattern by rule construct id (the logical id without prefix and hash)."""
    found = synth.resources(cluster, "AWS::Events::Rule", "SpotRebalancer")
    return {k.removeprefix("SpotRebalancer")[:-8]:
            EventPattern.load(json.dumps(v["Properties"]["EventPattern"]))
            for k, v in found.items() if "EventPattern" in v["Properties"]}


def matching(rules: dict[str, EventPattern], event: dict[str, Any]) -> list[str]:
    return sorted(name for name, pattern in rules.items() if pattern.matches_event(event))


def test_the_samples_cover_every_kind_of_event_handled():
    kinds = {expected_rule(e, launch_hook=True) for e in SAMPLES.values()}
    assert kinds >= {"SpotInterruptionWarningRule", "CapacityReservationInterruptionRule",
                     "CapacityBlockExpirationRule",
                     "RebalanceRecommendationRule", "InstanceStateChangeRule",
                     "TerminateLifecycleActionRule", "LaunchLifecycleActionRule", "LaunchSuccessfulRule",
                     "HealthEventRule"}
    assert None in kinds  # and some that must be left alone


@pytest.mark.parametrize(("cluster", "launch_hook"), [("prod", False), ("batch", True)])
@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_each_sample_matches_exactly_the_rule_of_its_kind(synth, cluster, launch_hook, sample):
    event = SAMPLES[sample]
    expected = expected_rule(event, launch_hook=launch_hook)
    assert matching(patterns(synth, cluster), event) == ([expected] if expected else [])


def _with_detail(event: dict[str, Any], **changes: str) -> dict[str, Any]:
    changed = copy.deepcopy(event)
    changed["detail"].update(changes)
    return changed


def _sample(kind: str) -> dict[str, Any]:
    return next(e for e in SAMPLES.values() if e["detail-type"] == kind)


LIFECYCLE_KINDS = ["EC2 Instance-terminate Lifecycle Action", "EC2 Instance-launch Lifecycle Action"]


@pytest.mark.parametrize("kind", LIFECYCLE_KINDS)
def test_lifecycle_actions_of_other_hooks_are_left_to_their_owners(synth, kind):
    foreign = _with_detail(_sample(kind), LifecycleHookName="another-tools-hook")
    for cluster in ("prod", "batch"):
        assert matching(patterns(synth, cluster), foreign) == []


@pytest.mark.parametrize("kind", [*LIFECYCLE_KINDS, "EC2 Instance Launch Successful"])
def test_named_groups_scope_the_auto_scaling_rules(synth, kind):
    sample = _sample(kind)
    assert sample["detail"]["AutoScalingGroupName"] == BATCH_GROUPS[0]
    elsewhere = _with_detail(sample, AutoScalingGroupName="some-other-group")
    assert matching(patterns(synth, "batch"), elsewhere) == []
    # Without asgNames the same event is ours (if it is our hook's).
    assert matching(patterns(synth, "prod"), elsewhere) == matching(patterns(synth, "prod"), sample)


def test_state_changes_that_need_nothing_are_not_delivered(synth):
    rules = patterns(synth, "prod")
    event = _with_detail(_sample("EC2 Instance State-change Notification"), state="pending")
    assert matching(rules, event) == []


def test_health_events_of_other_services_or_categories_are_not_delivered_whatever_their_scope(synth):
    rules = patterns(synth, "prod")
    scheduled = next(e for e in SAMPLES.values()
                     if e["source"] == "aws.health" and e["detail"]["eventTypeCategory"] == "scheduledChange")
    assert matching(rules, _with_detail(scheduled, service="RDS")) == []
    without_scope = copy.deepcopy(scheduled)
    without_scope["detail"].pop("eventScopeCode", None)
    assert matching(rules, without_scope) == ["HealthEventRule"]
    assert matching(rules, _with_detail(scheduled, eventTypeCategory="accountNotification")) == []



def test_a_capacity_block_warning_is_delivered_by_either_name_and_its_delivery_is_not(synth):
    """AWS's pages name the warning "Capacity Block Expiration Warning" and "Capacity Block
    Reservation Expiration Warning"; the block's delivery needs nothing."""
    rules = patterns(synth, "prod")
    warning = _sample("Capacity Block Expiration Warning")
    other_name = {**warning, "detail-type": "Capacity Block Reservation Expiration Warning"}
    delivered = {**warning, "detail-type": "Capacity Block Delivered"}
    assert matching(rules, warning) == matching(rules, other_name) == ["CapacityBlockExpirationRule"]
    assert matching(rules, delivered) == []
