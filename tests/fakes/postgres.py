"""Test databases on the machine's PostgreSQL (127.0.0.1:5432, trust auth): each uniquely named,
upgraded to this release's schema, and dropped afterwards (other test runs share the server)."""

from __future__ import annotations

import secrets

import asyncpg

from messagegate.store import pg_schema

SERVER = "postgresql://postgres@127.0.0.1:5432"
MAINTENANCE = f"{SERVER}/test"
TIMEOUT = 10.0


async def create_database(*, upgraded: bool = True) -> str:
    """A new empty database's URL (with this release's schema when `upgraded`)."""
    name = f"mg_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(MAINTENANCE, timeout=TIMEOUT, command_timeout=TIMEOUT)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    url = f"{SERVER}/{name}"
    if upgraded:
        target = await asyncpg.connect(url, timeout=TIMEOUT, command_timeout=TIMEOUT)
        try:
            await pg_schema.upgrade(target)
        finally:
            await target.close()
    return url


async def drop_database(url: str) -> None:
    conn = await asyncpg.connect(MAINTENANCE, timeout=TIMEOUT, command_timeout=TIMEOUT)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")
    finally:
        await conn.close()


async def empty(url: str) -> None:
    """No keys, no ledger: what a test on a shared module database starts from."""
    conn = await asyncpg.connect(url, timeout=TIMEOUT, command_timeout=TIMEOUT)
    try:
        await conn.execute("TRUNCATE key_secrets, keys, ledger, usage_daily")
    finally:
        await conn.close()


async def query(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url, timeout=TIMEOUT, command_timeout=TIMEOUT)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()
