"""The events function as deployed, for integration tests: the Lambda handler built from its own
environment on moto (the DynamoDB idempotency table, the SQS work queue), its Kubernetes client
pointed at the local control plane, and its AWS clients open to inspection and throttling.

moto has no Auto Scaling lifecycle actions, and botocore's Stubber answers before botocore's retry
logic runs, so `AwsSends` answers (or refuses) calls where they leave botocore instead: every
answer, throttling included, goes through the client's real parser and retry mode.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import boto3
from botocore.awsrequest import AWSResponse
from moto import mock_aws
from moto.core.models import botocore_stubber

from spot_rebalancer.handlers import events as events_handler
from tests.state_table import create_state_table

REGION = "eu-west-1"
ACCOUNT = "123456789012"
EVENTS = Path(__file__).parent / "events"
INSTANCE_ID = re.compile(r"i-[0-9a-f]{17}\b")

# What each service answers when it throttles: (HTTP status, body).
THROTTLED = {
    "ec2": (503, b"<Response><Errors><Error><Code>RequestLimitExceeded</Code>"
                 b"<Message>Request limit exceeded.</Message></Error></Errors></Response>"),
    "autoscaling": (400, b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>"
                         b"<Message>Rate exceeded</Message></Error><RequestId>r</RequestId></ErrorResponse>"),
}
# Auto Scaling calls moto lacks, answered as the service does (an empty result).
ANSWERED = ("CompleteLifecycleAction", "RecordLifecycleActionHeartbeat")


def published(text: str) -> Counter:
    """The metrics in the CloudWatch EMF documents printed, summed by name."""
    totals: Counter = Counter()
    for line in text.splitlines():
        if not line.startswith("{") or "_aws" not in line:
            continue
        document = json.loads(line)
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                value = document[metric["Name"]]  # a list when one document holds several points
                totals[metric["Name"]] += sum(value) if isinstance(value, list) else value
    return totals


def sample_event(name: str, instance_id: str, at: datetime | None = None) -> str:
    """An AWS sample event from tests/events for this instance, sent `at` (by default now), as JSON
    text."""
    raw = json.loads(INSTANCE_ID.sub(instance_id, (EVENTS / name).read_text()))
    raw["time"] = (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps(raw)


class Context:
    """What powertools reads from a Lambda context; `remaining_ms` is the invocation's budget."""

    function_name = "events"
    memory_limit_in_mb = 512
    invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:events"

    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


class _Body:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


@dataclass
class AwsSends:
    """Every send of the watched operations of one client: `sends` counts them by (operation,
    outcome), `accepted` keeps the parameters of those the service took. `throttle(op, n)` refuses
    the next n sends of op with the service's throttling error."""

    service: str
    sends: Counter = field(default_factory=Counter)
    accepted: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    _watched: frozenset[str] = frozenset()
    _to_refuse: Counter = field(default_factory=Counter)

    def watch(self, client: Any, *operations: str) -> AwsSends:
        """Take moto's place on this client and hand it the sends this does not answer: botocore
        calls every send handler, so with moto beside this one a refused send would still act."""
        self._watched = frozenset(operations)
        client.meta.events.unregister("before-send", botocore_stubber)
        client.meta.events.register("before-send", self._send)
        return self

    def throttle(self, operation: str, times: int) -> None:
        self._to_refuse[operation] = times

    def calls(self, operation: str) -> list[dict[str, str]]:
        return [params for op, params in self.accepted if op == operation]

    def _send(self, request: Any, event_name: str, **kwargs: Any) -> AWSResponse | None:
        operation = event_name.rsplit(".", 1)[-1]
        if operation in self._watched:
            if self._to_refuse[operation] > 0:
                self._to_refuse[operation] -= 1
                self.sends[(operation, "throttled")] += 1
                status, body = THROTTLED[self.service]
                return AWSResponse(request.url, status, {}, _Body(body))
            self.sends[(operation, "accepted")] += 1
            body = request.body or b""
            text = body.decode() if isinstance(body, bytes) else body
            self.accepted.append((operation, {k: v[0] for k, v in parse_qs(text).items()}))
            if operation in ANSWERED:
                answer = (f"<{operation}Response><{operation}Result/><ResponseMetadata><RequestId>r"
                          f"</RequestId></ResponseMetadata></{operation}Response>").encode()
                return AWSResponse(request.url, 200, {}, _Body(answer))
        return botocore_stubber(event_name=event_name, request=request, **kwargs)


def record(message_id: str, receipt_handle: str, body: str, attributes: dict[str, str]) -> dict:
    """An SQS event record from the work queue, as Lambda hands it to the function."""
    return {"messageId": message_id, "receiptHandle": receipt_handle, "body": body, "attributes": attributes,
            "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
            "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:work", "awsRegion": REGION}


