"""The PostgreSQL schema's version: what `messagegate db upgrade` applies and what `serve` checks.

Upgrades are explicit (replicas share the database: one release's upgrade must not surprise
another's gateways). The missing migrations are applied in one transaction, under an advisory
lock: two replicas upgrading at once apply each migration once."""

from __future__ import annotations

from typing import TYPE_CHECKING

from messagegate.store.base import StoreError
from messagegate.store.migrations import Migration, migrations

if TYPE_CHECKING:
    import asyncpg

BACKEND = "postgresql"
# pg_advisory_xact_lock's key for upgrades: "mg" "up" as bytes, unlikely to meet another app's.
UPGRADE_LOCK = 0x6D67_7570
# Migrations may rewrite tables: allowed longer than a query.
UPGRADE_TIMEOUT = 600.0


def wanted() -> int:
    return len(migrations(BACKEND))


async def current(conn: asyncpg.Connection) -> int:
    """The schema's version; 0 for a database no messagegate has upgraded."""
    if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))


async def check_schema(conn: asyncpg.Connection) -> None:
    """StoreError unless the schema is exactly the one this release wants."""
    have, want = await current(conn), wanted()
    if have < want:
        raise StoreError(
            f"the database's schema is at version {have}, this messagegate needs {want}:"
            " run `messagegate db upgrade`"
        )
    if have > want:
        raise StoreError(
            f"the database's schema (version {have}) is newer than this messagegate's ({want}):"
            " a newer release upgraded it; run that release"
        )


async def upgrade(conn: asyncpg.Connection) -> list[Migration]:
    """Apply the missing migrations; the ones applied (none when the schema is current)."""
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1)", UPGRADE_LOCK, timeout=UPGRADE_TIMEOUT
        )
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version INTEGER PRIMARY KEY,"
            " name TEXT NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        have, every = await current(conn), migrations(BACKEND)
        if have > len(every):
            raise StoreError(
                f"the database's schema (version {have}) is newer than this messagegate's"
                f" ({len(every)}): nothing to upgrade"
            )
        missing = list(every[have:])
        for migration in missing:
            await conn.execute(migration.script, timeout=UPGRADE_TIMEOUT)
            await conn.execute(
                "INSERT INTO schema_version (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
    return missing
