"""Failed records are counted: a partial batch response hides them from the function's Errors
metric, so the events function publishes `RecordsFailed` (the `RecordsFailed` alarm watches it)."""

from __future__ import annotations

import pytest

from tests.events_function import events_function, published, record, sample_event

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