@dataclass
class EventsFunction:
    """The deployed events function: `invoke` hands it one SQS batch; `ec2` and `autoscaling`
    watch the calls its own clients send."""

    queue_url: str
    table: str
    ec2: AwsSends
    autoscaling: AwsSends

    def invoke(self, bodies: list[str], message_ids: list[str] | None = None,
               remaining_ms: int = 100_000) -> dict:
        """One invocation with one SQS record per body (message ids default to fresh ones)."""
        ids = message_ids or [str(uuid.uuid4()) for _ in bodies]
        return self.invoke_records([record(message_id, "r", body, {})
                                    for message_id, body in zip(ids, bodies, strict=True)], remaining_ms)

    def invoke_records(self, records: list[dict], remaining_ms: int = 100_000) -> dict:
        return events_handler.handler({"Records": records}, Context(remaining_ms))

    def receive(self) -> list[dict]:
        """The work queue's visible messages, received as Lambda's poller receives them (hidden for
        the queue's visibility timeout from now), as one invocation's records."""
        sqs = boto3.client("sqs", region_name=REGION)
        messages = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                       AttributeNames=["All"]).get("Messages", [])
        return [record(m["MessageId"], m["ReceiptHandle"], m["Body"], m["Attributes"]) for m in messages]

    def queued(self) -> list[str]:
        """The bodies waiting on the work queue (continuations the function sent itself)."""
        sqs = boto3.client("sqs", region_name=REGION)
        bodies = []
        while True:
            messages = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                           VisibilityTimeout=0).get("Messages", [])
            for message in messages:
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
            bodies.extend(m["Body"] for m in messages)
            if not messages:
                return bodies

    def delayed(self) -> list[tuple[str, int]]:
        return delayed_messages(self.queue_url)

    def idempotency_records(self) -> list[dict]:
        return boto3.client("dynamodb", region_name=REGION).scan(TableName=self.table)["Items"]


def delayed_messages(queue_url: str) -> list[tuple[str, int]]:
    """Every body on a moto queue with the delay it was sent with, taken off the queue: a test does
    not wait out SQS delays, so it reads moto's queue itself."""
    from moto.sqs.models import sqs_backends

    queue = sqs_backends[ACCOUNT][REGION].get_queue(queue_url.rsplit("/", 1)[-1])
    taken = [(m.body, round((m.delayed_until - m.sent_timestamp) / 1000)) for m in queue._messages]
    queue._messages.clear()
    return taken


def function_environment(monkeypatch: Any, kube_for: Callable[[str], Any], **environment: str) -> str:
    """Inside moto: the state table and the work queue made, the function's environment set (plus
    `environment`) and its Kubernetes client taken from `kube_for(cluster)`; the queue's URL."""
    create_state_table(boto3.client("dynamodb", region_name=REGION))
    queue_url = boto3.client("sqs", region_name=REGION).create_queue(QueueName="work")["QueueUrl"]
    for key, value in {"AWS_DEFAULT_REGION": REGION, "CLUSTER_NAME": "test", "STATE_TABLE": "state",
                       "WORK_QUEUE_URL": queue_url, "DRAIN_TIMEOUT_SECONDS": "20",
                       "POWERTOOLS_METRICS_DISABLED": "true", **environment}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr("spot_rebalancer.eks_auth.client_for_cluster", kube_for)
    return queue_url


@contextmanager
def events_function(monkeypatch: Any, kube_for: Callable[[str], Any],
                    **environment: str) -> Iterator[EventsFunction]:
    """Inside moto: the table, the queue and the function's environment (plus `environment`),
    the function's runtime built from it, and its Kubernetes client from `kube_for(cluster)`."""
    with mock_aws():
        # The function's INFO line per event would bury what a test prints.
        queue_url = function_environment(monkeypatch, kube_for,
                                         **{"POWERTOOLS_LOG_LEVEL": "WARNING", **environment})
        made: dict[str, list[Any]] = {}
        real_client = boto3.client

        def client(service: str, *args: Any, **kwargs: Any) -> Any:
            made.setdefault(service, []).append(real_client(service, *args, **kwargs))
            return made[service][-1]

        events_handler._runtime.cache_clear()
        with monkeypatch.context() as building:
            building.setattr(boto3, "client", client)
            events_handler._runtime()
        try:
            yield EventsFunction(
                queue_url, "state",
                AwsSends("ec2").watch(made["ec2"][0], "CreateTags"),
                AwsSends("autoscaling").watch(made["autoscaling"][0], *ANSWERED))
        finally:
            events_handler._runtime.cache_clear()
