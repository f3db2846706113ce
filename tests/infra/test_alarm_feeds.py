"""Every alarm of the synthesized stacks fed the metric it watches: datapoints as the product (or
Lambda and SQS) publish them go into moto's CloudWatch, the alarm's own metrics and expression are
read from the template, and its state is judged after the last period (tests/infra/alarm_evaluation:
moto evaluates no alarm and no metric math). A breaching and a quiet feed each; a test fails when an
alarm of any template has no feeds here."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from alarm_evaluation import (
    Feed,
    UnsupportedAlarm,
    alarm_period,
    alarm_state,
    alarm_values,
    evaluate_expression,
    publish,
)
from cdk_support import Synth
from moto import mock_aws

CLUSTERS = ("prod", "batch", "ops_private")
START = datetime(2026, 6, 1, tzinfo=UTC)
PERIODS = 4


def alarms(synth: Synth, cluster: str) -> dict[str, dict[str, Any]]:
    found = synth.resources(cluster, "AWS::CloudWatch::Alarm", "SpotRebalancerMonitoring")
    return {k.removeprefix("SpotRebalancerMonitoring")[:-8]: v["Properties"] for k, v in found.items()}


# A feed maker: given the synth and the cluster, the metrics to publish (one value per period).
Feeds = Callable[[Synth, str], list[Feed]]


def product(name: str, values: list[float | None], **dimensions: str) -> Feeds:
    """A metric as the functions publish it: namespace SpotRebalancer, ClusterName and any others."""
    return lambda _synth, cluster: [Feed("SpotRebalancer", name, {"ClusterName": cluster, **dimensions},
                                         values)]


def queue(label: str, name: str, values: list[float | None]) -> Feeds:
    """An SQS metric of one of the stack's queues (AWS names it by the queue's name)."""
    return lambda synth, cluster: [Feed("AWS/SQS", name, {"QueueName": synth.logical_id(
        cluster, "AWS::SQS::Queue", f"SpotRebalancer{label}")}, values)]


def function(label: str, name: str, values: list[float | None]) -> Feeds:
    """A Lambda metric of one of the stack's functions."""
    return lambda synth, cluster: [Feed("AWS/Lambda", name, {"FunctionName": synth.logical_id(
        cluster, "AWS::Lambda::Function", f"SpotRebalancer{label}")}, values)]


def both(*makers: Feeds) -> Feeds:
    return lambda synth, cluster: [feed for make in makers for feed in make(synth, cluster)]


N = None
VISIBLE = "ApproximateNumberOfMessagesVisible"
# alarm -> cluster it is judged on, then (feeds, state after the last period) cases by name.
CASES: dict[str, tuple[str, dict[str, tuple[Feeds, str]]]] = {
    "WorkDeadLetterQueueNotEmpty": ("prod", {
        "a message": (queue("WorkDeadLetterQueue", VISIBLE, [0, 0, 0, 1]), "ALARM"),
        "empty": (queue("WorkDeadLetterQueue", VISIBLE, [1, 0, 0, 0]), "OK"),
        "the other queue's message": (queue("DeliveryDeadLetterQueue", VISIBLE, [0, 0, 0, 3]), "OK"),
    }),
    "DeliveryDeadLetterQueueNotEmpty": ("prod", {
        "a message": (queue("DeliveryDeadLetterQueue", VISIBLE, [N, N, N, 2]),
                      "ALARM"),
        "no datapoints": (queue("DeliveryDeadLetterQueue", VISIBLE, [N] * 4),
                          "OK"),
    }),
    "EventsFunctionErrors": ("prod", {
        "an error": (function("EventsFunction", "Errors", [0, 0, 0, 1]), "ALARM"),
        "none": (function("EventsFunction", "Errors", [0, 0, 0, 0]), "OK"),
        "the schedule function's": (function("ScheduleFunction", "Errors", [0, 0, 0, 4]), "OK"),
    }),
    "ScheduleFunctionErrors": ("prod", {
        "an error": (function("ScheduleFunction", "Errors", [N, N, N, 1]), "ALARM"),
        "none": (function("ScheduleFunction", "Errors", [N, N, N, 0]), "OK"),
    }),
    "EventsFunctionThrottles": ("batch", {
        "three periods": (function("EventsFunction", "Throttles", [0, 2, 1, 5]), "ALARM"),
        "absorbed": (function("EventsFunction", "Throttles", [3, 3, 0, 3]), "OK"),
    }),
    "ScheduleFunctionThrottles": ("batch", {
        "three periods": (function("ScheduleFunction", "Throttles", [N, 1, 1, 1]), "ALARM"),
        "absorbed": (function("ScheduleFunction", "Throttles", [1, 1, N, 1]), "OK"),
    }),
    # batch: 3 rounds of 10-record batches at a concurrency of 8.
    "WorkQueueBacklog": ("batch", {
        "not keeping up": (queue("WorkQueue", VISIBLE, [0, 240, 300, 250]),
                           "ALARM"),
        "a burst worked off": (queue("WorkQueue", VISIBLE, [0, 400, 239, 400]),
                               "OK"),
    }),
    "WorkQueueOldestMessage": ("batch", {
        "an event waited": (queue("WorkQueue", "ApproximateAgeOfOldestMessage", [10, 10, 10, 300]), "ALARM"),
        "fresh": (queue("WorkQueue", "ApproximateAgeOfOldestMessage", [10, 500, 20, 299]), "OK"),
    }),
    "ScheduleFunctionNotInvoked": ("ops_private", {
        # No invocation publishes nothing at all.
        "stopped": (function("ScheduleFunction", "Invocations", [1, N, N, N]), "ALARM"),
        "running": (function("ScheduleFunction", "Invocations", [1, N, N, 1]), "OK"),
    }),
    "RecordsFailed": ("prod", {
        "a failed record": (product("RecordsFailed", [0, 0, 0, 1]), "ALARM"),
        "none": (product("RecordsFailed", [2, 0, 0, 0]), "OK"),
    }),
    "DrainDeadlineMissed": ("prod", {
        "missed": (product("DeadlineMissed", [N, N, N, 1]), "ALARM"),
        "met": (product("DeadlineMissed", [N, 1, N, N]), "OK"),
    }),
    # batch: 10 minutes, two periods.
    "EvictionsBlockedByPdb": ("batch", {
        "drains blocked": (product("EvictionsBlockedByPdb", [0, 0, 3, 1]), "ALARM"),
        "the rebalancer's and a drain's": (
            both(product("EvictionsBlockedByPdb", [0, 0, 2, N]),
                 product("EvictionsBlockedByPdb", [0, 0, N, 1], Source="move")), "ALARM"),
        "once": (product("EvictionsBlockedByPdb", [0, 4, 0, 1], Source="move"), "OK"),
    }),
    "SpotShareBelowTarget": ("batch", {
        "below 60%": (product("SpotShareRequestedCpu", [70, 59, 40, 55]), "ALARM"),
        "back above": (product("SpotShareRequestedCpu", [40, 40, 40, 60]), "OK"),
        "no census": (product("SpotShareRequestedCpu", [N] * 4), "INSUFFICIENT_DATA"),
    }),
    "MisplacedPodsAboveThreshold": ("prod", {
        "stuck": (product("MisplacedPods", [80, 80, 81, 81]), "ALARM"),
        "worked down": (product("MisplacedPods", [80, 70, 60, 50]), "OK"),
        "under the threshold": (product("MisplacedPods", [10, 12, 15, 19]), "OK"),
        "went down once": (product("MisplacedPods", [30, 25, 25, 26]), "OK"),
    }),
    "NotificationsFailed": ("batch", {
        "one not sent": (product("NotificationsFailed", [N, N, N, 1]), "ALARM"),
        "all sent": (product("NotificationsFailed", [N, 1, N, N]), "OK"),
    }),
    # Hours: 5 settled moves at least, more than half failed.
    "MovesFailing": ("prod", {
        "most failed": (both(product("MovesFailed", [0, 0, 0, 4]), product("MovesSucceeded", [9, 9, 9, 2])),
                        "ALARM"),
        "half failed": (both(product("MovesFailed", [N, N, N, 3]), product("MovesSucceeded", [N, N, N, 3])),
                        "OK"),
        "too few settled": (product("MovesFailed", [N, N, N, 4]), "OK"),
        "all failed": (product("MovesFailed", [N, N, N, 5]), "ALARM"),
    }),
}


