"""Failed records are retried within the deadline, and duplicates still act once: through the events
function as deployed, on the work queue (moto, with the deployed 660 s visibility timeout) and the
local control plane behind an endpoint that first accepts and never answers. The failed records are
handed back to the queue with a short back-off, delivered again within seconds (not after the
visibility timeout) and, once the endpoint answers, drain the node once, well before the spot
warning's two minutes are up."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from infra.construct import WORK_VISIBILITY_TIMEOUT
from spot_rebalancer.events import parse_event
from spot_rebalancer.kube import KubeClient
from spot_rebalancer.work import retry_delay_seconds
from tests.ec2 import launch_instance
from tests.events_function import REGION, events_function, sample_event
from tests.kube.controlplane import ADMIN
from tests.kube.gate import Gate
from tests.kube.workloads import busy_spot_node, pods

REPLICAS = 2


@pytest.fixture
def gate(cluster):
    gate = Gate(upstream=cluster.proxy.url)
    yield gate
    gate.close()


def received_again(function, copies: int, within_seconds: float) -> list[dict]:
    """Poll the queue as Lambda's poller does until `copies` records are visible again."""
    records: list[dict] = []
    give_up = time.monotonic() + within_seconds
    while len(records) < copies and time.monotonic() < give_up:
        records.extend(function.receive())
        time.sleep(0.25)
    return records


def test_failed_records_are_retried_within_the_deadline_and_duplicates_still_act_once(
        api, cluster, namespace, nodes, gate, monkeypatch):
    ca_pem = Path(cluster.control_plane.ca_file).read_text()
    client = KubeClient.with_token(gate.url, ca_pem, lambda: ADMIN.token)
    with events_function(monkeypatch, lambda _cluster: client) as function:
        sqs = boto3.client("sqs", region_name=REGION)
        visibility = int(WORK_VISIBILITY_TIMEOUT.to_seconds())
        sqs.set_queue_attributes(QueueUrl=function.queue_url,
                                 Attributes={"VisibilityTimeout": str(visibility)})
        instance = launch_instance(boto3.client("ec2", region_name=REGION))
        node, on_node = busy_spot_node(api, namespace, nodes, instance, REPLICAS)
        body = sample_event("spot-interruption-terminate.json", instance)
        (warning,) = parse_event(json.loads(body))
        assert warning.deadline is not None
        for _ in range(2):  # EventBridge delivers at least once: here, twice
            sqs.send_message(QueueUrl=function.queue_url, MessageBody=body)
        cluster.proxy.reset_counts()

        first = function.receive()
        assert len(first) == 2
        with pytest.raises(BatchProcessingError):  # the API endpoint never answers
            function.invoke_records(first, remaining_ms=8_000)
        assert function.receive() == [], "hidden for their back-off"

        again = received_again(function, 2, within_seconds=retry_delay_seconds(1) + 8)
        assert {r["messageId"] for r in again} == {r["messageId"] for r in first}, \
            f"not delivered again within seconds (the visibility timeout is {visibility} s)"
        assert all(r["attributes"]["ApproximateReceiveCount"] == "2" for r in again)

        gate.open()
        assert function.invoke_records(again) == {"batchItemFailures": []}, "the retry succeeds"
        left = (warning.deadline - datetime.now(UTC)).total_seconds()
        assert left > 0, f"drained {-left:.0f} s after the warning's deadline"
        assert not [p for p in pods(api, namespace) if p["spec"].get("nodeName") == node], "drained"
        assert function.idempotency_records()[0]["status"]["S"] == "COMPLETED"
        assert len(function.idempotency_records()) == 1, "the copies acted once"

    evictions = {path.split("/")[-2]: n for (method, path), n in cluster.proxy.requests.items()
                 if method == "POST" and path.endswith("/eviction")}
    assert evictions == dict.fromkeys(on_node, 1), "each pod evicted once"
    assert cluster.proxy.requests[("PATCH", f"/api/v1/nodes/{node}")] == 1, "one cordon"
    print(f"\nfast retries: 2 copies of a spot warning failed (endpoint hung), delivered again after "
          f"{retry_delay_seconds(1)} s (visibility timeout {visibility} s), drained {left:.0f} s before the "
          f"warning's deadline, {sum(evictions.values())} evictions of {len(on_node)} pods")
