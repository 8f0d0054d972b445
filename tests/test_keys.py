"""Gateway keys in the database: the key verbs, the gateway's check of them (401/403 through the
official SDK, streaming or not), revocation reaching a running gateway, rotation's grace."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

import fakes.anthropic_script as script
from fakes import postgres
from fakes.gateway import build_config, running_gateway
from fakes.upstream import FakeUpstream
from helpers import anthropic_config, envelope, post
from messagegate.config.keyspec import KeyFieldError, allows, parse_duration, parse_key_settings
from messagegate.server.app import GatewayApp
from messagegate.store.base import KeyExists, Store, StoreError, UnknownKey
from messagegate.store.keys import KeyAdmin, describe
from messagegate.store.location import open_store
from messagegate.store.postgresql import PostgresStore
from messagegate.store.sqlite import SQLiteStore

HELLO = [{"role": "user", "content": "Hello"}]
ANSWER = script.message([{"type": "text", "text": "Hi"}])
ADMIN_KEY = "admin-key-0123456789abcdef"


def answering(upstream: FakeUpstream) -> None:
    upstream.responder = lambda received: (
        script.stream_reply(ANSWER) if received.json.get("stream") else script.reply(ANSWER)
    )


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    """A second connection to the gateway's database, as `messagegate keys` would open."""
    opened = await open_store(database)
    yield opened
    await opened.close()


@pytest.fixture
async def gateway(
    upstream: FakeUpstream, tmp_path: Path, database: str, store: Store
) -> AsyncIterator[tuple[str, GatewayApp]]:
    answering(upstream)
    raw = anthropic_config(
        upstream,
        database=database,
        admin_key=ADMIN_KEY,
        models={
            "claude-test": {"routes": [{"provider": "anth", "model": "up-1"}]},
            "cheap-test": {"routes": [{"provider": "anth", "model": "up-2"}]},
        },
    )
    environ = {"XDG_DATA_HOME": str(tmp_path / "data")}
    async with running_gateway(build_config(raw, environ)) as running:
        yield running


async def ask(
    sdk: Any, url: str, key: str, model: str = "claude-test", stream: bool = False
) -> Any:
    client = sdk(url, key=key)
    if stream:
        async with client.messages.stream(model=model, max_tokens=10, messages=HELLO) as s:
            return await s.get_final_message()
    return await client.messages.create(model=model, max_tokens=10, messages=HELLO)


async def _database_bytes(store: Store) -> bytes:
    """What the database holds: an SQLite file and its write-ahead log (where fresh rows are), or
    every key table's rows."""
    if isinstance(store, SQLiteStore):
        files = [Path(store.path), Path(store.path + "-wal")]
        return b"".join(f.read_bytes() for f in files if f.exists())
    assert isinstance(store, PostgresStore)
    rows = [
        *await postgres.query(store.dsn, "SELECT * FROM keys"),
        *await postgres.query(store.dsn, "SELECT * FROM key_secrets"),
    ]
    return b"".join(v if isinstance(v, bytes) else str(v).encode() for r in rows for v in r)


def test_settings_parse_and_render_back() -> None:
    data = {
        "models": "claude-*, cheap-*",
        "rpm": 60,
        "tpm": 200_000,
        "concurrency": 4,
        "budget": 50,
        "period": "month",
        "budget_mode": "hard",
        "expires": "2030-01-01",
        "routing": {"eu_native": True},
    }
    settings = parse_key_settings(data)
    assert settings.models == ("claude-*", "cheap-*")
    assert settings.limits.budget == 50.0
    assert settings.expires_at == 1893456000.0
    from messagegate.config.keyspec import settings_json

    assert parse_key_settings(settings_json(settings)) == settings
    assert allows(settings.models, "claude-x")
    assert not allows(settings.models, "gpt-4")
    assert allows((), "anything")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"rpm": 0}, "rpm"),
        ({"tpm": "many"}, "tpm"),
        ({"concurrency": True}, "concurrency"),
        ({"budget": -1}, "budget"),
        ({"period": "year"}, "period"),
        ({"budget_mode": "strict"}, "budget_mode"),
        ({"models": ","}, "models"),
        ({"expires": "soon"}, "expires"),
        ({"routing": {"nope": 1}}, "routing.nope"),
        ({"routing": {"eu_native": "yes"}}, "routing.eu_native"),
    ],
)
def test_invalid_settings_name_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(KeyFieldError) as caught:
        parse_key_settings(data)
    assert caught.value.field == field


