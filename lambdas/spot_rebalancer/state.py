"""The schedule function's state in DynamoDB: the rebalancer's move history, one item per cluster,
and a record per impaired instance whose drain it queued (`DrainClaims`).

The item is `{"id": "history#<cluster>", "history": <History as JSON>, "version": n, "expiration":
<epoch seconds>}` in the table it shares with the idempotency records (which use their own keys).
Every write names the version it read, so two cycles that overlap cannot silently drop each other's
moves: the second one gets HistoryConflict and must read again. A cluster that stops being rebalanced
loses its history when `expiration` passes; every cycle moves it forward.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from .rebalance import History
from .state_keys import history_key, impaired_key

# Longer than any back-off (six hours) and any replacement timeout, so nothing still useful expires.
DEFAULT_TTL_SECONDS = 7 * 24 * 3600

_decode_history = msgspec.json.Decoder(History).decode


class HistoryConflict(RuntimeError):
    """Another writer saved the history since it was loaded."""


class HistoryCorrupt(ValueError):
    """A stored history that cannot be read back."""


@dataclass(frozen=True, slots=True)
class StoredHistory:
    history: History
    version: int  # 0: nothing stored yet


class HistoryStore:
    def __init__(self, client: Any, table: str, ttl_seconds: int = DEFAULT_TTL_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._table = table
        self._ttl_seconds = ttl_seconds
        self._clock = clock

    @staticmethod
    def key(cluster: str) -> dict[str, dict[str, str]]:
        return {"id": {"S": history_key(cluster)}}

    def load(self, cluster: str) -> StoredHistory:
        item = self._client.get_item(TableName=self._table, Key=self.key(cluster),
                                     ConsistentRead=True).get("Item")
        if item is None:
            return StoredHistory(History(), 0)
        try:
            return StoredHistory(_decode_history(item["history"]["S"]), int(item["version"]["N"]))
        except (KeyError, ValueError, msgspec.DecodeError) as exc:
            raise HistoryCorrupt(f"history of {cluster} in {self._table}: {exc}") from None

    def save(self, cluster: str, history: History, expected_version: int) -> int:
        """Write the history if the stored version is still `expected_version`; the new version."""
        from botocore.exceptions import ClientError

        version = expected_version + 1
        item = {**self.key(cluster),
                "history": {"S": msgspec.json.encode(history).decode()},
                "version": {"N": str(version)},
                "expiration": {"N": str(int(self._clock()) + self._ttl_seconds)}}
        if expected_version == 0:
            condition, values = "attribute_not_exists(id)", None
        else:
            condition, values = "version = :expected", {":expected": {"N": str(expected_version)}}
        request: dict[str, Any] = {"TableName": self._table, "Item": item, "ConditionExpression": condition}
        if values:
            request["ExpressionAttributeValues"] = values
        try:
            self._client.put_item(**request)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise HistoryConflict(
                    f"history of {cluster} changed since version {expected_version}") from None
            raise
        return version


class DrainClaims:
    """The impaired instances a drain was queued for: one item each, `{"id": impaired#<cluster>#<id>,
    "expiration": <epoch seconds>}`, written with a conditional put, so a drain is queued at most once
    per `ttl_seconds` however many cycles still find the instance impaired."""

    def __init__(self, client: Any, table: str, ttl_seconds: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._table = table
        self._ttl_seconds = ttl_seconds
        self._clock = clock

    def claim(self, cluster: str, instance_id: str) -> bool:
        """Record the drain queued now; False when one was recorded less than the TTL ago."""
        from botocore.exceptions import ClientError

        now = int(self._clock())
        try:
            # DynamoDB deletes expired items late (within days): an expired record is free again.
            self._client.put_item(
                TableName=self._table,
                Item={"id": {"S": impaired_key(cluster, instance_id)},
                      "expiration": {"N": str(now + self._ttl_seconds)}},
                ConditionExpression="attribute_not_exists(id) OR expiration < :now",
                ExpressionAttributeValues={":now": {"N": str(now)}})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True