def judge(synth: Synth, cluster: str, alarm: dict[str, Any], feeds: list[Feed]) -> str:
    with mock_aws():
        cloudwatch = boto3.client("cloudwatch", region_name="eu-west-1")
        publish(cloudwatch, feeds, START, alarm_period(alarm))
        return alarm_state(alarm, alarm_values(cloudwatch, alarm, START, PERIODS))


@pytest.mark.parametrize(("name", "case"),
                         [(name, case) for name, (_, cases) in CASES.items() for case in cases])
def test_each_alarm_fires_on_the_metric_it_watches_and_only_then(synth, name, case):
    cluster, cases = CASES[name]
    make, expected = cases[case]
    assert judge(synth, cluster, alarms(synth, cluster)[name], make(synth, cluster)) == expected


def test_every_alarm_of_every_stack_has_a_breaching_and_a_quiet_feed(synth):
    names = {name for cluster in CLUSTERS for name in alarms(synth, cluster)}
    assert names - set(CASES) == set(), "alarms without feeds"
    assert set(CASES) - names == set(), "feeds for alarms no stack has"
    for name, (cluster, cases) in CASES.items():
        assert name in alarms(synth, cluster), (name, cluster)
        assert {"ALARM", "OK"} <= {state for _, state in cases.values()}, name


def test_the_evaluator_knows_the_forms_the_stack_uses():
    series = {"a": [1.0, None, 3.0], "b": [2.0, 2.0, None]}
    assert evaluate_expression("FILL(a, 0) + FILL(b, 0)", series) == [3.0, 2.0, 3.0]
    assert evaluate_expression("DIFF(b)", series) == [None, 0.0, None]
    assert evaluate_expression("IF(a > 1 AND b >= 2, 1, 0)", series) == [0.0, None, None]
    either = "IF(FILL(a, 0) >= 1 OR FILL(b, 0) < 1, 10 * 2, -1)"
    assert evaluate_expression(either, series) == [20.0, -1.0, 20.0]


@pytest.mark.parametrize("expression", [
    "a / b",  # division by zero is not modelled
    "RATE(a)",  # an unknown function
    "SEARCH('{SpotRebalancer} MetricName=\"Nodes\"', 'Average', 300)",
    "FILL(a)",  # a known function with the wrong arguments
    "a + c",  # a metric the alarm does not read
    "a +",
    "(a",
])
def test_the_evaluator_refuses_forms_it_does_not_know(expression):
    with pytest.raises(UnsupportedAlarm):
        evaluate_expression(expression, {"a": [1.0], "b": [0.0]})


@pytest.mark.parametrize("change", [
    {"ComparisonOperator": "LessThanLowerOrGreaterThanUpperThreshold"},
    {"TreatMissingData": "ignore"},
], ids=["anomaly band", "missing data ignored"])
def test_the_evaluator_refuses_alarm_rules_it_does_not_know(synth, change):
    alarm = {**alarms(synth, "prod")["RecordsFailed"], **change}
    with pytest.raises(UnsupportedAlarm):
        alarm_state(alarm, [1.0])