def test_durations() -> None:
    assert parse_duration("90d") == 90 * 86400
    assert parse_duration("30m") == 1800
    with pytest.raises(ValueError, match="duration"):
        parse_duration("3 days")


async def test_key_verbs_on_the_store(store: Store) -> None:
    admin = KeyAdmin(store, reserved=frozenset({"static"}))
    secret, key = await admin.create("alice", {"rpm": 5})
    assert secret.startswith("mg-")
    assert len(secret) > 40
    # Only the hash is stored: the secret appears nowhere in the database file.
    stored = await _database_bytes(store)
    assert secret.encode() not in stored
    assert hashlib.sha256(secret.encode()).digest() in stored
    assert describe(key, time.time())["prefixes"] == [secret[:9] + "…"]
    with pytest.raises(KeyExists):
        await admin.create("alice", {})
    with pytest.raises(StoreError, match="config file"):
        await admin.create("static", {})
    with pytest.raises(StoreError, match="invalid key name"):
        await admin.create("a/b", {})
    updated = await admin.update("alice", {"tpm": 100, "rpm": None})
    assert (updated.settings.limits.rpm, updated.settings.limits.tpm) == (None, 100)
    rotated_secret, rotated = await admin.rotate("alice", 60)
    assert rotated_secret != secret
    assert len(rotated.secrets) == 2
    assert rotated.secrets[0].valid_until is not None
    revoked = await admin.revoke("alice")
    assert describe(revoked, time.time())["status"] == "revoked"
    with pytest.raises(UnknownKey):
        await admin.revoke("alice")
    with pytest.raises(UnknownKey):
        await admin.show("bob")
    assert [k.name for k in await admin.list()] == ["alice"]


async def test_a_stored_key_is_accepted_and_its_settings_apply(
    gateway: tuple[str, GatewayApp], store: Store, upstream: FakeUpstream, sdk: Any
) -> None:
    url, app = gateway
    secret, _ = await KeyAdmin(store).create("bob", {"models": ["claude-*"]})
    assert app.key_refresh is not None
    await app.key_refresh.refresh()
    for stream in (False, True):
        answer = await ask(sdk, url, secret, stream=stream)
        assert answer.content[0].text == "Hi"
    assert [r.json["model"] for r in upstream.received] == ["up-1", "up-1"]
    # The model outside the allow-list is refused with 403 naming it, before any upstream call.
    for stream in (False, True):
        with pytest.raises(anthropic.PermissionDeniedError) as caught:
            await ask(sdk, url, secret, model="cheap-test", stream=stream)
        assert caught.value.status_code == 403
        assert "cheap-test" in caught.value.message
    # A name nothing serves is refused the same way, not told apart by a 404.
    with pytest.raises(anthropic.PermissionDeniedError):
        await ask(sdk, url, secret, model="gpt-unknown")
    assert len(upstream.received) == 2


async def test_unknown_revoked_and_expired_keys_get_401(
    gateway: tuple[str, GatewayApp], store: Store, upstream: FakeUpstream, sdk: Any
) -> None:
    url, app = gateway
    admin = KeyAdmin(store)
    revoked, _ = await admin.create("gone", {})
    await admin.revoke("gone")
    expired, _ = await admin.create("old", {"expires": time.time() - 1})
    assert app.key_refresh is not None
    await app.key_refresh.refresh()
    for key, words in (
        ("mg-not-a-key", "invalid x-api-key"),
        (revoked, "(gone) was revoked"),
        (expired, "(old) expired at"),
    ):
        for stream in (False, True):
            with pytest.raises(anthropic.AuthenticationError) as caught:
                await ask(sdk, url, key, stream=stream)
            assert caught.value.status_code == 401
            assert words in caught.value.message
    assert upstream.received == []


