"""The admin API under /v1/gateway/admin/ and the `messagegate keys` commands: every verb, and
who may use them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest

from conftest import GATEWAY_KEY
from fakes.gateway import build_config, running_gateway
from fakes.upstream import FakeUpstream
from helpers import anthropic_config, envelope
from messagegate import cli
from messagegate.store.location import is_postgresql
from test_keys import ADMIN_KEY, answering, ask


async def admin(
    url: str, method: str, path: str, body: Any = None, key: str | None = ADMIN_KEY
) -> tuple[int, Any]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, url + "/v1/gateway/admin/" + path, json=body, headers=headers
        ) as response,
    ):
        return response.status, json.loads(await response.read())


@pytest.fixture
async def gateway(upstream: FakeUpstream, tmp_path: Path, database: str) -> AsyncIterator[str]:
    answering(upstream)
    raw = anthropic_config(upstream, database=database, admin_key=ADMIN_KEY)
    environ = {"XDG_DATA_HOME": str(tmp_path / "data")}
    async with running_gateway(build_config(raw, environ)) as (url, _):
        yield url


async def test_every_verb_over_http(gateway: str, sdk: Any) -> None:
    url = gateway
    status, created = await admin(
        url,
        "POST",
        "keys",
        {"name": "erin", "models": ["claude-*"], "rpm": 60, "expires": "2099-01-01"},
    )
    assert status == 201
    secret = created.pop("key")
    assert secret.startswith("mg-")
    assert created["name"] == "erin"
    assert created["status"] == "active"
    assert created["rpm"] == 60
    # The gateway that made the key accepts it at once.
    assert (await ask(sdk, url, secret)).content[0].text == "Hi"
    status, listed = await admin(url, "GET", "keys")
    assert status == 200
    assert [k["name"] for k in listed["data"]] == ["erin"]
    assert "key" not in listed["data"][0]
    status, shown = await admin(url, "GET", "keys/erin")
    assert shown == created
    status, updated = await admin(url, "PATCH", "keys/erin", {"rpm": None, "tpm": 1000})
    assert status == 200
    assert "rpm" not in updated
    assert updated["tpm"] == 1000
    status, rotated = await admin(url, "POST", "keys/erin/rotate", {"grace": "0s"})
    assert status == 200
    with pytest.raises(anthropic.AuthenticationError):
        await ask(sdk, url, secret)
    await ask(sdk, url, rotated["key"])
    status, revoked = await admin(url, "POST", "keys/erin/revoke")
    assert (status, revoked["status"]) == (200, "revoked")
    with pytest.raises(anthropic.AuthenticationError, match="revoked"):
        await ask(sdk, url, rotated["key"])


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error_type"),
    [
        ("POST", "keys", {"name": "x", "rpm": -1}, 400, "invalid_request_error"),
        ("POST", "keys", {"rpm": 1}, 400, "invalid_request_error"),
        ("POST", "keys", {"name": "x", "colour": "red"}, 400, "invalid_request_error"),
        ("GET", "keys/nobody", None, 404, "not_found_error"),
        ("POST", "keys/nobody/revoke", None, 404, "not_found_error"),
        ("DELETE", "keys", None, 404, "not_found_error"),
    ],
)
async def test_admin_errors_use_the_envelope(
    gateway: str, method: str, path: str, body: Any, status: int, error_type: str
) -> None:
    got, answer = await admin(gateway, method, path, body)
    assert got == status
    assert envelope(json.dumps(answer).encode())[0] == error_type


@pytest.mark.parametrize("key", [None, GATEWAY_KEY, "wrong-admin-key-0123456"])
async def test_only_the_admin_key_opens_the_admin_api(gateway: str, key: str | None) -> None:
    status, answer = await admin(gateway, "GET", "keys", key=key)
    assert status == 401
    assert answer["error"]["type"] == "authentication_error"


async def test_without_admin_key_the_admin_api_is_off(upstream: FakeUpstream) -> None:
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        status, answer = await admin(url, "GET", "keys")
    assert status == 404
    assert "admin_key" in answer["error"]["message"]


def test_admin_key_must_not_be_a_gateway_key(upstream: FakeUpstream) -> None:
    from messagegate.config import ConfigError

    with pytest.raises(ConfigError, match="admin_key: must not be a gateway key"):
        build_config(anthropic_config(upstream, admin_key=GATEWAY_KEY))


def _keys(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str, str]:
    code = cli.main(["keys", *args[:1], "--config", str(config), *args[1:]])
    out, err = capsys.readouterr()
    return code, out, err


def test_every_verb_on_the_command_line(
    tmp_path: Path, database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "mg.yaml"
    config.write_text(
        f"database: {database}\nproviders: {{}}\nmodels: {{}}\n"
        "keys: [{key: static-0123456789, name: static}]\n"
    )
    code, out, err = _keys(
        capsys,
        config,
        "create",
        "--name",
        "alice",
        "--models",
        "claude-*,cheap-*",
        "--budget",
        "50",
        "--period",
        "month",
        "--rpm",
        "60",
        "--tpm",
        "200000",
        "--concurrency",
        "4",
        "--expires",
        "90d",
        "--routing",
        "eu_native=true",
    )
    assert code == 0
    secret = out.strip()
    assert secret.startswith("mg-")
    assert "not shown again" in err
    assert is_postgresql(database) or Path(database).exists()
    code, out, _ = _keys(capsys, config, "show", "alice", "--json")
    shown = json.loads(out)
    assert shown["models"] == ["claude-*", "cheap-*"]
    assert (shown["budget"], shown["period"], shown["rpm"], shown["tpm"]) == (
        50.0,
        "month",
        60,
        200000,
    )
    assert shown["concurrency"] == 4
    assert shown["routing"] == {"eu_native": True}
    code, out, _ = _keys(capsys, config, "update", "alice", "--rpm", "10", "--unset", "budget")
    assert code == 0
    assert "rpm: 10" in out
    assert "budget" not in out
    code, out, err = _keys(capsys, config, "rotate", "alice", "--grace", "10m")
    assert code == 0
    assert out.strip().startswith("mg-")
    assert out.strip() != secret
    code, out, _ = _keys(capsys, config, "revoke", "alice")
    assert "status: revoked" in out
    code, out, _ = _keys(capsys, config, "list")
    assert out.splitlines()[1].split()[:2] == ["alice", "revoked"]
    code, out, _ = _keys(capsys, config, "list", "--json")
    assert [k["name"] for k in json.loads(out)] == ["alice"]
    for args, words in (
        (("create", "--name", "alice"), "exists"),
        (("create", "--name", "static"), "config file"),
        (("create", "--name", "bob", "--period", "year"), "period"),
        (("show", "nobody"), "no key named"),
        (("rotate", "alice"), "no active key"),
    ):
        code, _, err = _keys(capsys, config, *args)
        assert code == 2
        assert words in err


def test_stored_keys_let_serve_listen_off_loopback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from messagegate.config import load_config
    from messagegate.key_commands import active_stored_keys

    path = tmp_path / "mg.yaml"
    path.write_text(f"database: {tmp_path / 'mg.db'}\nproviders: {{}}\nmodels: {{}}\n")
    config = load_config(path, environ={})
    assert cli.start_refusal(config, "0.0.0.0", 8080, False, None) is not None
    assert _keys(capsys, path, "create", "--name", "gina")[0] == 0
    assert active_stored_keys(config) == 1
    assert cli.start_refusal(config, "0.0.0.0", 8080, False, 1) is None
    assert _keys(capsys, path, "revoke", "gina")[0] == 0
    assert active_stored_keys(config) == 0
    assert cli.start_refusal(config, "0.0.0.0", 8080, False, 0) is not None
