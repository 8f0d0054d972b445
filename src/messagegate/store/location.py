"""Which database a config names, and opening it."""

from __future__ import annotations

import hashlib
from pathlib import Path

from messagegate.config import Config
from messagegate.store.base import Store, StoreError
from messagegate.store.dsn import redacted
from messagegate.store.sqlite import SQLiteStore

POSTGRESQL_SCHEMES = ("postgresql://", "postgres://")


def is_postgresql(location: str) -> bool:
    return location.startswith(POSTGRESQL_SCHEMES)


def serving_database(config: Config) -> str | None:
    """`database:`, else the default path once it exists (or when the admin API will need it)."""
    if config.database:
        return config.database
    default = config.default_database
    if default and (config.admin_key is not None or Path(default).exists()):
        return default
    return None


def managing_database(config: Config) -> str:
    """The database the `keys` commands use: `database:`, else the default path."""
    location = config.database or config.default_database
    if location is None:
        raise StoreError("no database: set `database:` in the config, or HOME or XDG_DATA_HOME")
    return location


def shown(location: str) -> str:
    """The location as output may show it: a URL's password is left out."""
    return redacted(location) if is_postgresql(location) else location


def journal_directory(location: str, default_database: str | None = None) -> Path:
    """Where this machine's gateways journal ledger rows: beside an SQLite file; for a server
    database, beside the default database path, one directory per database (its rows must ship
    to that one)."""
    if not is_postgresql(location):
        return Path(location.removeprefix("sqlite://")).parent / "messagegate-journal"
    if default_database is None:
        raise StoreError("no directory for the ledger journal: set HOME or XDG_DATA_HOME")
    tag = hashlib.sha256(redacted(location).encode()).hexdigest()[:12]
    return Path(default_database).parent / f"messagegate-journal-{tag}"


async def open_store(location: str) -> Store:
    if is_postgresql(location):
        # Imported here: asyncpg is loaded only by the gateways that use PostgreSQL.
        from messagegate.store.postgresql import PostgresStore

        return await PostgresStore.open(location)
    if location.startswith("redis://"):
        raise StoreError("redis databases are not supported")
    return await SQLiteStore.open(location.removeprefix("sqlite://"))
