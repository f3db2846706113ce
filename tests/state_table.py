"""The state table as the stack creates it (one string hash key, `id`), on moto."""

from __future__ import annotations

from typing import Any


def create_state_table(dynamodb: Any, name: str = "state") -> None:
    dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                          KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
