"""A token bucket as GCRA: one number, the theoretical arrival time, instead of a refill loop."""

from __future__ import annotations

import math

# Seconds a full bucket's worth of units takes to refill. A module constant: a class attribute
# read through an instance is a slower lookup than a global, per call.
WINDOW = 60.0


class Bucket:
    """`per_minute` units, refilled continuously; a full bucket holds one minute's worth.

    Taking `amount` moves the theoretical arrival time (`tat`) by amount * interval; it is
    admitted when that stays within one minute of now. An amount larger than the whole bucket
    is admitted when the bucket is full, and leaves it in debt, as a refill would.
    """

    __slots__ = ("capacity", "interval", "tat")

    def __init__(self, per_minute: int) -> None:
        self.capacity = per_minute
        self.interval = WINDOW / per_minute
        self.tat = 0.0

    def take(self, amount: int, now: float) -> float:
        """Reserve `amount`; 0.0 when admitted, else the seconds until it would be."""
        # Conditional expressions, not min/max: those builtins parse keyword arguments per call.
        tat = self.tat
        base = tat if tat > now else now
        capacity = self.capacity
        over = base + (amount if amount < capacity else capacity) * self.interval - now - WINDOW
        if over > 1e-9:
            return over
        self.tat = base + amount * self.interval
        return 0.0

    def adjust(self, amount: int, now: float) -> None:
        """Correct a reservation: give back (negative) or charge more (positive, without check)."""
        tat = self.tat
        tat = (tat if tat > now else now) + amount * self.interval
        self.tat = tat if tat > now else now

    def report(self, now: float) -> tuple[int, float]:
        """What is left now, and when the bucket is full again (one call for both headers)."""
        tat = self.tat
        if tat <= now:
            return self.capacity, now
        left = self.capacity - math.ceil((tat - now) / self.interval - 1e-6)  # float dust
        return (left if left > 0 else 0), tat
