"""The move history in DynamoDB: round trip, versioned writes, expiry, unreadable items; and the
records of drains queued for impaired instances."""

from datetime import UTC, datetime

import boto3
import pytest
from moto import mock_aws

from spot_rebalancer.rebalance import Backoff, History, MoveRecord, WorkloadRef
from spot_rebalancer.state import (
    DEFAULT_TTL_SECONDS,
    DrainClaims,
    HistoryConflict,
    HistoryCorrupt,
    HistoryStore,
)
from tests.state_table import create_state_table

REGION = "eu-west-1"
TABLE = "state"
NOW = 1_700_000_000
WEB = WorkloadRef("shop", "ReplicaSet", "web-7d4b9")


@pytest.fixture
def client():
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        create_state_table(client, TABLE)
        yield client


@pytest.fixture
def store(client):
    return HistoryStore(client, TABLE, clock=lambda: NOW)


def a_history() -> History:
    moved = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    record = MoveRecord(namespace="shop", pod="web-7d4b9-abcde", pod_uid="uid-1", workload=WEB,
                        from_node="od-1", to_node="spot-1", from_score=0, expected_score=100,
                        moved_at=moved, attempt=2)
    return History(in_flight=(record,),
                   backoffs=(Backoff(WEB, "preferred-node-affinity", 1, moved.replace(hour=11)),))


def test_nothing_stored_is_an_empty_history_at_version_0(store):
    stored = store.load("prod")
    assert stored.history == History()
    assert stored.version == 0


def test_a_saved_history_reads_back_equal_with_its_version_and_expiry(store, client):
    assert store.save("prod", a_history(), 0) == 1
    stored = store.load("prod")
    assert stored.history == a_history()
    assert stored.version == 1
    item = client.get_item(TableName=TABLE, Key={"id": {"S": "history#prod"}})["Item"]
    assert item["expiration"] == {"N": str(NOW + DEFAULT_TTL_SECONDS)}
    assert store.save("prod", History(), 1) == 2
    assert store.load("prod").history == History()


def test_clusters_keep_separate_histories(store):
    store.save("prod", a_history(), 0)
    assert store.load("staging").history == History()


def test_a_write_from_a_stale_read_is_refused_and_leaves_the_stored_history(store):
    store.save("prod", a_history(), 0)
    first, second = store.load("prod"), store.load("prod")
    store.save("prod", History(), first.version)
    with pytest.raises(HistoryConflict):
        store.save("prod", a_history(), second.version)
    assert store.load("prod") == type(first)(History(), 2)


def test_creating_a_history_that_another_writer_created_first_is_refused(store):
    store.save("prod", History(), 0)
    with pytest.raises(HistoryConflict):
        store.save("prod", a_history(), 0)


def test_an_unreadable_item_raises_a_typed_error(store, client):
    client.put_item(TableName=TABLE, Item={"id": {"S": "history#prod"}, "history": {"S": "{not json"},
                                           "version": {"N": "3"}})
    with pytest.raises(HistoryCorrupt, match="history of prod"):
        store.load("prod")


def test_a_drain_for_an_impaired_instance_is_claimed_once_per_ttl_per_cluster(client):
    clock = [NOW]
    claims = DrainClaims(client, TABLE, ttl_seconds=3600, clock=lambda: clock[0])
    assert claims.claim("prod", "i-0e4b6d8f0a2c35791")
    assert not claims.claim("prod", "i-0e4b6d8f0a2c35791"), "queued already"
    assert claims.claim("prod", "i-0a1b2c3d4e5f60718") and claims.claim("dev", "i-0e4b6d8f0a2c35791")
    clock[0] += 3600
    assert not claims.claim("prod", "i-0e4b6d8f0a2c35791"), "not before its record expires"
    clock[0] += 1
    assert claims.claim("prod", "i-0e4b6d8f0a2c35791"), "an expired record DynamoDB has not deleted yet"
    item = client.get_item(TableName=TABLE, Key={"id": {"S": "impaired#prod#i-0e4b6d8f0a2c35791"}})["Item"]
    assert item["expiration"] == {"N": str(NOW + 3601 + 3600)}
