"""The opt-in status-check signal (`instanceStatusChecks`): every cycle the schedule function asks
EC2 which instances have an impaired instance or system status check, and for each node of its
cluster among them queues a drain on the events function's work queue, which drains it as it does
degraded hardware. Never in a loop: a node a forced drain has marked is left alone, and an
instance's drain is queued at most once a day (a record in the state table) while it stays impaired."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from .aws import Ec2
from .config import Settings
from .drain_policy import impaired_to_drain
from .events import status_impaired_message
from .objects import Node
from .results import Step, StepAction
from .state import DrainClaims

# How long a queued drain keeps an impaired instance from being queued again: its drain has long
# ended by then (drains last at most drainTimeoutSeconds, under two hours).
CLAIM_SECONDS = 24 * 3600


class StatusChecks:
    def __init__(self, settings: Settings, ec2: Ec2, claims: DrainClaims, sqs: Any, region: str, *,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._settings = settings
        self._ec2 = ec2
        self._claims = claims
        self._sqs = sqs
        self._region = region
        self._now = now

    def check(self, nodes: Sequence[Node]) -> list[Step]:
        """Queue a drain for each of `nodes` (the cluster's) whose instance is impaired; what was
        done for each (nothing is queued in a dry run)."""
        found = impaired_to_drain(nodes, self._ec2.impaired_instances())
        settings, now, steps = self._settings, self._now(), []
        # The queue's URL names the account: https://sqs.<region>.<domain>/<account>/<name>.
        account = settings.work_queue_url.rstrip("/").rsplit("/", 2)[-2] if settings.work_queue_url else ""
        for node, checks in found:
            name, impaired = node.metadata.name, f"{' and '.join(checks)} status check impaired"
            if settings.dry_run:
                steps.append(Step(StepAction.CONTINUE, name, reason=f"{impaired}: a drain would be queued"))
            elif not self._claims.claim(settings.cluster_name, node.instance_id):
                steps.append(Step(StepAction.IGNORE, name, reason=f"{impaired}: its drain was queued "
                                                                  f"less than {CLAIM_SECONDS // 3600} h ago"))
            else:
                message = status_impaired_message(node.instance_id, checks, now, self._region, account)
                self._sqs.send_message(QueueUrl=settings.work_queue_url, MessageBody=json.dumps(message))
                steps.append(Step(StepAction.CONTINUE, name, reason=f"{impaired}: drain queued"))
        return steps
