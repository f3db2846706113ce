"""With its DynamoDB table unavailable, the events function fails the message loudly (SQS delivers
it again and, in the end, to the dead-letter queue) and does nothing to the cluster meanwhile."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import boto3
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from moto import mock_aws

from spot_rebalancer.handlers import events as events_handler
from tests.ec2 import launch_instance

SAMPLE = Path(__file__).parents[1] / "events" / "spot-interruption-terminate.json"


class Context:
    function_name = "events"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:events"
    aws_request_id = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 100_000


def test_no_state_table_means_a_failed_message_and_an_untouched_node(api, kube, nodes, monkeypatch):
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="eu-west-1")
        instance = launch_instance(ec2)
        node = nodes(lifecycle="spot", instance_id=instance)
        for key, value in {"AWS_DEFAULT_REGION": "eu-west-1", "CLUSTER_NAME": "test",
                           "STATE_TABLE": "missing-table", "WORK_QUEUE_URL": "unused",
                           "POWERTOOLS_METRICS_DISABLED": "true"}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr("spot_rebalancer.eks_auth.client_for_cluster", lambda _name: kube)
        events_handler._runtime.cache_clear()
        raw = json.loads(SAMPLE.read_text())
        raw["detail"]["instance-id"] = instance
        raw["time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        message_id = str(uuid.uuid4())
        # With every record of the batch failed, powertools fails the whole invocation, so SQS
        # delivers the batch again (and after the queue's receive limit, to its dead-letter queue).
        failure = None
        try:
            events_handler.handler({"Records": [{
                "messageId": message_id, "receiptHandle": "r", "body": json.dumps(raw), "attributes": {},
                "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:work", "awsRegion": "eu-west-1"}]},
                Context())
        except BatchProcessingError as exc:
            failure = exc
        finally:
            events_handler._runtime.cache_clear()

    assert failure is not None, "the invocation succeeded without its state table"
    assert "idempotency store" in str(failure.child_exceptions)
    after = api.get(f"/api/v1/nodes/{node.name}")
    assert not after["spec"].get("unschedulable")
    assert not after["spec"].get("taints")
