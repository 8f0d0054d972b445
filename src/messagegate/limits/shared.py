"""Limits shared by every replica through Redis (`redis:`): each admission one atomic script
(EVALSHA), each end one more, leases renewed in batches while requests run. While Redis cannot be
reached, each kind of limit does what `on_outage:` says: the in-process limiter admits
(fail_open), or the request is refused with a retryable 503 (fail_closed)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from itertools import count

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from messagegate.config import ApiKey
from messagegate.config.redis import OutagePolicy, RedisSettings
from messagegate.errors import LimitsUnavailable
from messagegate.limits.circuit import Circuit
from messagegate.limits.limiter import (
    MAX_RETRY_AFTER,
    KeyState,
    Limiter,
    Reservation,
    adjusted,
    budget_error,
)
from messagegate.limits.scripts import ADMIT, SEED, SETTLE

error_log = logging.getLogger("messagegate.error")

# A budget period's Redis key outlives the period by this long: the settlements of requests
# admitted just before its end still land in it.
PERIOD_GRACE = 3600.0
# What an outage of Redis looks like from here (a timeout is the builtin TimeoutError).
_OUTAGE = (RedisError, OSError, TimeoutError)
_REFUSALS = {1: "concurrency", 3: "rpm", 4: "tpm"}


class SharedLimiter:
    def __init__(
        self,
        settings: RedisSettings,
        outage: OutagePolicy,
        local: Limiter,
        *,
        server_time: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`local` is the degraded fallback, and its clock and periods are this one's; with
        `server_time`, that clock is corrected to Redis's TIME at start (replicas agree)."""
        self.settings = settings
        self.outage = outage
        self.local = local
        self.server_time = server_time
        self.offset = 0.0
        self.circuit = Circuit(settings.retry_interval, monotonic)
        pool = aioredis.BlockingConnectionPool.from_url(
            str(settings.url),
            max_connections=settings.max_connections,
            timeout=settings.timeout,
            socket_connect_timeout=settings.connect_timeout,
            socket_timeout=settings.timeout,
            # A pooled connection that Redis closed (a restart) is retried once, at once.
            retry=Retry(NoBackoff(), 1),
        )
        self.redis = aioredis.Redis(connection_pool=pool)
        # Where it is, for the log: never the URL, which may hold a password.
        where = pool.connection_kwargs
        self.address = where.get("path") or f"{where.get('host')}:{where.get('port')}"
        self.admit_script = self.redis.register_script(ADMIT)
        self.settle_script = self.redis.register_script(SETTLE)
        self.seed_script = self.redis.register_script(SEED)
        # Ticket ids unique across replicas: this process's random part and a counter.
        self._ids = count()
        self._replica = os.urandom(6).hex()
        self._views: dict[str, KeyState] = {}
        self.running: dict[str, SharedTicket] = {}
        # Settlements (and clock reads) under way.
        self._settling: set[asyncio.Task[None]] = set()
        self._renewer: asyncio.Task[None] | None = None

    def now(self) -> float:
        return self.local.clock() + self.offset

    async def start(self) -> None:
        """Loads the scripts and reads the store's clock; an unreachable store opens the circuit
        (the gateway starts anyway)."""
        try:
            async with asyncio.timeout(self.settings.timeout * 4):
                for script in (self.admit_script, self.settle_script, self.seed_script):
                    await self.redis.script_load(script.script)
                await self._read_clock()
        except _OUTAGE as exc:
            self._failed(exc)
        self._renewer = asyncio.create_task(self._renew_forever())

    async def _read_clock(self) -> None:
        if self.server_time:
            before = self.local.clock()
            seconds, micros = await self.redis.time()
            after = self.local.clock()
            self.offset = seconds + micros / 1e6 - (before + after) / 2

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        if self._settling:
            await asyncio.wait(self._settling, timeout=self.settings.timeout * 4)
        await self.redis.aclose()
        await self.redis.connection_pool.disconnect()

    async def admit(self, key: ApiKey, tokens: int, cost: int) -> Reservation:
        """Reserve on Redis; while it is away, what `on_outage` says."""
        if self.circuit.allows():
            try:
                async with asyncio.timeout(self.settings.timeout):
                    return await self._admit(key, tokens, cost)
            except _OUTAGE as exc:
                self._failed(exc)
        return self._degraded(key, tokens, cost)

    async def _admit(self, key: ApiKey, tokens: int, cost: int) -> Reservation:
        limits = key.limits
        now = self.now()
        view = self._view(key)
        start, end = self.local.periods.bounds(limits.period, now)
        period = f"{limits.period or 'all'}:{start:.0f}"
        base = self._base(key.name)
        budget = -1 if limits.budget is None else round(limits.budget * 1_000_000)
        ticket_id = f"{self._replica}:{next(self._ids)}"
        args = (
            *(f"{now:.6f}", ticket_id, self.settings.lease_ttl),
            *(limits.concurrency or 0, limits.rpm or 0, limits.tpm or 0, tokens),
            *(budget, int(limits.budget_mode == "hard"), cost, _ttl_ms(end, now), period),
        )
        keys = (
            base + "rpm",
            base + "tpm",
            base + "leases",
            base + "held",
            base + "budget:" + period,
        )
        result = await self.admit_script(keys, args)
        self._succeeded()
        status, wait, spent, reserved = int(result[0]), float(result[1]), result[2], result[3]
        if view.rpm:
            view.requests_tat = float(result[4])
        if view.tpm:
            view.tokens_tat = float(result[5])
        view.spent, view.reserved = int(spent), int(reserved)
        if status == 2:
            raise budget_error(view, budget, end)
        if status:
            raise self._limited(view, now, wait, _REFUSALS[status])
        ticket = SharedTicket(self, key, view, ticket_id, tokens, period, end)
        if limits.concurrency is not None or limits.budget is not None:
            self.running[ticket_id] = ticket
        return ticket

    def _limited(self, view: KeyState, now: float, wait: float, denial: str) -> Exception:
        limits = view.limits
        what = {
            "concurrency": f"{limits.concurrency} requests at once",
            "rpm": f"{limits.rpm} requests per minute",
            "tpm": f"{limits.tpm} tokens per minute",
        }[denial]
        return self.local.limited(view, now, wait, what, denial)

    def _degraded(self, key: ApiKey, tokens: int, cost: int) -> Reservation:
        limits = key.limits
        outage = self.outage
        refused = [
            what
            for what, mode, used in (
                ("rate limits", outage.rate_limits, limits.rpm or limits.tpm),
                ("concurrency", outage.concurrency, limits.concurrency),
                ("budget", outage.budgets, limits.budget is not None),
            )
            if used and mode == "fail_closed"
        ]
        if refused:
            retry_after = min(self.circuit.retry_after(), MAX_RETRY_AFTER)
            raise LimitsUnavailable(
                f"the shared limits store (Redis) is unreachable, so the {' and '.join(refused)} "
                f"of key {key.name!r} cannot be checked; retry after {retry_after} s",
                retry_after,
            )
        return self.local.admit(key, tokens, cost)

    def settle(self, ticket: SharedTicket, tokens: int, cost: int) -> None:
        """Sends the settlement without holding up the answer; one that cannot be sent is left
        to expire with its lease (its spend still reaches the ledger)."""
        self.running.pop(ticket.id, None)
        limits = ticket.key.limits
        delta = tokens - ticket.tokens
        now = self.now()
        view = ticket.view
        if view.tpm:
            view.tokens_tat = adjusted(view.tokens_tat, delta * view.tokens_interval, now)
        if cost and limits.budget is not None:
            self.local.spend(ticket.key, cost)
        leased = limits.concurrency is not None or limits.budget is not None
        if not (delta and limits.tpm) and not leased:
            return
        if not self.circuit.allows():
            return
        self._track(asyncio.get_running_loop().create_task(self._settle(ticket, delta, cost, now)))

    async def _settle(self, ticket: SharedTicket, delta: int, cost: int, now: float) -> None:
        limits = ticket.key.limits
        base = self._base(ticket.key.name)
        keys = (base + "tpm", base + "leases", base + "held", base + "budget:" + ticket.period)
        budgeted = int(limits.budget is not None)
        args = (f"{now:.6f}", ticket.id, limits.tpm or 0, delta, cost, budgeted)
        try:
            async with asyncio.timeout(self.settings.timeout):
                await self.settle_script(keys, (*args, _ttl_ms(ticket.period_end, now)))
        except _OUTAGE as exc:
            self._failed(exc)
        else:
            self._succeeded()

    async def seed(self, key: ApiKey, spent: int) -> None:
        """The key's current period starts with `spent` unless another replica started it."""
        if not self.circuit.allows():
            return
        now = self.now()
        start, end = self.local.periods.bounds(key.limits.period, now)
        budget_key = f"{self._base(key.name)}budget:{key.limits.period or 'all'}:{start:.0f}"
        try:
            async with asyncio.timeout(self.settings.timeout):
                await self.seed_script((budget_key,), (spent, _ttl_ms(end, now)))
        except _OUTAGE as exc:
            self._failed(exc)
        else:
            self._succeeded()

    async def _renew_forever(self) -> None:
        """Every third of the lease time, the leases of running requests move on by one."""
        while True:
            await asyncio.sleep(self.settings.lease_ttl / 3)
            if self.running and self.circuit.allows():
                await self._renew()

    async def _renew(self) -> None:
        ttl = self.settings.lease_ttl
        expiry = self.now() + ttl
        by_key: dict[str, list[str]] = {}
        for ticket in self.running.values():
            by_key.setdefault(ticket.key.name, []).append(ticket.id)
        try:
            async with asyncio.timeout(self.settings.timeout * 4):
                pipe = self.redis.pipeline(transaction=False)
                for name, ids in by_key.items():
                    base = self._base(name)
                    pipe.zadd(base + "leases", dict.fromkeys(ids, expiry), xx=True)
                    pipe.pexpire(base + "leases", math.ceil(ttl * 2000))
                    pipe.pexpire(base + "held", math.ceil(ttl * 2000))
                await pipe.execute()
        except _OUTAGE as exc:
            self._failed(exc)
        else:
            self._succeeded()

    def _base(self, name: str) -> str:
        return f"{self.settings.prefix}:{{{name}}}:"

    def _view(self, key: ApiKey) -> KeyState:
        """What this replica last saw of the key's shared buckets and budget (its headers)."""
        view = self._views.get(key.name)
        if view is None or view.limits != key.limits:
            view = self._views[key.name] = KeyState(key.name, key.limits)
        return view

    def _failed(self, exc: BaseException) -> None:
        if self.circuit.failed():
            outage = self.outage
            error_log.warning(
                "shared limits store (Redis at %s) unreachable (%s: %s): until it is back, rate "
                "limits %s, concurrency %s, budgets %s",
                self.address,
                type(exc).__name__,
                exc,
                outage.rate_limits,
                outage.concurrency,
                outage.budgets,
            )

    def _succeeded(self) -> None:
        if self.circuit.succeeded():
            error_log.warning("shared limits store (Redis) reachable again: limits are shared")
            if self.server_time:  # it may not have been read at start
                self._track(asyncio.get_running_loop().create_task(self._reread_clock()))

    async def _reread_clock(self) -> None:
        try:
            async with asyncio.timeout(self.settings.timeout):
                await self._read_clock()
        except _OUTAGE as exc:
            self._failed(exc)

    def _track(self, task: asyncio.Task[None]) -> None:
        """Background calls are awaited (boundedly) at close."""
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)


class SharedTicket:
    """A request admitted on Redis; `settle` (or `release`) gives its reservations back, once."""

    __slots__ = ("id", "key", "limiter", "period", "period_end", "settled", "tokens", "view")

    def __init__(
        self,
        limiter: SharedLimiter,
        key: ApiKey,
        view: KeyState,
        ticket_id: str,
        tokens: int,
        period: str,
        period_end: float,
    ) -> None:
        self.limiter = limiter
        self.key = key
        self.view = view
        self.id = ticket_id
        self.tokens = tokens
        self.period = period
        self.period_end = period_end
        self.settled = False

    def settle(self, tokens: int, cost: int) -> None:
        if self.settled:
            return
        self.settled = True
        self.limiter.settle(self, tokens, cost)

    def release(self) -> None:
        self.settle(0, 0)

    def head_lines(self) -> bytes:
        return self.limiter.local.head_lines(self.view, self.limiter.now())


def _ttl_ms(end: float, now: float) -> int:
    """A budget period key's time to live (0: a budget without a period never expires)."""
    if end == math.inf:
        return 0
    return max(math.ceil((end + PERIOD_GRACE - now) * 1000), 1)
