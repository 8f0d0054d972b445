"""The shared key store: PostgreSQL through a bounded asyncpg pool, every query under a timeout.
Key changes bump the generation and NOTIFY in the same transaction, so other gateways refresh at
once (the generation poll stays as the fallback)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson

from messagegate.config.keyspec import KeySettings, parse_key_settings, settings_json
from messagegate.ledger.row import COLUMNS, Batch
from messagegate.store.base import (
    USAGE_GROUPS,
    USAGE_SUMS,
    KeyExists,
    StoredKey,
    StoredSecret,
    StoreError,
    StoreUnavailable,
    UnknownKey,
)
from messagegate.store.dsn import redacted
from messagegate.store.pg_schema import check_schema

POOL_SIZE = 4
CONNECT_TIMEOUT = 5.0
# Waiting for a free pooled connection, and any one query.
ACQUIRE_TIMEOUT = 5.0
QUERY_TIMEOUT = 5.0
CLOSE_TIMEOUT = 5.0
# Idle pooled connections are closed after this (a replica at rest holds one).
IDLE_LIFETIME = 60.0
CHANNEL = "messagegate_keys"

_KEY_COLUMNS = "id, name, settings, created_at, revoked_at"
_BUMP = (
    "WITH bumped AS (UPDATE generation SET value = value + 1 RETURNING value)"
    f" SELECT pg_notify('{CHANNEL}', value::text) FROM bumped"
)
# Each ledger column's type, for a batch sent as one array per column.
_LEDGER_TYPES = {
    "request_id": "text",
    "time": "float8",
    "key": "text",
    "model": "text",
    "provider": "text",
    "input_tokens": "int8",
    "output_tokens": "int8",
    "cache_read_tokens": "int8",
    "cache_write_5m_tokens": "int8",
    "cache_write_1h_tokens": "int8",
    "cost_micro_usd": "int8",
    "model_asked": "text",
    "route": "text",
    "stream": "bool",
    "status": "int4",
    "latency_ms": "float8",
    "ttft_ms": "float8",
    "price": "text",
    "outcome": "text",
}
_LEDGER_ARRAYS = ", ".join(f"${i}::{_LEDGER_TYPES[c]}[]" for i, c in enumerate(COLUMNS, 1))
# A batch of ledger rows in one statement: the rows not seen before (by request id) are inserted,
# and only those are added to their days' rollups, in the same transaction.
_SHIP = f"""
WITH new AS (
    INSERT INTO ledger ({", ".join(COLUMNS)})
    SELECT * FROM unnest({_LEDGER_ARRAYS})
    ON CONFLICT (request_id) DO NOTHING
    RETURNING time, key, model, provider, input_tokens, output_tokens, cache_read_tokens,
        cache_write_5m_tokens, cache_write_1h_tokens, cost_micro_usd
), rolled AS (
    INSERT INTO usage_daily
    SELECT to_char(to_timestamp(time) AT TIME ZONE 'UTC', 'YYYY-MM-DD'), key, model, provider,
        count(*), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens),
        sum(cache_write_5m_tokens), sum(cache_write_1h_tokens), sum(cost_micro_usd)
    FROM new GROUP BY 1, 2, 3, 4
    ON CONFLICT (day, key, model, provider) DO UPDATE SET
        requests = usage_daily.requests + excluded.requests,
        input_tokens = usage_daily.input_tokens + excluded.input_tokens,
        output_tokens = usage_daily.output_tokens + excluded.output_tokens,
        cache_read_tokens = usage_daily.cache_read_tokens + excluded.cache_read_tokens,
        cache_write_5m_tokens = usage_daily.cache_write_5m_tokens + excluded.cache_write_5m_tokens,
        cache_write_1h_tokens = usage_daily.cache_write_1h_tokens + excluded.cache_write_1h_tokens,
        cost_micro_usd = usage_daily.cost_micro_usd + excluded.cost_micro_usd
)
SELECT count(*) FROM new
"""
# What losing the database looks like from asyncpg: the caller may retry later.
UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)


class PostgresStore:
    def __init__(self, dsn: str, pool: asyncpg.Pool) -> None:
        self.dsn = dsn
        self.pool = pool
        self._listener: asyncpg.Connection | None = None
        self._changed = asyncio.Event()

    @classmethod
    async def open(cls, dsn: str) -> PostgresStore:
        """Connect and check that the schema is the one this release wants (else StoreError)."""
        async with translated(dsn):
            pool = await asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=POOL_SIZE,
                timeout=CONNECT_TIMEOUT,
                command_timeout=QUERY_TIMEOUT,
                max_inactive_connection_lifetime=IDLE_LIFETIME,
                server_settings={"application_name": "messagegate"},
            )
        store = cls(dsn, pool)
        try:
            async with store._connection() as conn:
                await check_schema(conn)
        except BaseException:
            await store.close()
            raise
        return store

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        async with translated(self.dsn), self.pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
            yield conn

    async def generation(self) -> int:
        async with self._connection() as conn:
            return int(await conn.fetchval("SELECT value FROM generation"))

    async def wait_for_change(self, at_most: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + at_most
        if self._listener is None or self._listener.is_closed():
            # Without a listener (the database is away) the generation poll still sees changes.
            with contextlib.suppress(*UNAVAILABLE, asyncpg.PostgresError):
                async with asyncio.timeout(at_most):
                    await self._listen()
        remaining = deadline - loop.time()
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
        # Cleared before the caller's refresh: a change notified during it is not missed.
        self._changed.clear()

    async def _listen(self) -> None:
        listener = await asyncpg.connect(
            self.dsn,
            timeout=CONNECT_TIMEOUT,
            command_timeout=QUERY_TIMEOUT,
            server_settings={"application_name": "messagegate-listener"},
        )
        try:
            await listener.add_listener(CHANNEL, self._notified)
        except BaseException:
            await listener.close(timeout=CLOSE_TIMEOUT)
            raise
        listener.add_termination_listener(self._lost)
        self._listener = listener
        # Changes made while nobody listened are caught by the refresh this wakes.
        self._changed.set()

    def _notified(self, *_: object) -> None:
        self._changed.set()

    def _lost(self, *_: object) -> None:
        self._listener = None

    async def keys(self) -> tuple[int, list[StoredKey]]:
        async with self._connection() as conn, conn.transaction(isolation="repeatable_read"):
            generation = int(await conn.fetchval("SELECT value FROM generation"))
            keys = await conn.fetch(f"SELECT {_KEY_COLUMNS} FROM keys")
            secrets = await conn.fetch(
                "SELECT key_id, digest, prefix, created_at, valid_until FROM key_secrets"
                " ORDER BY created_at"
            )
        by_key: dict[int, list[StoredSecret]] = {}
        for row in secrets:
            by_key.setdefault(row[0], []).append(StoredSecret(*row[1:]))
        return generation, [_stored(row, by_key.get(row[0], [])) for row in keys]

    async def key(self, name: str) -> StoredKey | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(f"SELECT {_KEY_COLUMNS} FROM keys WHERE name = $1", name)
            if row is None:
                return None
            secrets = await conn.fetch(
                "SELECT digest, prefix, created_at, valid_until FROM key_secrets"
                " WHERE key_id = $1 ORDER BY created_at",
                row[0],
            )
        return _stored(row, [StoredSecret(*s) for s in secrets])

    async def insert(self, name: str, settings: KeySettings, secret: StoredSecret) -> None:
        async with self._connection() as conn, conn.transaction():
            try:
                key_id = await conn.fetchval(
                    "INSERT INTO keys (name, settings, created_at) VALUES ($1, $2, $3)"
                    " RETURNING id",
                    name,
                    _json(settings),
                    secret.created_at,
                )
            except asyncpg.UniqueViolationError:
                raise KeyExists(
                    f"a key named {name!r} exists (revoked keys keep their name)"
                ) from None
            await _add_secret(conn, key_id, secret)
            await conn.execute(_BUMP)

    async def update(self, name: str, settings: KeySettings) -> None:
        await self._change(
            "UPDATE keys SET settings = $1 WHERE name = $2", name, _json(settings), name
        )

    async def revoke(self, name: str, now: float) -> None:
        await self._change(
            "UPDATE keys SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
            name,
            now,
            name,
        )

    async def _change(self, sql: str, name: str, *params: Any) -> None:
        async with self._connection() as conn, conn.transaction():
            if await conn.execute(sql, *params) != "UPDATE 1":
                raise UnknownKey(f"no active key named {name!r}")
            await conn.execute(_BUMP)

    async def rotate(self, name: str, secret: StoredSecret, old_valid_until: float) -> None:
        async with self._connection() as conn, conn.transaction():
            key_id = await conn.fetchval(
                "SELECT id FROM keys WHERE name = $1 AND revoked_at IS NULL FOR UPDATE", name
            )
            if key_id is None:
                raise UnknownKey(f"no active key named {name!r}")
            await conn.execute(
                "UPDATE key_secrets SET valid_until = least(coalesce(valid_until, $1), $1)"
                " WHERE key_id = $2",
                old_valid_until,
                key_id,
            )
            await _add_secret(conn, key_id, secret)
            await conn.execute(_BUMP)

    async def ship(self, batch: Batch) -> int:
        if not batch.lines:
            return 0
        columns = list(map(list, batch.columns()))
        async with self._connection() as conn:
            return int(await conn.fetchval(_SHIP, *columns))

    async def usage(self, by: str, since_day: str) -> list[dict[str, Any]]:
        if by not in USAGE_GROUPS:
            raise StoreError(f"usage by {by!r}: expected one of {', '.join(USAGE_GROUPS)}")
        sums = ", ".join(f"sum({c})::int8" for c in USAGE_SUMS)
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {by}, {sums} FROM usage_daily WHERE day >= $1 GROUP BY {by} ORDER BY {by}",
                since_day,
            )
        return [dict(zip((by, *USAGE_SUMS), row, strict=True)) for row in rows]

    async def spent(self, key: str, since_day: str) -> int:
        async with self._connection() as conn:
            total = await conn.fetchval(
                "SELECT coalesce(sum(cost_micro_usd), 0)::int8 FROM usage_daily"
                " WHERE key = $1 AND day >= $2",
                key,
                since_day,
            )
        return int(total)

    async def spend_by_key(self) -> dict[str, int]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT key, sum(cost_micro_usd)::int8 FROM usage_daily GROUP BY key"
            )
        return {key: int(total) for key, total in rows}

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None and not listener.is_closed():
            with contextlib.suppress(*UNAVAILABLE, asyncpg.PostgresError):
                await listener.close(timeout=CLOSE_TIMEOUT)
        try:
            await asyncio.wait_for(self.pool.close(), CLOSE_TIMEOUT)
        except (TimeoutError, *UNAVAILABLE):
            self.pool.terminate()


@contextlib.asynccontextmanager
async def translated(dsn: str) -> AsyncIterator[None]:
    """asyncpg's failures as StoreError (StoreUnavailable when the database is out of reach),
    naming the database without its password."""
    try:
        yield
    except UNAVAILABLE as exc:
        reason = str(exc) or type(exc).__name__
        raise StoreUnavailable(f"the database {redacted(dsn)} is unavailable: {reason}") from None
    except asyncpg.PostgresError as exc:
        raise StoreError(f"the database {redacted(dsn)} failed: {exc}") from None


def _stored(row: asyncpg.Record, secrets: list[StoredSecret]) -> StoredKey:
    _, name, settings, created_at, revoked_at = row
    return StoredKey(
        name=name,
        settings=parse_key_settings(orjson.loads(settings)),
        created_at=created_at,
        revoked_at=revoked_at,
        secrets=tuple(secrets),
    )


async def _add_secret(conn: asyncpg.Connection, key_id: int, secret: StoredSecret) -> None:
    await conn.execute(
        "INSERT INTO key_secrets (digest, key_id, prefix, created_at, valid_until)"
        " VALUES ($1, $2, $3, $4, $5)",
        secret.digest,
        key_id,
        secret.prefix,
        secret.created_at,
        secret.valid_until,
    )


def _json(settings: KeySettings) -> str:
    return orjson.dumps(settings_json(settings)).decode()
