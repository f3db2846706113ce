"""Notices to the operators' topic: their shape (AWS Chatbot's custom notification schema), what
they say about a drain and a cycle, and a publish that fails without failing anything, all through
moto SNS to a subscribed SQS queue."""

from __future__ import annotations

import pytest
from moto import mock_aws

from spot_rebalancer.notices import LISTED_NODES, cycle_notice, drain_notice
from spot_rebalancer.notifier import Notifier
from spot_rebalancer.results import DrainEnd, DrainReport
from spot_rebalancer.telemetry import MetricsRecorder
from tests.sns_inbox import Inbox

REPORT = DrainReport("ip-10-0-1-17.eu-west-1.compute.internal", "i-0f9e8d7c6b5a40312", "spot-interruption",
                     "spot-interruption", DrainEnd.DRAINED, evicted=12, blocked=1)


def chatbot_shaped(notice: dict) -> None:
    """What AWS Chatbot requires of a custom notification, and what this product always sends."""
    assert notice["version"] == "1.0" and notice["source"] == "custom"
    content, metadata = notice["content"], notice["metadata"]
    assert content["textType"] == "client-markdown"
    assert content["title"] and content["description"]
    assert set(content) <= {"textType", "title", "description", "nextSteps", "keywords"}
    assert set(metadata) <= {"threadId", "summary", "eventType", "relatedResources", "additionalContext"}
    assert all(isinstance(v, str) for v in metadata["additionalContext"].values())


@pytest.mark.parametrize(("end", "title", "deadline"), [
    (DrainEnd.DRAINED, "prod: Drained ip-10-0-1-17", "*Deadline* met"),
    (DrainEnd.DEADLINE_MISSED, "prod: Deadline missed draining ip-10-0-1-17", "*Deadline* missed"),
    (DrainEnd.NO_NOTICE, "prod: Drained ip-10-0-1-17", "*Deadline* none given: a spot hibernation"),
], ids=["met", "missed", "hibernation"])
def test_a_drain_notice_names_the_node_instance_reason_pods_and_deadline(end, title, deadline):
    report = DrainReport(REPORT.node, REPORT.instance_id, "spot-stop", "spot-interruption", end,
                         evicted=3, blocked=2, deleted=1)
    notice = drain_notice("prod", report)
    chatbot_shaped(notice)
    content = notice["content"]
    assert content["title"].startswith(title)
    description = content["description"]
    assert f"`{REPORT.node}`" in description and f"`{REPORT.instance_id}`" in description
    assert "*Reason* `spot-stop` (event `spot-interruption`)" in description
    assert "*Pods evicted* 3 · *blocked by budgets* 2 · *deleted at the deadline* 1" in description
    assert deadline in description
    assert notice["metadata"]["additionalContext"] == {
        "cluster": "prod", "node": REPORT.node, "instanceId": REPORT.instance_id, "reason": "spot-stop",
        "eventKind": "spot-interruption", "deadline": end.value, "podsEvicted": "3", "podsBlocked": "2",
        "podsDeleted": "1"}
    assert any("kubectl get pdb -A" in step for step in content["nextSteps"])


def test_a_cycle_notice_says_what_moved_what_emptied_and_what_it_saves():
    emptied = [f"od-{i}" for i in range(LISTED_NODES + 2)]
    notice = cycle_notice("prod", moved=40, refused=2, waves=3, emptied=emptied, emptied_cost_per_hour=1.152,
                          spot_saving_per_hour=12.5)
    assert notice is not None
    chatbot_shaped(notice)
    assert notice["content"]["title"] == "prod: 40 pod(s) moved back to preferred capacity"
    description = notice["content"]["description"]
    assert "*Pods moved* 40 in 3 wave(s) · *refused* 2" in description
    assert "*On-demand nodes emptied* 12: `od-0`" in description and "`od-9` and 2 more" in description
    assert "`od-10`" not in description
    assert "$1.15/hour while they stay" in description
    assert "*Spot saving* $12.50/hour" in description
    assert notice["metadata"]["additionalContext"]["nodesEmptied"] == "12"


def test_a_cycle_without_prices_says_what_moved_and_one_that_moved_nothing_says_nothing():
    notice = cycle_notice("prod", moved=2, refused=0, waves=1, emptied=[], emptied_cost_per_hour=None,
                          spot_saving_per_hour=None)
    assert notice is not None
    assert "*On-demand nodes emptied* none" in notice["content"]["description"]
    assert "Spot saving" not in notice["content"]["description"]
    assert "spotSavingPerHour" not in notice["metadata"]["additionalContext"]
    assert cycle_notice("prod", moved=0, refused=3, waves=1, emptied=[], emptied_cost_per_hour=None,
                        spot_saving_per_hour=None) is None


def test_a_notice_reaches_the_topics_subscribers_as_sent():
    with mock_aws():
        inbox = Inbox.create()
        metrics = MetricsRecorder()
        notice = drain_notice("prod", REPORT)
        assert Notifier(inbox.sns, inbox.topic_arn, metrics, "prod").send(notice) is True
        assert inbox.received() == [(notice["content"]["title"], notice)]
    assert metrics.total("NotificationsFailed") == 0


def test_a_notice_that_cannot_be_published_is_logged_and_counted_never_raised(caplog):
    with mock_aws():
        inbox = Inbox.create()
        metrics = MetricsRecorder()
        gone = inbox.topic_arn.replace("platform-notices", "deleted-topic")
        assert Notifier(inbox.sns, gone, metrics, "prod").send(drain_notice("prod", REPORT)) is False
        assert inbox.received() == []
    assert metrics.total("NotificationsFailed", ClusterName="prod") == 1
    assert any("notification not sent" in r.getMessage() and "deleted-topic" in r.getMessage()
               for r in caplog.records)
