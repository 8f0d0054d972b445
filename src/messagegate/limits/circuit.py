"""The circuit in front of the shared limits store: while it is down, requests do not each wait
for a timeout; one probe at a time finds out when it is back."""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable


class Phase(enum.Enum):
    CLOSED = "closed"  # the store answers: ask it
    OPEN = "open"  # it failed: do not ask before `retry_at`
    PROBING = "probing"  # one request asks; the others do not wait for it


# Every transition the circuit makes, in one place.
_NEXT = {
    (Phase.CLOSED, "failed"): Phase.OPEN,
    (Phase.OPEN, "retry"): Phase.PROBING,
    (Phase.OPEN, "failed"): Phase.OPEN,
    (Phase.OPEN, "succeeded"): Phase.CLOSED,
    (Phase.PROBING, "failed"): Phase.OPEN,
    (Phase.PROBING, "succeeded"): Phase.CLOSED,
}
CLOSED = Phase.CLOSED


class Circuit:
    def __init__(self, retry_interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.retry_interval = retry_interval
        self.clock = clock
        self.phase = CLOSED
        self.retry_at = 0.0

    def allows(self) -> bool:
        """May a call go to the store now? An open circuit lets one probe through once cooled."""
        if self.phase is CLOSED:
            return True
        if self.phase is Phase.OPEN and self.clock() >= self.retry_at:
            self._move("retry")
            return True
        return False

    def succeeded(self) -> bool:
        """True when this ends an outage."""
        if self.phase is CLOSED:
            return False
        self._move("succeeded")
        return True

    def failed(self) -> bool:
        """True when this begins an outage (what is logged, once)."""
        began = self.phase is CLOSED
        self._move("failed")
        self.retry_at = self.clock() + self.retry_interval
        return began

    def retry_after(self) -> int:
        """Whole seconds until the next probe, at least 1."""
        return max(math.ceil(self.retry_at - self.clock()), 1)

    def _move(self, event: str) -> None:
        self.phase = _NEXT[(self.phase, event)]
