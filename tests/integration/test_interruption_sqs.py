"""The events function's SQS path end to end: the Lambda handler as deployed (built from the
environment, powertools idempotency on a moto DynamoDB table, continuations on a moto SQS queue)
draining a node of the local control plane."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from spot_rebalancer.handlers import events as events_handler
from tests.ec2 import launch_instance
from tests.events_function import function_environment
from tests.kube.workloads import deployment, pods, running, wait_for

SAMPLE = Path(__file__).parents[1] / "events" / "spot-interruption-terminate.json"
REGION = "eu-west-1"
INSTANCE_ID = re.compile(r"i-[0-9a-f]{17}\b")


class Context:
    """What powertools reads from a Lambda context; `remaining_ms` is the invocation's budget."""

    function_name = "events"
    memory_limit_in_mb = 512
    invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:events"

    def __init__(self, remaining_ms: int = 100_000) -> None:
        self.remaining_ms = remaining_ms
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@dataclass
class Deployed:
    queue_url: str
    table: str
    instance: str
    node: str

    def deliver(self, body: str, remaining_ms: int = 100_000) -> dict:
        """One SQS invocation with this message; the message id stays the same on redelivery."""
        record = {"messageId": "m-" + str(uuid.uuid5(uuid.NAMESPACE_OID, body)), "receiptHandle": "r",
                  "body": body, "attributes": {}, "messageAttributes": {}, "md5OfBody": "",
                  "eventSource": "aws:sqs", "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:work",
                  "awsRegion": REGION}
        return events_handler.handler({"Records": [record]}, Context(remaining_ms))

    def idempotency_records(self) -> list[dict]:
        return boto3.client("dynamodb", region_name=REGION).scan(TableName=self.table)["Items"]


@pytest.fixture
def deployed(api, kube, namespace, nodes, monkeypatch) -> Iterator[Deployed]:
    """The function's environment on moto, and a spot node with two web pods for it to drain."""
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        instance = launch_instance(ec2)
        queue_url = function_environment(monkeypatch, lambda _name: kube)
        node = nodes(lifecycle="spot", instance_id=instance)
        deployment(api, namespace, "web", replicas=2)
        wait_for(lambda: len(running(pods(api, namespace, "web"))) == 2, "web pods running")
        nodes(lifecycle="on-demand")
        events_handler._runtime.cache_clear()
        try:
            yield Deployed(queue_url, "state", instance, node.name)
        finally:
            events_handler._runtime.cache_clear()


def spot_warning(instance_id: str) -> str:
    raw = json.loads(INSTANCE_ID.sub(instance_id, SAMPLE.read_text()))
    raw["time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps(raw)


def product_writes(cluster, node: str) -> tuple[int, int]:
    """(node patches, evictions) the product sent through the proxy since the last reset."""
    requests = cluster.proxy.requests
    evictions = sum(n for (method, path), n in requests.items()
                    if method == "POST" and path.endswith("/eviction"))
    return requests[("PATCH", f"/api/v1/nodes/{node}")], evictions


def pods_on(api, namespace: str, node: str) -> list[dict]:
    return [p for p in pods(api, namespace) if p["spec"].get("nodeName") == node]


def test_the_same_message_delivered_twice_drains_once(api, cluster, namespace, deployed):
    body = spot_warning(deployed.instance)
    cluster.proxy.reset_counts()

    assert deployed.deliver(body) == {"batchItemFailures": []}
    assert product_writes(cluster, deployed.node) == (1, 2)
    assert pods_on(api, namespace, deployed.node) == []
    # The user uncordons meanwhile: a second drain would cordon the node again.
    api.patch(f"/api/v1/nodes/{deployed.node}", {"spec": {"unschedulable": False}})
    cluster.proxy.reset_counts()

    assert deployed.deliver(body) == {"batchItemFailures": []}
    assert product_writes(cluster, deployed.node) == (0, 0), "the redelivery acted again"
    assert not api.get(f"/api/v1/nodes/{deployed.node}")["spec"].get("unschedulable")
    (record,) = deployed.idempotency_records()
    assert record["status"]["S"] == "COMPLETED"
    stored = json.loads(record["data"]["S"])
    assert {step["action"] for step in stored["steps"]} >= {"taint", "cordon", "evict"}


def test_a_drain_that_outlives_the_invocation_is_continued_through_the_queue(
        api, cluster, namespace, deployed, monkeypatch):
    monkeypatch.setattr(cluster.nodes, "deletion_delay", 4)  # pods take longer than the budget
    sqs = boto3.client("sqs", region_name=REGION)

    assert deployed.deliver(spot_warning(deployed.instance), remaining_ms=12_000) == {"batchItemFailures": []}
    assert pods_on(api, namespace, deployed.node), "the pods were still stopping"
    (message,) = sqs.receive_message(QueueUrl=deployed.queue_url, MaxNumberOfMessages=10)["Messages"]
    continuation = json.loads(message["Body"])["continuation"]
    assert (continuation["instanceId"], continuation["attempt"]) == (deployed.instance, 1)

    cluster.proxy.reset_counts()
    assert deployed.deliver(message["Body"]) == {"batchItemFailures": []}
    assert pods_on(api, namespace, deployed.node) == []
    assert product_writes(cluster, deployed.node)[1] == 0, "the continuation waited; it did not evict"
    assert "Messages" not in sqs.receive_message(QueueUrl=deployed.queue_url, MaxNumberOfMessages=10)
    assert len(deployed.idempotency_records()) == 2, "one record per attempt"
