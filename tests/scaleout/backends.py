"""The backends replicas share, from the test's side: a PostgreSQL database of its own (created and
dropped with psql), Redis keys of its own (deleted by name with redis-cli), a SQLite file; the
ledger's rows read back from whichever holds them; keys created with the real CLI."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

import orjson

from fakes.served import COMMAND, base_env

POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432"
REDIS_SERVER = "redis://127.0.0.1:6379/0"
COMMAND_TIMEOUT = 60
LEDGER_QUERY = "SELECT request_id, input_tokens, output_tokens, cost_micro_usd FROM ledger"


@dataclass(frozen=True, slots=True)
class LedgerRow:
    request_id: str
    input_tokens: int
    output_tokens: int
    cost_micro_usd: int


def is_postgresql(database: str) -> bool:
    return database.startswith(("postgresql://", "postgres://"))


def psql(url: str, sql: str) -> str:
    """One statement through psql (unaligned, tab-separated, no headers); its output."""
    done = subprocess.run(
        ["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"psql {sql!r}: {done.stderr}"
    return done.stdout


def forget_redis_keys(url: str, name: str) -> None:
    """Deletes the Redis keys whose names hold `name` (a test's unique key name), and no other."""
    listed = subprocess.run(
        ["redis-cli", "-u", url, "--scan", "--pattern", f"*{name}*"],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=True,
    )
    keys = listed.stdout.split()
    if keys:
        subprocess.run(
            ["redis-cli", "-u", url, "DEL", *keys],
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
            check=True,
        )


async def ledger_rows(database: str) -> list[LedgerRow]:
    """Every row of the ledger table; none while the table does not exist yet."""
    return await asyncio.to_thread(_ledger_rows, database)


def _ledger_rows(database: str) -> list[LedgerRow]:
    if is_postgresql(database):
        lines = psql(database, LEDGER_QUERY).splitlines()
        return [_row(*line.split("\t")) for line in lines]
    try:
        with sqlite3.connect(database) as conn:
            return [_row(*values) for values in conn.execute(LEDGER_QUERY).fetchall()]
    except sqlite3.OperationalError:
        return []  # not created yet: no replica has opened the store


def _row(request_id: str, input_tokens: str, output_tokens: str, cost: str) -> LedgerRow:
    return LedgerRow(str(request_id), int(input_tokens), int(output_tokens), int(cost))


def messagegate(*args: str) -> str:
    """The real `messagegate` command; its standard output (it must exit 0)."""
    done = subprocess.run(
        [COMMAND, *args],
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"messagegate {' '.join(args)}: {done.stderr}"
    return done.stdout


def prepare_database(config: Path, database: str) -> None:
    """What an operator does before the first replica starts: a PostgreSQL schema is upgraded
    by hand (`serve` refuses one behind the code); SQLite upgrades itself."""
    if is_postgresql(database):
        messagegate("db", "upgrade", "--config", str(config))


def create_key(config: Path, name: str, *settings: str) -> str:
    """`messagegate keys create --name NAME SETTINGS...`: the new key's secret."""
    shown = orjson.loads(
        messagegate("keys", "create", "--config", str(config), "--name", name, "--json", *settings)
    )
    secret: str = shown["key"]
    return secret
