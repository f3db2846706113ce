"""Maintenance windows: the rebalancer moves pods only inside one (drains ignore them)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim

from ..config import Window


def open_window(windows: Iterable[Window], now: datetime) -> Window | None:
    """The window `now` falls in: the latest time its cron named (in its time zone) is no more than
    its minutes ago. None when `now` is in none of them."""
    for window in windows:
        local = now.astimezone(ZoneInfo(window.time_zone))
        # The cron's latest time at or before now: CronSim walks back from just after now.
        started = next(CronSim(window.cron, local + timedelta(seconds=1), reverse=True))
        if local - started < timedelta(minutes=window.minutes):
            return window
    return None
