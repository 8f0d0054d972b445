"""``messagegate db upgrade|status``: the database schema's version, and bringing it to the one
this release wants (PostgreSQL only needs it; an SQLite file upgrades itself when opened)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from messagegate.config import Config
from messagegate.store.base import StoreError
from messagegate.store.location import is_postgresql, managing_database, open_store, shown
from messagegate.store.migrations import migrations


def add_parser(commands: Any, config_help: str) -> None:
    cmd = commands.add_parser("db", help="the database schema: upgrade it, show its version")
    verbs = cmd.add_subparsers(dest="verb", required=True)
    for verb, text in (
        ("upgrade", "apply the schema migrations this release has and the database lacks"),
        ("status", "print the database's schema version and the one this release wants"),
    ):
        verbs.add_parser(verb, help=text).add_argument("--config", help=config_help)


def run(args: argparse.Namespace, config: Config) -> int:
    try:
        location = managing_database(config)
        if not is_postgresql(location):
            return asyncio.run(_sqlite(location))
        return asyncio.run(_postgresql(args.verb, location))
    except StoreError as exc:
        print(f"messagegate: {exc}", file=sys.stderr)
        return 2


async def _sqlite(location: str) -> int:
    # Opening the file is what upgrades it.
    store = await open_store(location)
    await store.close()
    latest = len(migrations("sqlite"))
    print(f"{shown(location)}: schema version {latest} (SQLite upgrades itself when opened)")
    return 0


async def _postgresql(verb: str, location: str) -> int:
    import asyncpg

    from messagegate.store import pg_schema
    from messagegate.store.postgresql import CONNECT_TIMEOUT, QUERY_TIMEOUT, translated

    async with translated(location):
        conn = await asyncpg.connect(
            location, timeout=CONNECT_TIMEOUT, command_timeout=QUERY_TIMEOUT
        )
        try:
            before = await pg_schema.current(conn)
            if verb == "status":
                wanted = pg_schema.wanted()
                state = (
                    "current"
                    if before == wanted
                    else "behind: run `messagegate db upgrade`"
                    if before < wanted
                    else "ahead: a newer release upgraded it"
                )
                print(
                    f"{shown(location)}: schema version {before},"
                    f" this messagegate wants {wanted} ({state})"
                )
                return 0
            applied = await pg_schema.upgrade(conn)
        finally:
            await conn.close(timeout=CONNECT_TIMEOUT)
    for migration in applied:
        print(f"applied {migration.name}")
    after = applied[-1].version if applied else before
    print(f"{shown(location)}: schema version {after}" + ("" if applied else " (already current)"))
    return 0
