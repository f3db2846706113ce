"""The events function: SQS batches of EventBridge events (and drain continuations) in, handed to
`work.EventsWorker`.

The batch's work items are acted on at once (`work.act_on_batch`: every node marked before
any drain waits). Work is idempotent per (notification, instance, attempt) through powertools on
DynamoDB, so a duplicate delivery acts once. A message that fails is reported as a batch item
failure and made visible again after a short back-off (`work.retry_soon`), so SQS delivers it again
within seconds and, after the queue's receive limit, moves it to the dead-letter queue.

Heavy imports (boto3, powertools' idempotency and batch) happen on first use, so
importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache, partial
from typing import TYPE_CHECKING, Any

from ..aws import QUICK_CALL_SECONDS
from ..capacity_blocks import CapacityBlocks
from ..config import Settings
from ..drain import BatchMember, DrainService
from ..notifier import Notifier
from ..tagging import LaunchCompleter, LifecycleTagger
from ..telemetry import MetricsRecorder
from ..work import Delivery, EventsWorker, Work, act_on_batch, retry_soon

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse


@cache
def _runtime() -> tuple[EventsWorker, Any, Any, Callable[[Sequence[Delivery]], None]]:
    """The worker, the idempotent wrapper of its `act`, the powertools logger and the fast retry
    of failed records, built once per container from the environment."""
    import boto3
    from aws_lambda_powertools import Logger
    from aws_lambda_powertools.utilities.idempotency import (
        DynamoDBPersistenceLayer,
        IdempotencyConfig,
        idempotent_function,
    )

    from ..aws import AutoScaling, Ec2, boto_config, quick_config
    from ..eks_auth import client_for_cluster

    settings = Settings.from_env()
    metrics = MetricsRecorder()
    ec2 = Ec2(boto3.client("ec2", config=boto_config()))
    autoscaling = AutoScaling(boto3.client("autoscaling", config=boto_config()))
    worker = EventsWorker(
        settings,
        DrainService(settings, ec2, autoscaling, client_for_cluster, metrics),
        CapacityBlocks(settings, ec2),
        LifecycleTagger(settings, ec2, client_for_cluster, metrics),
        LaunchCompleter(settings, ec2, autoscaling, client_for_cluster),
        boto3.client("sqs", config=boto_config()),
        metrics,
        # Short timeouts, one attempt: a notice must not hold up the drains of the batch.
        Notifier(boto3.client("sns", config=quick_config()), settings.notification_topic_arn, metrics,
                 settings.cluster_name) if settings.notification_topic_arn else None,
    )
    config = IdempotencyConfig(event_key_jmespath="key", expires_after_seconds=24 * 3600)
    store = DynamoDBPersistenceLayer(table_name=settings.state_table)

    def act(work: dict) -> dict:
        return worker.act(work["work"], work["budget"], work["batch"])

    # Configured here, once: the batch's records are acted on from several threads, and the
    # store's first configuration is not safe to race.
    store.configure(config)
    idempotent_act = idempotent_function(act, data_keyword_argument="work", config=config,
                                         persistence_store=store)
    logger = Logger(service="spot-rebalancer")
    retry_failed_soon = partial(retry_soon, boto3.client("sqs", config=quick_config()))
    return worker, (config, idempotent_act), logger, retry_failed_soon


def handler(event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
    from aws_lambda_powertools.utilities.batch import (
        BatchProcessor,
        EventType,
        process_partial_response,
    )
    from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError

    worker, (config, idempotent_act), logger, retry_failed_soon = _runtime()
    config.register_lambda_context(context)

    def act(work: Work, batch: BatchMember) -> dict:
        budget = context.get_remaining_time_in_millis() / 1000
        logger.info("event", extra={"kind": str(work.event.kind), "key": work.key})
        return idempotent_act(work={"key": work.key, "work": work, "budget": budget, "batch": batch})

    records = event.get("Records", [])
    outcomes = dict(zip((r["messageId"] for r in records),
                        act_on_batch([r["body"] for r in records], act), strict=True))

    def process(record: Any) -> list[dict]:
        outcome = outcomes[record.message_id]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    failures = [o for o in outcomes.values() if isinstance(o, Exception)]
    duplicates = [f for f in failures if isinstance(f, IdempotencyAlreadyInProgressError)]
    # A copy delivered while another invocation still acts on it is handed back to SQS for
    # later, not an error: a batch of only such copies must not fail the invocation (and fire
    # the function's Errors alarm). Real failures are counted, since a partial batch response
    # hides them from that metric.
    worker.metrics.add("RecordsFailed", len(failures) - len(duplicates),
                       ClusterName=worker.settings.cluster_name)
    # Real failures come back within seconds, not after the visibility timeout; a copy still in
    # progress elsewhere keeps it (back in seconds, it would only use up its receives). Without the
    # time for it, the records wait out the timeout rather than the invocation its end (Lambda would
    # then drop the whole partial response).
    if context.get_remaining_time_in_millis() / 1000 > QUICK_CALL_SECONDS:
        retry_failed_soon([Delivery.of(r) for r in records if isinstance(outcomes[r["messageId"]], Exception)
                           and not isinstance(outcomes[r["messageId"]], IdempotencyAlreadyInProgressError)])
    processor = BatchProcessor(EventType.SQS,
                               raise_on_entire_batch_failure=len(duplicates) < len(failures))
    try:
        return process_partial_response(event, process, processor, context)
    finally:
        worker.metrics.publish()
