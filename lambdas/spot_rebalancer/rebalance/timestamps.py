"""API timestamps (RFC 3339, whole seconds, "Z")."""

from __future__ import annotations

from datetime import datetime


class NaiveClockError(ValueError):
    """A time without a time zone, which cannot be compared with the API's timestamps."""


def require_time_zone(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise NaiveClockError(f"{moment.isoformat()} has no time zone")
    return moment


def parse_timestamp(text: str | None) -> datetime | None:
    """The instant, or None when missing, unreadable or without a time zone."""
    try:
        moment = datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
    return moment if moment is not None and moment.tzinfo is not None else None
