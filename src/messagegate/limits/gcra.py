"""A token bucket as GCRA: one number, the theoretical arrival time, instead of a refill loop."""

from __future__ import annotations

import math


class Bucket:
    """`per_minute` units, refilled continuously; a full bucket holds one minute's worth.

    Taking `amount` moves the theoretical arrival time (`tat`) by amount * interval; it is
    admitted when that stays within one minute of now. An amount larger than the whole bucket
    is admitted when the bucket is full, and leaves it in debt, as a refill would.
    """

    __slots__ = ("capacity", "interval", "limit_text", "tat")

    WINDOW = 60.0

    def __init__(self, per_minute: int) -> None:
        self.capacity = per_minute
        self.limit_text = str(per_minute)
        self.interval = self.WINDOW / per_minute
        self.tat = 0.0

    def take(self, amount: int, now: float) -> float:
        """Reserve `amount`; 0.0 when admitted, else the seconds until it would be."""
        base = self.tat if self.tat > now else now
        over = base + min(amount, self.capacity) * self.interval - now - self.WINDOW
        if over > 1e-9:
            return over
        self.tat = base + amount * self.interval
        return 0.0

    def adjust(self, amount: int, now: float) -> None:
        """Correct a reservation: give back (negative) or charge more (positive, without check)."""
        self.tat = max(self.tat, now) + amount * self.interval
        if self.tat < now:
            self.tat = now

    def remaining(self, now: float) -> int:
        used = max(self.tat - now, 0.0) / self.interval
        return max(self.capacity - math.ceil(used - 1e-6), 0)  # float dust is not a token

    def full_at(self, now: float) -> float:
        """When the bucket is full again."""
        return max(self.tat, now)
