"""PostgreSQL as the store several gateways share: its schema's versions and `messagegate db`,
ledger rows shipped and rolled up once, a key change reaching every replica at once, and the
database going away and coming back (through a loopback relay the test cuts)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from conftest import GATEWAY_KEY
from fakes import postgres
from fakes.gateway import build_config, running_gateway
from fakes.served import COMMAND, base_env, free_port, serving
from fakes.tcp_relay import TcpRelay
from fakes.upstream import FakeUpstream
from helpers import anthropic_config, envelope, post
from messagegate import cli
from messagegate.ledger.row import batch_of
from messagegate.server.app import GatewayApp
from messagegate.server.auth import Freshness
from messagegate.store import pg_schema
from messagegate.store.base import Store
from messagegate.store.keys import KeyAdmin
from messagegate.store.location import open_store, shown
from messagegate.store.migrations import migrations
from test_admin_api import admin
from test_keys import ADMIN_KEY, HELLO, answering, ask
from test_ledger import ledger_row

# Every wait below is bounded by this many looks, 25 ms apart.
LOOKS = 400


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    for _ in range(LOOKS):
        if await check():
            return
        await asyncio.sleep(0.025)
    raise AssertionError("the condition did not hold in time")


async def status_for(url: str, key: str) -> int:
    body = {"model": "claude-test", "max_tokens": 5, "messages": HELLO}
    status, _, _ = await post(url, "/v1/messages", body, key=key)
    return status


async def answers(url: str, key: str, expected: int) -> bool:
    return await status_for(url, key) == expected


@pytest.fixture
async def fresh_database() -> AsyncIterator[str]:
    """A database no messagegate has upgraded yet."""
    url = await postgres.create_database(upgraded=False)
    yield url
    await postgres.drop_database(url)


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[Store]:
    opened = await open_store(postgres_url)
    yield opened
    await opened.close()


def config_file(tmp_path: Path, database: str) -> Path:
    path = tmp_path / "mg.yaml"
    path.write_text(f"database: {database}\nproviders: {{}}\nmodels: {{}}\n")
    return path


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(cli.main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_ledger_rows_ship_once_and_roll_up_once(store: Store) -> None:
    # A batch holding a row twice, then the same batch again (a journal re-read after a crash).
    batch = batch_of([ledger_row("req_1"), ledger_row("req_2"), ledger_row("req_1")])
    assert await store.ship(batch) == 2
    assert await store.ship(batch) == 0
    assert await store.ship(batch_of([ledger_row("req_3")])) == 1
    (by_day,) = await store.usage("day", "2001-01-01")
    assert by_day == {
        "day": "2001-09-09",
        "requests": 3,
        "input_tokens": 3,
        "output_tokens": 6,
        "cache_read_tokens": 0,
        "cache_write_5m_tokens": 0,
        "cache_write_1h_tokens": 0,
        "cost_micro_usd": 15,
    }
    assert await store.usage("key", "2001-09-10") == []
    assert await store.spent("k", "2001-09-09") == 15
    assert await store.spent("k", "2001-09-10") == 0
    assert await store.spend_by_key() == {"k": 15}


async def test_serve_refuses_a_schema_behind_until_db_upgrade(
    fresh_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_file(tmp_path, fresh_database)
    env = {"XDG_DATA_HOME": str(tmp_path / "data")}
    process = await asyncio.create_subprocess_exec(
        COMMAND,
        *("serve", "--config", str(path), "--port", str(free_port())),
        env={**base_env(), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, refusal = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 2
    assert "schema is at version 0" in refusal.decode()
    assert "messagegate db upgrade" in refusal.decode()
    code, _, err = await run_cli(capsys, "keys", "list", "--config", str(path))
    assert (code, "messagegate db upgrade" in err) == (2, True)
    code, out, _ = await run_cli(capsys, "db", "status", "--config", str(path))
    assert code == 0
    assert f"schema version 0, this messagegate wants {pg_schema.wanted()}" in out
    code, out, _ = await run_cli(capsys, "db", "upgrade", "--config", str(path))
    assert code == 0
    assert [line for line in out.splitlines() if line.startswith("applied")] == [
        f"applied {m.name}" for m in migrations("postgresql")
    ]
    code, out, _ = await run_cli(capsys, "db", "upgrade", "--config", str(path))
    assert (code, "already current" in out) == (0, True)
    code, out, _ = await run_cli(capsys, "db", "status", "--config", str(path))
    assert "(current)" in out
    async with serving("--config", str(path), env=env) as served:
        assert "stored keys: 0 active in postgresql://" in served.out.text


async def test_a_schema_ahead_of_the_code_is_refused(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    newer = pg_schema.wanted() + 1
    await postgres.query(
        postgres_url, "INSERT INTO schema_version (version, name) VALUES ($1, 'later')", newer
    )
    try:
        path = config_file(tmp_path, postgres_url)
        code, _, err = await run_cli(capsys, "keys", "list", "--config", str(path))
        assert code == 2
        assert f"(version {newer}) is newer than this messagegate's" in err
        code, _, err = await run_cli(capsys, "db", "upgrade", "--config", str(path))
        assert (code, "nothing to upgrade" in err) == (2, True)
    finally:
        await postgres.query(postgres_url, "DELETE FROM schema_version WHERE version = $1", newer)


async def test_two_replicas_upgrading_at_once_apply_each_migration_once(
    fresh_database: str,
) -> None:
    connections = [await asyncpg.connect(fresh_database) for _ in range(2)]
    try:
        applied = await asyncio.gather(*(pg_schema.upgrade(c) for c in connections))
    finally:
        for conn in connections:
            await conn.close()
    assert sorted(len(a) for a in applied) == [0, pg_schema.wanted()]
    versions = await postgres.query(fresh_database, "SELECT version FROM schema_version")
    assert sorted(v["version"] for v in versions) == list(range(1, pg_schema.wanted() + 1))


async def test_a_key_change_wakes_another_store_at_once(postgres_url: str, store: Store) -> None:
    watcher = await open_store(postgres_url)
    try:
        # The first wait starts listening (and returns: what changed before is not known).
        await watcher.wait_for_change(10)
        waiting = asyncio.create_task(watcher.wait_for_change(3600))
        await KeyAdmin(store).create("notified", {})
        # Only the notification can end an hour's wait within this bound.
        async with asyncio.timeout(10):
            await waiting
    finally:
        await watcher.close()


@pytest.fixture
async def replicas(
    upstream: FakeUpstream, tmp_path: Path, postgres_url: str
) -> AsyncIterator[list[tuple[str, GatewayApp]]]:
    """Two gateways sharing the database, whose generation poll is too slow to matter."""
    answering(upstream)
    raw = anthropic_config(upstream, database=postgres_url, admin_key=ADMIN_KEY)
    config = build_config(raw, {"XDG_DATA_HOME": str(tmp_path / "data")})
    async with running_gateway(config) as first, running_gateway(config) as second:
        for _, app in (first, second):
            assert app.key_refresh is not None
            app.key_refresh.interval = 3600
        yield [first, second]


async def test_a_revocation_on_one_replica_is_refused_by_the_other(
    replicas: list[tuple[str, GatewayApp]],
    tmp_path: Path,
    postgres_url: str,
    sdk: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (first, _), (second, _) = replicas
    status, created = await admin(first, "POST", "keys", {"name": "shared"})
    assert status == 201
    secret = created["key"]

    await eventually(partial(answers, second, secret, 200))
    assert (await ask(sdk, second, secret)).content[0].text == "Hi"
    assert (await admin(first, "POST", "keys/shared/revoke"))[0] == 200
    await eventually(partial(answers, second, secret, 401))
    # The command line's revocation reaches both.
    status, created = await admin(second, "POST", "keys", {"name": "other"})
    other = created["key"]
    await eventually(partial(answers, first, other, 200))
    path = config_file(tmp_path, postgres_url)
    code, _, _ = await run_cli(capsys, "keys", "revoke", "other", "--config", str(path))
    assert code == 0
    for url in (first, second):
        await eventually(partial(answers, url, other, 401))


def _relayed(url: str, relay: TcpRelay) -> str:
    return url.replace("127.0.0.1:5432", f"127.0.0.1:{relay.port}")


async def test_a_database_outage_keeps_the_keys_and_delays_the_ledger(
    upstream: FakeUpstream, tmp_path: Path, postgres_url: str, store: Store, sdk: Any
) -> None:
    answering(upstream)
    secret, _ = await KeyAdmin(store).create("steady", {})
    async with TcpRelay("127.0.0.1", 5432) as relay:
        raw = anthropic_config(
            upstream, database=_relayed(postgres_url, relay), admin_key=ADMIN_KEY
        )
        config = build_config(raw, {"XDG_DATA_HOME": str(tmp_path / "data")})
        async with running_gateway(config) as (url, app):
            assert app.key_refresh is not None
            refresh = app.key_refresh
            relay.sever()
            for _ in range(3):
                assert (await ask(sdk, url, secret)).content[0].text == "Hi"

            async def stale() -> bool:
                return refresh.freshness is Freshness.STALE

            await eventually(stale)
            # fail_open (the default): the keys last read still work.
            assert (await ask(sdk, url, secret)).content[0].text == "Hi"
            status, shown = await admin(url, "GET", "keys")
            assert status == 503
            assert shown["error"]["type"] == "api_error"
            assert await postgres.query(postgres_url, "SELECT * FROM ledger") == []
            relay.restore()

            async def shipped() -> bool:
                return len(await postgres.query(postgres_url, "SELECT * FROM ledger")) == 4

            await eventually(shipped)

            async def current() -> bool:
                return refresh.freshness is Freshness.CURRENT

            await eventually(current)
    (rollup,) = await store.usage("key", "2000-01-01")
    assert (rollup["key"], rollup["requests"]) == ("steady", 4)


async def test_fail_closed_refuses_stored_keys_while_they_cannot_be_refreshed(
    upstream: FakeUpstream, tmp_path: Path, postgres_url: str, store: Store
) -> None:
    answering(upstream)
    secret, _ = await KeyAdmin(store).create("strict", {})
    async with TcpRelay("127.0.0.1", 5432) as relay:
        raw = anthropic_config(
            upstream,
            database=_relayed(postgres_url, relay),
            on_outage={"keys": "fail_closed"},
        )
        config = build_config(raw, {"XDG_DATA_HOME": str(tmp_path / "data")})
        async with running_gateway(config) as (url, app):
            assert app.key_refresh is not None
            # The default (10 s) is a constant; the mechanism is the same with less.
            app.key_refresh.stale_limit = 0.2
            assert await status_for(url, secret) == 200
            relay.sever()
            await eventually(partial(answers, url, secret, 503))
            body = {"model": "claude-test", "max_tokens": 5, "messages": HELLO}
            status, headers, answer = await post(url, "/v1/messages", body, key=secret)
            assert status == 503
            assert envelope(answer) == (
                "api_error",
                "the gateway cannot read its keys from the database; retry shortly",
            )
            assert headers["retry-after"] == "5"
            # The config file's keys need no database.
            assert await status_for(url, GATEWAY_KEY) == 200
            relay.restore()
            await eventually(partial(answers, url, secret, 200))


def test_output_never_shows_a_database_password() -> None:
    assert (
        shown("postgresql://mg:s3cret@db.example:5432/mg")
        == "postgresql://mg:***@db.example:5432/mg"
    )
    assert shown("postgres://mg@[::1]/mg") == "postgres://mg@[::1]/mg"
    assert shown("/var/lib/messagegate/mg.db") == "/var/lib/messagegate/mg.db"
