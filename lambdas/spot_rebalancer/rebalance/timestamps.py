"""API timestamps (RFC 3339, whole seconds, "Z")."""

from __future__ import annotations

from datetime import datetime


def parse_timestamp(text: str | None) -> datetime | None:
    """The instant, or None when missing, unreadable or without a time zone."""
    try:
        moment = datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
    return moment if moment is not None and moment.tzinfo is not None else None
