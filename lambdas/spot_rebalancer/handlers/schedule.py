"""The schedule function: every period, one `Rebalancer.tick` on the configured cluster (the sweep,
the census and one rebalance cycle, in waves while the invocation has time). It runs with a reserved
concurrency of one, so ticks do not overlap.

Heavy imports (boto3, powertools) happen on first use, so importing this
module is cheap.
"""

from __future__ import annotations

import time
from functools import cache
from typing import Any

from ..config import ConfigError, Settings
from ..rebalancer import Rebalancer
from ..telemetry import MetricsRecorder

# Kept from a cycle's waiting for what follows the last wait: one more wave (plan, evictions, the
# history saved) and the metrics published. Reading and planning 150,000 pods takes about 5 s
# (BENCHMARKS.md).
FINISHING_RESERVE_SECONDS = 30


def waves_until(context: Any) -> float | None:
    """Until when (on time.monotonic) a cycle may wait for its waves' replacements: the invocation's
    remaining time less the finishing reserve; None (one wave) without a Lambda context."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    return time.monotonic() + remaining() / 1000 - FINISHING_RESERVE_SECONDS


@cache
def _runtime() -> tuple[Rebalancer, Any]:
    """The rebalancer and the powertools logger, built once per container from the environment."""
    import boto3
    from aws_lambda_powertools import Logger

    from ..aws import AutoScaling, Ec2, boto_config, quick_config
    from ..eks_auth import client_for_cluster
    from ..notifier import Notifier
    from ..pricing import PriceList, price_list_region
    from ..state import DrainClaims, HistoryStore
    from ..status_checks import CLAIM_SECONDS, StatusChecks
    from ..tagging import LifecycleTagger

    settings = Settings.from_env()
    if not settings.cluster_name or not settings.state_table:
        raise ConfigError("CLUSTER_NAME, STATE_TABLE", "both must be set for the schedule function")
    metrics = MetricsRecorder()
    ec2_client = boto3.client("ec2", config=boto_config())
    ec2 = Ec2(ec2_client)
    region = ec2_client.meta.region_name
    prices = PriceList(boto3.client("pricing", region_name=price_list_region(region), config=boto_config()),
                       ec2_client, region)
    autoscaling = (AutoScaling(boto3.client("autoscaling", config=boto_config()))
                   if settings.capacity_nudge or settings.scale_in_emptied_nodes else None)
    dynamodb = boto3.client("dynamodb", config=boto_config())
    store = HistoryStore(dynamodb, settings.state_table)
    status_checks = (StatusChecks(settings, ec2, DrainClaims(dynamodb, settings.state_table, CLAIM_SECONDS),
                                  boto3.client("sqs", config=boto_config()), region)
                     if settings.instance_status_checks else None)
    kube = client_for_cluster(settings.cluster_name)
    tagger = LifecycleTagger(settings, ec2, lambda _cluster: kube, metrics)
    notifier = (Notifier(boto3.client("sns", config=quick_config()), settings.notification_topic_arn,
                         metrics, settings.cluster_name) if settings.notification_topic_arn else None)
    rebalancer = Rebalancer(settings, kube, metrics, store, autoscaling=autoscaling, ec2=ec2,
                            tagger=tagger, prices=prices, status_checks=status_checks, notifier=notifier)
    return rebalancer, Logger(service="spot-rebalancer")


def handler(event: dict[str, Any], context: Any) -> dict[str, object]:
    rebalancer, logger = _runtime()
    try:
        summary = rebalancer.tick(until=waves_until(context)).summary()
    finally:
        rebalancer.metrics.publish()
    logger.info("cycle", extra=summary)
    return summary
