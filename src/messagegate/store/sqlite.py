"""The embedded key store: SQLite in WAL mode, one connection on one thread, off the event loop."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar

import orjson

from messagegate.config.keyspec import KeySettings, parse_key_settings, settings_json
from messagegate.ledger.rollup import rollups
from messagegate.ledger.row import Batch
from messagegate.store.base import (
    USAGE_GROUPS,
    USAGE_SUMS,
    KeyExists,
    StoredKey,
    StoredSecret,
    StoreError,
    UnknownKey,
)
from messagegate.store.migrations import migrations

T = TypeVar("T")

# A row is its request id and its journal line (the `ledger` view reads the columns from it).
_INSERT_LEDGER = "INSERT OR IGNORE INTO ledger_lines VALUES (?, ?)"
# Rows a statement inserts at once, largest first (what is left after the last, one a row): the
# sqlite3 module binds and steps each statement through Python, ~4,000 of a row's ~11,700
# instructions when a statement is one row (20 a statement: ~7,400, 4: ~8,500, 100: as 20).
CHUNK_ROWS = (20, 4)
_INSERT_CHUNK = {
    rows: _INSERT_LEDGER.replace("(?, ?)", ", ".join(["(?, ?)"] * rows)) for rows in CHUNK_ROWS
}
_REQUEST_ID = itemgetter(0)
_ROLL_UP = f"""INSERT INTO usage_daily VALUES (?, ?, ?, ?, {", ".join("?" * len(USAGE_SUMS))})
ON CONFLICT (day, key, model, provider) DO UPDATE SET
{", ".join(f"{c} = {c} + excluded.{c}" for c in USAGE_SUMS)}"""
# A writer waits this long for another process's write lock before failing.
BUSY_TIMEOUT_MS = 5000


class SQLiteStore:
    """Every call runs on the store's one thread: the event loop never waits on disk."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="messagegate-sqlite")
        self._db: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: str) -> SQLiteStore:
        """Open (creating the file and its directory on first use) and migrate."""
        store = cls(path)
        try:
            await store._run(store._open)
        except BaseException:
            await store.close()
            raise
        return store

    def _open(self) -> None:
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the database {self.path}: {exc}") from None
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        self._db = db
        _migrate(db)

    async def _run(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, work)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("the database is closed")
        return self._db

    async def generation(self) -> int:
        return await self._run(self._generation)

    def _generation(self) -> int:
        row = self._conn().execute("SELECT value FROM generation").fetchone()
        return int(row[0])

    async def wait_for_change(self, at_most: float) -> None:
        # Other processes' changes are seen by polling the generation only.
        await asyncio.sleep(at_most)

    async def keys(self) -> tuple[int, list[StoredKey]]:
        return await self._run(self._keys)

    def _keys(self) -> tuple[int, list[StoredKey]]:
        db = self._conn()
        with _transaction(db):
            generation = self._generation()
            rows = db.execute("SELECT id, name, settings, created_at, revoked_at FROM keys")
            keys = [self._stored(row) for row in rows.fetchall()]
        return generation, keys

    async def key(self, name: str) -> StoredKey | None:
        return await self._run(lambda: self._key(name))

    def _key(self, name: str) -> StoredKey | None:
        row = (
            self._conn()
            .execute(
                "SELECT id, name, settings, created_at, revoked_at FROM keys WHERE name = ?",
                (name,),
            )
            .fetchone()
        )
        return None if row is None else self._stored(row)

    def _stored(self, row: tuple[Any, ...]) -> StoredKey:
        key_id, name, settings, created_at, revoked_at = row
        secrets = self._conn().execute(
            "SELECT digest, prefix, created_at, valid_until FROM key_secrets WHERE key_id = ?"
            " ORDER BY created_at",
            (key_id,),
        )
        return StoredKey(
            name=name,
            settings=parse_key_settings(orjson.loads(settings)),
            created_at=created_at,
            revoked_at=revoked_at,
            secrets=tuple(StoredSecret(bytes(d), p, c, v) for d, p, c, v in secrets.fetchall()),
        )

    async def insert(self, name: str, settings: KeySettings, secret: StoredSecret) -> None:
        await self._run(lambda: self._insert(name, settings, secret))

    def _insert(self, name: str, settings: KeySettings, secret: StoredSecret) -> None:
        db = self._conn()
        with _transaction(db):
            try:
                cursor = db.execute(
                    "INSERT INTO keys (name, settings, created_at) VALUES (?, ?, ?)",
                    (name, _json(settings), secret.created_at),
                )
            except sqlite3.IntegrityError:
                raise KeyExists(
                    f"a key named {name!r} exists (revoked keys keep their name)"
                ) from None
            _add_secret(db, cursor.lastrowid, secret)
            _bump(db)

    async def update(self, name: str, settings: KeySettings) -> None:
        await self._run(
            lambda: self._change(
                "UPDATE keys SET settings = ? WHERE name = ?", (_json(settings), name), name
            )
        )

    async def revoke(self, name: str, now: float) -> None:
        await self._run(
            lambda: self._change(
                "UPDATE keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (now, name),
                name,
            )
        )

    def _change(self, sql: str, params: tuple[Any, ...], name: str) -> None:
        db = self._conn()
        with _transaction(db):
            if db.execute(sql, params).rowcount != 1:
                raise UnknownKey(f"no active key named {name!r}")
            _bump(db)

    async def rotate(self, name: str, secret: StoredSecret, old_valid_until: float) -> None:
        await self._run(lambda: self._rotate(name, secret, old_valid_until))

    def _rotate(self, name: str, secret: StoredSecret, old_valid_until: float) -> None:
        db = self._conn()
        with _transaction(db):
            row = db.execute(
                "SELECT id FROM keys WHERE name = ? AND revoked_at IS NULL", (name,)
            ).fetchone()
            if row is None:
                raise UnknownKey(f"no active key named {name!r}")
            db.execute(
                "UPDATE key_secrets SET valid_until = min(coalesce(valid_until, ?1), ?1)"
                " WHERE key_id = ?2",
                (old_valid_until, row[0]),
            )
            _add_secret(db, row[0], secret)
            _bump(db)

    async def ship(self, batch: Batch) -> int:
        return await self._run(lambda: self._ship(batch))

    def _ship(self, batch: Batch) -> int:
        heads = batch.heads
        db = self._conn()
        with _transaction(db):
            db.execute("SAVEPOINT batch")
            before = db.total_changes
            # OR IGNORE: a row shipped before is not inserted again (nor rolled up again).
            _insert(db, batch)
            new = heads
            if db.total_changes - before != len(heads):
                # Some were shipped before (a replay after a crash): one at a time, to see which.
                db.execute("ROLLBACK TO batch")
                new = [
                    head
                    for head, pair in zip(heads, _pairs(batch), strict=True)
                    if db.execute(_INSERT_LEDGER, pair).rowcount == 1
                ]
            db.execute("RELEASE batch")
            db.executemany(_ROLL_UP, rollups(new))
            return len(new)

    async def usage(self, by: str, since_day: str) -> list[dict[str, Any]]:
        """Totals per `by` (key, model, provider or day) from the daily rollups since a day."""
        if by not in USAGE_GROUPS:
            raise StoreError(f"usage by {by!r}: expected one of {', '.join(USAGE_GROUPS)}")
        sums = ", ".join(f"sum({c})" for c in USAGE_SUMS)
        rows = await self._run(
            lambda: (
                self._conn()
                .execute(
                    f"SELECT {by}, {sums} FROM usage_daily WHERE day >= ?"
                    f" GROUP BY {by} ORDER BY {by}",
                    (since_day,),
                )
                .fetchall()
            )
        )
        return [dict(zip((by, *USAGE_SUMS), row, strict=True)) for row in rows]

    async def spent(self, key: str, since_day: str) -> int:
        row = await self._run(
            lambda: (
                self._conn()
                .execute(
                    "SELECT coalesce(sum(cost_micro_usd), 0) FROM usage_daily"
                    " WHERE key = ? AND day >= ?",
                    (key, since_day),
                )
                .fetchone()
            )
        )
        return int(row[0])

    async def spend_by_key(self) -> dict[str, int]:
        # One sum, not `usage`'s seven: half the time over a year of rollups (metrics ask often).
        rows = await self._run(
            lambda: (
                self._conn()
                .execute("SELECT key, sum(cost_micro_usd) FROM usage_daily GROUP BY key")
                .fetchall()
            )
        )
        return {key: int(total) for key, total in rows}

    async def close(self) -> None:
        await self._run(self._close)
        self._thread.shutdown(wait=True)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): writers queue instead of deadlocking."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


