"""What one client connection may make the gateway wait for or hold: the phase a connection is
in, with its deadline, and the sweep that closes connections past theirs.

A timer per request would cost a timer per request; one sweep per loop, a few times a second,
walks the open connections instead and costs nothing per request.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import resource
import weakref
from collections.abc import Callable, Collection
from typing import Protocol

from messagegate.config import Limits
from messagegate.errors import GatewayOverloaded

error_log = logging.getLogger("messagegate.error")

# A log line about refused connections at most this often: a flood must not flood the log.
REFUSAL_LOG_INTERVAL = 10.0


class Phase(enum.Enum):
    """Where a client connection is; only HEAD and BODY have a deadline."""

    HEAD = "head"  # waiting for (or reading) a request head: `header_timeout` from its start
    BODY = "body"  # reading a request body: `body_timeout` of silence at most
    ANSWERING = "answering"  # the app has the request; uvicorn's keep-alive timeout follows


# A phase's clock starts at the sweep's first visit after it began: a deadline is kept to within
# one sweep interval (a quarter of the shortest timeout, at most a second).


class Guarded(Protocol):
    """A connection the sweep visits (``tick``) to start or enforce its phase's deadline."""

    def tick(self, now: float) -> None: ...


class Sweep:
    """Closes the connections of one loop whose deadline passed; runs only while some exist."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self.loop = loop
        self.interval = interval
        self.watched: weakref.WeakSet[Guarded] = weakref.WeakSet()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, connection: Guarded) -> None:
        self.watched.add(connection)
        if self._timer is None:
            self._timer = self.loop.call_later(self.interval, self._run)

    def _run(self) -> None:
        now = self.loop.time()
        for connection in list(self.watched):
            connection.tick(now)
        self._timer = self.loop.call_later(self.interval, self._run) if self.watched else None


_sweeps: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Sweep] = weakref.WeakKeyDictionary()


def sweep_for(loop: asyncio.AbstractEventLoop, limits: Limits) -> Sweep:
    sweep = _sweeps.get(loop)
    if sweep is None:
        # Often enough that a deadline is kept to within a quarter of the shortest timeout.
        interval = min(1.0, limits.header_timeout / 4, limits.body_timeout / 4)
        sweep = _sweeps[loop] = Sweep(loop, interval)
    return sweep


class ConnectionCap:
    """Refuses connections beyond `limit` open ones, saying so in the log (boundedly often)."""

    def __init__(self, limit: int, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.clock = clock
        self.refused = 0
        self._logged_at: float | None = None

    def admits(self, open_connections: Collection[object]) -> bool:
        if len(open_connections) <= self.limit:
            return True
        self.refused += 1
        now = self.clock()
        if self._logged_at is None or now - self._logged_at >= REFUSAL_LOG_INTERVAL:
            self._logged_at = now
            error_log.warning(
                "%d client connections open, the limit (limits.max_connections): "
                "closing new ones (%d refused so far)",
                self.limit,
                self.refused,
            )
        return False


# The key under which the app leaves its `ClientPolicy` in the lifespan state, which uvicorn
# hands every connection's protocol (``app_state``).
CLIENT_POLICY = "messagegate.client_policy"


class ClientPolicy:
    """The limits one server's client connections are held to, and its connection cap."""

    __slots__ = ("cap", "limits")

    def __init__(self, limits: Limits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self.cap = ConnectionCap(limits.max_connections or default_max_connections(), clock)


def default_max_connections() -> int:
    """Half the open-file limit: each client connection may need an upstream socket too."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 10_000
    return max(16, (soft - 64) // 2)


class BodyBudget:
    """Bytes of request bodies being read or held by all of one server's requests together:
    ten 31 MiB bodies at once must not take the process's memory. A request takes its share
    (``Exchange.read_body``) and the app gives it back when the request ends."""

    __slots__ = ("held", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> None:
        if self.held + size > self.limit:
            raise self.exhausted()
        self.held += size

    def exhausted(self) -> GatewayOverloaded:
        return GatewayOverloaded(
            "the gateway holds too many request bodies at once "
            "(limits.max_inflight_body_bytes); retry shortly"
        )
