"""The state table's item keys, apart from the store (state.py) so the CDK app can scope IAM to them
without importing the runtime's libraries."""

from __future__ import annotations

HISTORY_KEY_PREFIX = "history#"


def history_key(cluster: str) -> str:
    """The `id` of a cluster's history item (the stack limits the schedule role to it)."""
    return f"{HISTORY_KEY_PREFIX}{cluster}"