def _insert(db: sqlite3.Connection, batch: Batch) -> None:
    """The batch's rows, as many a statement as CHUNK_ROWS allows. Their values laid out in one
    list (request id, line, ...) by slice assignments in C, and each statement's taken from it
    by zip (reusing its tuple): no tuple a row for the collector; no statement without rows (an
    executemany of nothing costs ~20,000 instructions)."""
    left = len(batch.lines)
    values: list[str] = [""] * (2 * left)
    values[0::2] = map(_REQUEST_ID, batch.heads)
    values[1::2] = map(bytes.decode, batch.lines)
    taken = iter(values)
    for rows in CHUNK_ROWS:
        chunked = left // rows * rows
        if chunked:
            db.executemany(
                _INSERT_CHUNK[rows], zip(*[islice(taken, 2 * chunked)] * (2 * rows), strict=True)
            )
            left -= chunked
    if left:
        db.executemany(_INSERT_LEDGER, zip(taken, taken, strict=True))


def _pairs(batch: Batch) -> Iterator[tuple[str, str]]:
    """Each row's request id and line as text, iterated in C (a line bound as bytes would be a
    blob, and costs the sqlite3 module a failed adapter lookup each, ~2,000 instructions)."""
    return zip(map(_REQUEST_ID, batch.heads), map(bytes.decode, batch.lines), strict=True)


def _migrate(db: sqlite3.Connection) -> None:
    """Apply the missing migrations, each in its own transaction (the embedded store upgrades
    itself: one process at a time, under SQLite's write lock)."""
    wanted = migrations("sqlite")
    db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
    newest = db.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
    if newest is not None and newest > len(wanted):
        raise StoreError(
            f"the database's schema (version {newest}) is newer than this messagegate's "
            f"({len(wanted)}): upgrade messagegate"
        )
    for migration in wanted:
        with _transaction(db):
            done = db.execute(
                "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
            ).fetchone()
            if done is None:
                for statement in _statements(migration.script):
                    db.execute(statement)
                db.execute("INSERT INTO schema_migrations VALUES (?)", (migration.version,))


def _statements(script: str) -> Iterator[str]:
    """The script's statements (a trigger's body holds semicolons of its own)."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""


def _add_secret(db: sqlite3.Connection, key_id: int | None, secret: StoredSecret) -> None:
    db.execute(
        "INSERT INTO key_secrets (digest, key_id, prefix, created_at, valid_until)"
        " VALUES (?, ?, ?, ?, ?)",
        (secret.digest, key_id, secret.prefix, secret.created_at, secret.valid_until),
    )


def _bump(db: sqlite3.Connection) -> None:
    db.execute("UPDATE generation SET value = value + 1")


def _json(settings: KeySettings) -> str:
    return orjson.dumps(settings_json(settings)).decode()