async def test_revocation_reaches_the_running_gateway_by_itself(
    gateway: tuple[str, GatewayApp], store: Store, sdk: Any
) -> None:
    url, app = gateway
    admin = KeyAdmin(store)
    secret, _ = await admin.create("carol", {})
    assert app.key_refresh is not None
    await app.key_refresh.refresh()
    await ask(sdk, url, secret)
    await admin.revoke("carol")
    # The background refresh (every 0.5 s) sees it; bounded: 200 looks at most.
    for _ in range(200):
        status, _, _ = await post(
            url,
            "/v1/messages",
            {"model": "claude-test", "max_tokens": 5, "messages": HELLO},
            key=secret,
        )
        if status == 401:
            break
        await asyncio.sleep(0.025)
    assert status == 401


async def test_rotation_keeps_the_old_key_for_its_grace(
    gateway: tuple[str, GatewayApp], store: Store, sdk: Any
) -> None:
    url, app = gateway
    admin = KeyAdmin(store)
    first, _ = await admin.create("dave", {})
    second, _ = await admin.rotate("dave", 3600)
    assert app.key_refresh is not None
    await app.key_refresh.refresh()
    await ask(sdk, url, first)
    await ask(sdk, url, second)
    third, _ = await admin.rotate("dave", 0)
    await app.key_refresh.refresh()
    for old in (first, second):
        with pytest.raises(anthropic.AuthenticationError, match="grace period ended"):
            await ask(sdk, url, old)
    await ask(sdk, url, third)


async def test_static_keys_take_the_same_settings(upstream: FakeUpstream, sdk: Any) -> None:
    answering(upstream)
    keys = [
        {"key": "static-key-a-0123456789", "name": "a", "models": ["cheap-*"]},
        {"key": "static-key-b-0123456789", "name": "b", "expires": "2001-01-01T00:00:00Z"},
    ]
    raw = anthropic_config(upstream, keys=keys)
    raw["models"]["cheap-test"] = {"routes": [{"provider": "anth", "model": "up-2"}]}
    async with running_gateway(build_config(raw)) as (url, _):
        await ask(sdk, url, "static-key-a-0123456789", model="cheap-test")
        with pytest.raises(anthropic.PermissionDeniedError, match="claude-test"):
            await ask(sdk, url, "static-key-a-0123456789")
        with pytest.raises(anthropic.AuthenticationError, match="expired"):
            await ask(sdk, url, "static-key-b-0123456789", model="cheap-test")
    assert [r.json["model"] for r in upstream.received] == ["up-2"]


async def test_revoking_every_key_does_not_open_the_gateway(
    upstream: FakeUpstream, tmp_path: Path, database: str, store: Store
) -> None:
    admin = KeyAdmin(store)
    await admin.create("only", {})
    await admin.revoke("only")
    raw = anthropic_config(upstream, database=database)
    del raw["keys"]
    environ = {"XDG_DATA_HOME": str(tmp_path / "data")}
    async with running_gateway(build_config(raw, environ)) as (url, _):
        status, _, body = await post(
            url,
            "/v1/messages",
            {"model": "claude-test", "max_tokens": 5, "messages": HELLO},
            key=None,
        )
    assert status == 401
    assert envelope(body)[0] == "authentication_error"
    assert upstream.received == []


