"""The state table's item keys, apart from the store (state.py) so the CDK app can scope IAM to them
without importing the runtime's libraries."""

from __future__ import annotations

HISTORY_KEY_PREFIX = "history#"
IMPAIRED_KEY_PREFIX = "impaired#"


def history_key(cluster: str) -> str:
    """The `id` of a cluster's history item (the stack limits the schedule role to it)."""
    return f"{HISTORY_KEY_PREFIX}{cluster}"


def impaired_key(cluster: str, instance_id: str) -> str:
    """The `id` of the record that a drain was queued for an impaired instance of the cluster (the
    stack limits the schedule role to `impaired_key(cluster, "*")`)."""
    return f"{IMPAIRED_KEY_PREFIX}{cluster}#{instance_id}"
