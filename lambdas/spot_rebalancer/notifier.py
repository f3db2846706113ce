"""Notices to the operators' SNS topic. A notice that cannot be sent is logged and counted
(`NotificationsFailed`), never raised: a drain or a cycle never fails for want of telling."""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

log = logging.getLogger(__name__)

# SNS refuses a subject over 100 characters or with line breaks; e-mail subscribers see it.
SUBJECT_LIMIT = 100


class Counts(Protocol):
    """Where the failures are counted (telemetry.MetricsRecorder)."""

    def add(self, name: str, value: float, unit: str = "Count", **dimensions: str) -> None: ...


class Notifier:
    def __init__(self, sns: Any, topic_arn: str, metrics: Counts, cluster: str) -> None:
        self.sns = sns
        self.topic_arn = topic_arn
        self.metrics = metrics
        self.cluster = cluster

    def send(self, notice: dict[str, Any] | None) -> bool:
        """Publish the notice (None: nothing to tell); whether it was sent."""
        if notice is None:
            return False
        subject = " ".join(notice["content"]["title"].split())[:SUBJECT_LIMIT]
        try:
            self.sns.publish(TopicArn=self.topic_arn, Message=json.dumps(notice), Subject=subject)
        except Exception as exc:  # any failure: refused, throttled, unreachable, a bad key policy
            log.warning("notification not sent to %s: %s: %s", self.topic_arn, type(exc).__name__, exc)
            self.metrics.add("NotificationsFailed", 1, ClusterName=self.cluster)
            return False
        return True