async def test_the_refresh_keeps_the_last_keys_when_the_store_fails(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    from messagegate.server.auth import KeyChecker, KeyRefresh

    secret, _ = await KeyAdmin(store).create("erin", {})
    checker = KeyChecker([])
    refresh = KeyRefresh(store, checker, interval=0.01)
    await refresh.start()
    try:
        assert checker.check({"x-api-key": secret}) is not None

        async def failing() -> int:
            raise StoreError("disk I/O error")

        store.generation = failing  # type: ignore[method-assign]
        for _ in range(500):  # bounded: the loop ran and logged at least once
            if "cannot refresh the keys" in caplog.text:
                break
            await asyncio.sleep(0.01)
        assert "disk I/O error" in caplog.text
        assert checker.check({"x-api-key": secret}) is not None
    finally:
        await refresh.stop()


async def test_a_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "new.db"
    opened = await SQLiteStore.open(str(path))
    await opened.close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (999)")
    with pytest.raises(StoreError, match="newer than this messagegate"):
        await SQLiteStore.open(str(path))


async def test_count_tokens_keeps_to_the_allow_list(
    gateway: tuple[str, GatewayApp], store: Store, upstream: FakeUpstream
) -> None:
    url, app = gateway
    secret, _ = await KeyAdmin(store).create("frank", {"models": ["cheap-*"]})
    assert app.key_refresh is not None
    await app.key_refresh.refresh()
    body = {"model": "claude-test", "messages": HELLO}
    status, _, raw = await post(url, "/v1/messages/count_tokens", body, key=secret)
    assert status == 403
    assert envelope(raw) == ("permission_error", "this key may not use the model 'claude-test'")
    assert upstream.received == []


def test_only_keys_that_were_found_are_remembered_and_the_memory_is_bounded() -> None:
    from messagegate.config import ApiKey, Secret
    from messagegate.errors import AuthenticationFailed
    from messagegate.server.auth import MAX_REMEMBERED, KeyChecker

    checker = KeyChecker([ApiKey(key=Secret("mg-good"), name="good")])
    for i in range(2 * MAX_REMEMBERED):
        with pytest.raises(AuthenticationFailed):
            checker.check({"x-api-key": f"mg-guess-{i}"})
    assert checker._found == {}
    for _ in range(3):
        found = checker.check({"authorization": "Bearer mg-good"})
        assert found is not None
        assert found.name == "good"
    assert list(checker._found) == ["mg-good"]


async def test_a_remembered_key_is_refused_once_revoked(store: Store) -> None:
    from messagegate.errors import AuthenticationFailed
    from messagegate.server.auth import KeyChecker

    admin = KeyAdmin(store)
    secret, _ = await admin.create("frank", {})
    checker = KeyChecker([])
    checker.load((await store.keys())[1])
    assert checker.check({"x-api-key": secret}) is not None
    await admin.revoke("frank")
    checker.load((await store.keys())[1])
    with pytest.raises(AuthenticationFailed, match="revoked"):
        checker.check({"x-api-key": secret})


async def test_a_remembered_key_is_seen_as_loaded_again(store: Store) -> None:
    from messagegate.errors import AuthenticationFailed, ServiceUnavailable
    from messagegate.server.auth import KeyChecker

    admin = KeyAdmin(store)
    secret, _ = await admin.create("grace", {"rpm": 10})
    checker = KeyChecker([])
    checker.load((await store.keys())[1])
    remembered = checker.check({"x-api-key": secret})
    assert remembered is not None
    assert remembered.limits.rpm == 10
    await admin.update("grace", {"rpm": 20})
    checker.load((await store.keys())[1])
    updated = checker.check({"x-api-key": secret})
    assert updated is not None
    assert updated.limits.rpm == 20
    checker.withhold_stored("the keys cannot be read")
    with pytest.raises(ServiceUnavailable):
        checker.check({"x-api-key": secret})
    await admin.rotate("grace", 0)
    checker.load((await store.keys())[1])
    with pytest.raises(AuthenticationFailed, match="rotated"):
        checker.check({"x-api-key": secret})
