"""Budget periods: the calendar day, week (from Monday) or month holding a moment, in a time zone.
A budget's state belongs to one period, so it resets exactly at the boundary, with no job."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from messagegate.config.keyspec import Period

# A budget without a period never resets: its one period spans everything.
FOREVER = (float("-inf"), float("inf"))


class Periods:
    """The bounds of the period holding `now`, remembered until `now` leaves it (a datetime
    computation per request would cost more than the rest of the limits together)."""

    def __init__(self, timezone: str = "UTC") -> None:
        self.zone = ZoneInfo(timezone)
        self._last: dict[Period, tuple[float, float]] = {}

    def bounds(self, period: Period | None, now: float) -> tuple[float, float]:
        if period is None:
            return FOREVER
        last = self._last.get(period)
        if last is not None and last[0] <= now < last[1]:
            return last
        found = self._last[period] = period_bounds(period, now, self.zone)
        return found


def period_bounds(period: Period, now: float, zone: ZoneInfo) -> tuple[float, float]:
    """Arithmetic on a ZoneInfo datetime is wall-clock time, so a DST day is 23 or 25 hours."""
    start = datetime.fromtimestamp(now, zone).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        end = start + timedelta(days=1)
    elif period == "week":
        start -= timedelta(days=start.weekday())
        end = start + timedelta(days=7)
    else:
        start = start.replace(day=1)
        carry, month = divmod(start.month, 12)
        end = start.replace(year=start.year + carry, month=month + 1)
    return start.timestamp(), end.timestamp()
