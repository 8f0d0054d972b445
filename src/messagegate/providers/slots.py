"""A provider's connection limit: at most `limit` connections in use, a bounded queue of
requests waiting for one, each for a bounded time. Beyond that, a clear error, not growth."""

from __future__ import annotations

import asyncio
from collections import deque

from messagegate.config import Provider
from messagegate.providers.connection import TransportError


class PoolBusy(TransportError):
    """No connection could be had: all in use, and the queue full or the wait too long."""


class ConnectionSlots:
    """Counts one provider's connections in use; `acquire` before a request, `release` once
    its answer is done with (the slot then goes to the longest waiter)."""

    __slots__ = ("in_use", "limit", "max_waiting", "timeout", "waiters")

    def __init__(self, limit: int, max_waiting: int, timeout: float) -> None:
        self.limit = limit
        self.max_waiting = max_waiting
        self.timeout = timeout
        self.in_use = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    @classmethod
    def of(cls, provider: Provider) -> ConnectionSlots | None:
        """The provider's limit, or None when it has none (the pool then counts nothing)."""
        if provider.max_connections is None:
            return None
        return cls(provider.max_connections, provider.max_waiting, provider.pool_timeout)

    async def acquire(self) -> None:
        if self.in_use < self.limit and not self.waiters:
            self.in_use += 1
            return
        if len(self.waiters) >= self.max_waiting:
            raise PoolBusy(
                f"all {self.limit} connections are in use and {len(self.waiters)} requests "
                "wait for one (max_connections, max_waiting)"
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            async with asyncio.timeout(self.timeout):
                await waiter
        except BaseException as error:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as the wait ended: pass it on
            else:
                self.waiters.remove(waiter)
            if isinstance(error, TimeoutError):
                raise PoolBusy(
                    f"no connection was free within {self.timeout:g} s (pool_timeout)"
                ) from None
            raise

    def release(self) -> None:
        """A connection is free: hand it to the longest waiter, or count it free."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.in_use -= 1
