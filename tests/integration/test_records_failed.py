"""Failed records are counted: a partial batch response hides them from the function's Errors
metric, so the events function publishes `RecordsFailed` (the `RecordsFailed` alarm watches it).
Handing them back to the queue early never costs a record, nor the invocation its end."""

from __future__ import annotations

import time

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from spot_rebalancer.aws import QUICK_CALL_SECONDS
from spot_rebalancer.work import retry_delay_seconds
from tests.events_function import REGION, events_function, published, record, sample_event

GONE = "i-0123456789abcdef0"  # never launched: its warning is acknowledged quietly
WARNING = "spot-interruption-terminate.json"


@pytest.fixture
def function(kube, monkeypatch):
    with events_function(monkeypatch, lambda _cluster: kube, POWERTOOLS_METRICS_DISABLED="false") as deployed:
        yield deployed


def test_a_bad_record_fails_alone_and_is_counted(function, capsys):
    result = function.invoke(["{not json", sample_event(WARNING, GONE)], ["bad", "good"])
    assert result == {"batchItemFailures": [{"itemIdentifier": "bad"}]}
    assert published(capsys.readouterr().out)["RecordsFailed"] == 1


def test_a_batch_that_acts_is_counted_as_no_failure(function, capsys):
    assert function.invoke([sample_event(WARNING, GONE)]) == {"batchItemFailures": []}
    metrics = published(capsys.readouterr().out)
    assert metrics.get("RecordsFailed") == 0 and metrics["EventsIgnored"] == 1  # published, as 0


def test_a_failed_record_whose_early_retry_fails_is_still_reported_failed(function, caplog):
    """Handing a failed record back early is a speed-up only: when SQS refuses it (here the record
    names a queue that no longer exists; a stale receipt is refused per entry), the record is still
    reported failed, so SQS delivers it again after the visibility timeout, never loses it."""
    gone = record("bad", "r", "{not json", {"ApproximateReceiveCount": "1"})
    gone["eventSourceARN"] = gone["eventSourceARN"].replace(":work", ":deleted")
    stale = record("stale", "not-a-receipt", "{not json", {"ApproximateReceiveCount": "1"})
    result = function.invoke_records([gone, stale, record("good", "r", sample_event(WARNING, GONE), {})])
    assert result == {"batchItemFailures": [{"itemIdentifier": "bad"}, {"itemIdentifier": "stale"}]}
    warned = [r.getMessage() for r in caplog.records if "after the visibility timeout" in r.getMessage()]
    assert len(warned) == 2 and "'bad'" in warned[0] + warned[1] and "stale" in warned[0] + warned[1]


def test_with_no_time_left_to_hand_a_failed_record_back_it_waits_out_the_visibility_timeout(function):
    """The invocation's end comes first: a hand-back that outlived it would make Lambda drop the
    batch's whole partial response, so the record is reported failed and simply left hidden."""
    sqs = boto3.client("sqs", region_name=REGION)
    sqs.send_message(QueueUrl=function.queue_url, MessageBody="{not json")
    (received,) = function.receive()
    with pytest.raises(BatchProcessingError):  # its only record failed
        function.invoke_records([received], remaining_ms=int(QUICK_CALL_SECONDS * 1000) - 500)
    time.sleep(retry_delay_seconds(1) + 1)
    assert function.receive() == [], "handed back although the invocation had no time for it"
