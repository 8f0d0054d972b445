"""Which database a config names, and opening it."""

from __future__ import annotations

from pathlib import Path

from messagegate.config import Config
from messagegate.store.base import Store, StoreError
from messagegate.store.sqlite import SQLiteStore


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


def journal_directory(location: str) -> Path:
    """Where this machine's gateways journal ledger rows: beside the database file."""
    return Path(location.removeprefix("sqlite://")).parent / "messagegate-journal"


async def open_store(location: str) -> Store:
    if location.startswith(("postgres://", "postgresql://", "redis://")):
        raise StoreError(f"{location.split(':')[0]} databases are not supported yet")
    return await SQLiteStore.open(location.removeprefix("sqlite://"))
