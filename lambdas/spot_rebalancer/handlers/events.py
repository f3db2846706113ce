"""The events function: SQS batches of EventBridge events (and drain continuations) in.

Each message is one EventBridge event as the rule delivered it, or a continuation this function
queued itself: {"continuation": {"event": <the event>, "instanceId": ..., "startedAt": ...,
"attempt": n}}. Work is idempotent per (notification, instance, attempt) through powertools on
DynamoDB, so a duplicate delivery acts once. A message that fails is reported as a batch item failure;
SQS delivers it again and, after the queue's receive limit, moves it to the dead-letter queue.

Heavy imports (boto3, the kubernetes client, powertools' idempotency) happen on first use, so
importing this module is cheap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from ..config import Settings
from ..events import Event, EventKind, HealthNotice, InstanceEvent, LifecycleHook, parse_event
from ..interruption import HandleResult, InterruptionHandler
from ..tagging import LaunchCompleter, LifecycleTagger
from ..telemetry import MetricsRecorder

SQS_MAX_DELAY_SECONDS = 900
TAGGING_KINDS = (EventKind.INSTANCE_RUNNING, EventKind.LAUNCH_SUCCESSFUL)


@dataclass(frozen=True, slots=True)
class Work:
    """One domain event to act on, and where a drain that outlived an invocation stands."""

    raw: dict
    event: Event
    attempt: int = 0
    started_at: datetime | None = None

    @property
    def key(self) -> str:
        """The idempotency key: AWS Health's backup copies share a communication id, and one
        Health event names several instances."""
        notification = self.event.event_id
        if isinstance(self.event, HealthNotice) and self.event.communication_id:
            notification = self.event.communication_id
        instance = self.event.instance_id if isinstance(self.event, InstanceEvent) else ""
        return f"{notification}#{instance}#{self.attempt}"

    def continuation(self) -> dict:
        instance = self.event.instance_id if isinstance(self.event, InstanceEvent) else ""
        started = (self.started_at or datetime.now(UTC)).isoformat()
        return {"continuation": {"event": self.raw, "instanceId": instance, "startedAt": started,
                                 "attempt": self.attempt + 1}}


def read_message(body: str, settings: Settings) -> list[Work]:
    """The work in one queue message. Raises EventError for events the product cannot use."""
    message = json.loads(body)
    continuation = message.get("continuation") if isinstance(message, dict) else None
    raw = continuation["event"] if continuation else message
    events = parse_event(raw, health_lead_time_seconds=settings.health_lead_time_seconds)
    if not continuation:
        return [Work(raw, event) for event in events]
    started = datetime.fromisoformat(continuation["startedAt"])
    return [Work(raw, event, int(continuation["attempt"]), started) for event in events
            if isinstance(event, InstanceEvent) and event.instance_id == continuation["instanceId"]]


class EventsWorker:
    def __init__(self, settings: Settings, interruptions: InterruptionHandler,
                 tagger: LifecycleTagger, launches: LaunchCompleter, sqs: Any,
                 metrics: MetricsRecorder) -> None:
        self.settings = settings
        self.interruptions = interruptions
        self.tagger = tagger
        self.launches = launches
        self.sqs = sqs
        self.metrics = metrics

    def act(self, work: Work, budget_seconds: float | None) -> dict:
        """Act on one event and queue its continuation if it needs one; returns what was done."""
        event = work.event
        if event.kind in TAGGING_KINDS:
            result = self.tagger.handle(event, work.attempt)
        elif event.kind is EventKind.ASG_LAUNCH and isinstance(event, LifecycleHook):
            result = self.launches.handle(event, work.attempt)
        else:
            result = self.interruptions.handle(event, budget_seconds=budget_seconds,
                                               started_at=work.started_at)
        self._continue(work, result)
        return {"steps": [step.as_json() for step in result.steps],
                "continued": result.continue_at is not None}

    def _continue(self, work: Work, result: HandleResult) -> None:
        if result.continue_at is None:
            return
        wait = (result.continue_at - datetime.now(UTC)).total_seconds()
        started = work.started_at or datetime.now(UTC)
        self.sqs.send_message(QueueUrl=self.settings.work_queue_url,
                              MessageBody=json.dumps(Work(work.raw, work.event, work.attempt,
                                                          started).continuation()),
                              DelaySeconds=int(min(SQS_MAX_DELAY_SECONDS, max(0, wait))))


@cache
def _runtime() -> tuple[EventsWorker, Any, Any]:
    """The worker, the idempotent wrapper of its `act`, and the powertools logger, built once
    per container from the environment."""
    import boto3
    from aws_lambda_powertools import Logger
    from aws_lambda_powertools.utilities.idempotency import (
        DynamoDBPersistenceLayer,
        IdempotencyConfig,
        idempotent_function,
    )

    from ..aws import AutoScaling, Ec2, boto_config
    from ..eks_auth import client_for_cluster

    settings = Settings.from_env()
    metrics = MetricsRecorder()
    ec2 = Ec2(boto3.client("ec2", config=boto_config()))
    autoscaling = AutoScaling(boto3.client("autoscaling", config=boto_config()))
    worker = EventsWorker(
        settings,
        InterruptionHandler(settings, ec2, autoscaling, client_for_cluster, metrics),
        LifecycleTagger(settings, ec2, client_for_cluster, metrics),
        LaunchCompleter(settings, ec2, autoscaling, client_for_cluster),
        boto3.client("sqs", config=boto_config()),
        metrics,
    )
    config = IdempotencyConfig(event_key_jmespath="key", expires_after_seconds=24 * 3600)
    store = DynamoDBPersistenceLayer(table_name=settings.state_table)

    def act(work: dict) -> dict:
        return worker.act(work["work"], work["budget"])

    idempotent_act = idempotent_function(act, data_keyword_argument="work", config=config,
                                         persistence_store=store)
    logger = Logger(service="spot-rebalancer")
    return worker, (config, idempotent_act), logger


def handler(event: dict, context: Any) -> dict:
    from aws_lambda_powertools.utilities.batch import (
        BatchProcessor,
        EventType,
        process_partial_response,
    )

    worker, (config, idempotent_act), logger = _runtime()
    config.register_lambda_context(context)

    def process(record: Any) -> list[dict]:
        done = []
        for work in read_message(record.body, worker.settings):
            budget = context.get_remaining_time_in_millis() / 1000
            logger.info("event", extra={"kind": str(work.event.kind), "key": work.key})
            done.append(idempotent_act(work={"key": work.key, "work": work, "budget": budget}))
        return done

    try:
        return process_partial_response(event, process, BatchProcessor(EventType.SQS), context)
    finally:
        worker.metrics.publish()
