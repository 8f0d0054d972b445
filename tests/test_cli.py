"""The ``messagegate`` command in a real subprocess: check, serve, graceful SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest
import yaml

import fakes.anthropic_script as script
from conftest import GATEWAY_KEY, PROVIDER_KEY, SDK
from fakes.redis_server import SHARED_URL, shared_redis, unique_prefix
from fakes.served import COMMAND, Lines, base_env, serving
from fakes.upstream import FakeUpstream, Reply
from helpers import first_text, readme_yaml

PROMPT = "a very private prompt 7f3a"
ENV = {"MG_KEY": GATEWAY_KEY, "UPSTREAM_KEY": PROVIDER_KEY}
ANSWER = script.message([{"type": "text", "text": "Goodbye, gracefully."}])


def gateway_yaml(upstream: FakeUpstream, **extra: Any) -> dict[str, Any]:
    return {
        "listen": "127.0.0.1:1",
        "keys": [{"key": "${MG_KEY}", "name": "alice"}],
        "shutdown_grace": 20,
        "providers": {
            "anth": {
                "kind": "anthropic",
                "base_url": upstream.url,
                "api_key": "${UPSTREAM_KEY}",
                "region": "us",
            }
        },
        "models": {
            "claude-test": {"routes": [{"provider": "anth", "model": "claude-upstream-1"}]},
            "claude-other": {"routes": [{"provider": "anth", "model": "claude-upstream-2"}]},
        },
        **extra,
    }


def write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        COMMAND,
        *args,
        env={**base_env(), **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_check_prints_what_it_would_serve(tmp_path: Path, upstream: FakeUpstream) -> None:
    path = write(tmp_path, gateway_yaml(upstream))
    code, out, err = await run("check", "--config", str(path), env=ENV)
    assert code == 0, err
    assert str(path) in out
    assert "claude-test -> anth/claude-upstream-1" in out
    assert "claude-other -> anth/claude-upstream-2" in out
    assert f"anth: anthropic {upstream.url}" in out
    assert "1 key(s)" in out
    assert GATEWAY_KEY not in out + err
    assert PROVIDER_KEY not in out + err


@pytest.mark.parametrize(
    ("change", "env", "expected"),
    [
        (
            {},
            {"MG_KEY": "k"},
            "providers.anth.api_key: environment variable UPSTREAM_KEY is not set",
        ),
        ({"max_body_bytes": "large"}, ENV, "max_body_bytes: expected int, got str"),
        ({"shutdown_grace": "soon"}, ENV, "shutdown_grace: expected float, got str"),
    ],
    ids=["missing-var", "wrong-type", "wrong-type-float"],
)
async def test_invalid_config_exits_non_zero_naming_file_and_key_path(
    tmp_path: Path,
    upstream: FakeUpstream,
    change: dict[str, Any],
    env: dict[str, str],
    expected: str,
) -> None:
    path = write(tmp_path, gateway_yaml(upstream, **change))
    code, out, err = await run("check", "--config", str(path), env=env)
    assert code != 0
    assert f"{path}: {expected}" in err
    assert out == ""


async def test_serve_refuses_to_start_on_an_invalid_config(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    path = write(tmp_path, gateway_yaml(upstream))
    code, out, err = await run("serve", "--config", str(path), env={"MG_KEY": "k"})
    assert code != 0
    assert f"{path}: providers.anth.api_key: environment variable UPSTREAM_KEY is not set" in err
    assert "Started server" not in err + out


async def test_check_of_the_readme_example(tmp_path: Path) -> None:
    path = tmp_path / "messagegate.yaml"
    path.write_text(readme_yaml("config-example"))
    env = {"MG_KEY": "k", "ANTHROPIC_API_KEY": "sk-a-secret", "MISTRAL_API_KEY": "m-secret"}
    code, out, err = await run("check", "--config", str(path), env=env)
    assert code == 0, err
    assert (
        "claude-sonnet-4-5 -> anthropic/claude-sonnet-4-5-20250929 (fallbacks: cheap-model)" in out
    )
    assert "cheap-model -> mistral/mistral-small-latest" in out
    assert "secret" not in out


async def test_check_of_a_missing_file_fails(tmp_path: Path) -> None:
    code, _, err = await run("check", "--config", str(tmp_path / "nope.yaml"))
    assert code != 0
    assert "nope.yaml" in err


# The gateway's URL, its process and its log lines.
ServedTuple = tuple[str, asyncio.subprocess.Process, Lines]


@pytest.fixture
async def served(tmp_path: Path, upstream: FakeUpstream) -> AsyncIterator[ServedTuple]:
    path = write(tmp_path, gateway_yaml(upstream))
    async with serving("--config", str(path), env=ENV, stop=False) as gateway:
        yield gateway.url, gateway.process, gateway.log


async def test_serve_answers_and_logs_one_line_per_request(
    served: ServedTuple, upstream: FakeUpstream, sdk: SDK
) -> None:
    url, _, log = served
    upstream.script(script.reply(ANSWER))
    client = sdk(url)
    message = await client.messages.create(
        model="claude-test", max_tokens=10, messages=[{"role": "user", "content": PROMPT}]
    )
    models = await client.models.list()
    assert first_text(message) == "Goodbye, gracefully."
    assert [m.id for m in models.data] == ["claude-test", "claude-other"]
    line = await log.wait_for(r"POST /v1/messages 200")
    assert re.search(r" \d+(\.\d+)?ms ", line)
    assert "model=claude-test" in line
    assert "provider=anth" in line
    await log.wait_for(r"GET /v1/models 200")
    assert PROMPT not in log.text
    assert GATEWAY_KEY not in log.text
    assert PROVIDER_KEY not in log.text


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_signal_lets_an_open_stream_finish_then_exits_0(
    served: ServedTuple, upstream: FakeUpstream, sdk: SDK, signum: int
) -> None:
    url, process, log = served
    release = asyncio.Event()
    upstream.script(Reply(chunks=script.events(ANSWER), hold=release, hold_after=2))
    try:
        async with sdk(url).messages.stream(
            model="claude-test", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            events = aiter(stream)
            first = await asyncio.wait_for(anext(events), timeout=10)
            assert first.type == "message_start"
            process.send_signal(signum)
            await log.wait_for("Waiting for connections to close")
            # Shutting down: no new connections, while the open stream goes on.
            async with aiohttp.ClientSession() as session:
                with pytest.raises(aiohttp.ClientConnectionError):
                    await session.get(url + "/health")
            assert process.returncode is None
            release.set()
            rest = [event.type async for event in events]
            final = await stream.get_final_message()
    finally:
        release.set()
    assert rest[-1] == "message_stop"
    assert final.content[0].type == "text"
    assert first_text(final) == "Goodbye, gracefully."
    assert await asyncio.wait_for(process.wait(), timeout=15) == 0
    await log.task
    assert re.search(r"POST /v1/messages 200 .* model=claude-test provider=anth", log.text)
    assert "Traceback" not in log.text
    assert "ERROR" not in log.text


async def test_workers_share_one_port(tmp_path: Path, upstream: FakeUpstream, sdk: SDK) -> None:
    path = write(tmp_path, gateway_yaml(upstream))
    upstream.default = script.reply(ANSWER)
    async with serving("--config", str(path), "--workers", "2", env=ENV) as gateway:
        client = sdk(gateway.url)
        for _ in range(4):
            message = await client.messages.create(
                model="claude-test", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
            )
            assert message.model == "claude-test"
    log = gateway.log
    assert len(upstream.received) == 4
    assert len(re.findall(r"Started server process \[\d+\]", log.text)) == 2
    assert len(re.findall(r"POST /v1/messages 200", log.text)) == 4
    assert "key limits (rpm, tpm, concurrency, budgets) are per process" in log.text


async def test_workers_share_a_key_s_limits_through_redis(
    tmp_path: Path, upstream: FakeUpstream, sdk: SDK
) -> None:
    prefix = unique_prefix()
    raw = gateway_yaml(upstream, redis={"url": SHARED_URL, "prefix": prefix})
    raw["keys"][0]["rpm"] = 3
    upstream.default = script.reply(ANSWER)
    config = write(tmp_path, raw)
    hello: Any = [{"role": "user", "content": "hi"}]
    async with (
        shared_redis(prefix),
        serving("--config", str(config), "--workers", "2", env=ENV) as gateway,
    ):
        refusals: list[str] = []
        for _ in range(6):  # a new client (connection) each: the workers share them out
            try:
                await sdk(gateway.url).messages.create(
                    model="claude-test", max_tokens=5, messages=hello
                )
            except anthropic.RateLimitError as exc:
                refusals.append(exc.message)
    assert len(refusals) == 3
    shared = f"limits: shared through {SHARED_URL} (on outage: rate limits fail_open"
    assert shared in gateway.out.text
    assert all("3 requests per minute" in message for message in refusals)
    assert len(upstream.received) == 3
    assert "per process" not in gateway.log.text


# The embedded default and `init`.


async def test_serve_without_a_config_serves_the_providers_in_the_environment(
    upstream: FakeUpstream, sdk: SDK
) -> None:
    env = {"ANTHROPIC_API_KEY": PROVIDER_KEY, "ANTHROPIC_BASE_URL": upstream.url}
    upstream.default = script.reply(ANSWER)
    async with serving(env=env) as served:
        message = await sdk(served.url, key="anything").messages.create(
            model="claude-sonnet-4-5", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    out, log = served.out, served.log
    assert first_text(message) == "Goodbye, gracefully."
    assert upstream.received[0].json["model"] == "claude-sonnet-4-5"
    assert upstream.received[0].headers["x-api-key"] == PROVIDER_KEY
    assert "config <embedded default> is valid" in out.text
    assert f"listen: 127.0.0.1:{served.url.rpartition(':')[2]}" in out.text
    assert f"anthropic: anthropic {upstream.url} region=us" in out.text
    assert "claude-* -> anthropic/<as asked>" in out.text
    assert "auth: none" in out.text
    assert PROVIDER_KEY not in out.text + log.text


async def test_serve_with_no_provider_says_which_variables_it_looked_for() -> None:
    async with serving(env={}) as served:
        line = await served.log.wait_for("no provider is configured")
    assert "ANTHROPIC_API_KEY" in line
    assert "--config" in line
    assert "providers: none" in served.out.text


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (("--host", "0.0.0.0"), {}, "refusing to listen on 0.0.0.0:"),
        (("--host", "::"), {"ANTHROPIC_API_KEY": "a"}, "without a gateway key"),
        (
            ("--port", "18080"),
            {"ANTHROPIC_API_KEY": "a", "ANTHROPIC_BASE_URL": "http://localhost:18080"},
            "provider 'anthropic' points at this gateway's own address",
        ),
    ],
    ids=["open-everywhere", "open-v6", "itself"],
)
async def test_serve_refuses_an_unsafe_start(
    args: tuple[str, ...], env: dict[str, str], expected: str
) -> None:
    code, out, err = await run("serve", *args, env=env)
    assert code == 2
    assert expected in err
    assert "Started server" not in err + out


async def test_serve_on_all_addresses_is_refused_for_a_keyless_config_file_too(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    raw = gateway_yaml(upstream)
    del raw["keys"]
    code, _, err = await run(
        "serve", "--config", str(write(tmp_path, raw)), "--host", "0.0.0.0", env=ENV
    )
    assert code == 2
    assert "--insecure-no-auth" in err


async def test_init_writes_a_starter_that_serves(
    tmp_path: Path, upstream: FakeUpstream, sdk: SDK
) -> None:
    secret = "sk-ant-very-secret-value-42"
    env = {
        "ANTHROPIC_API_KEY": secret,
        "ANTHROPIC_BASE_URL": upstream.url,
        "MISTRAL_API_KEY": "mistral-secret-43",
        "MESSAGEGATE_API_KEY": GATEWAY_KEY,
    }
    path = tmp_path / "messagegate.yaml"
    code, out, err = await run("init", "--config", str(path), env=env)
    assert code == 0, err
    assert str(path) in out
    text = path.read_text()
    for value in (secret, "mistral-secret-43", GATEWAY_KEY, upstream.url):
        assert value not in text
    for reference in ("${ANTHROPIC_API_KEY}", "${ANTHROPIC_BASE_URL}", "${MISTRAL_API_KEY}"):
        assert reference in text
    assert "preset: mistral" in text
    again = await run("init", "--config", str(path), env=env)
    assert again[0] == 2
    assert "exists" in again[2]
    assert path.read_text() == text

    upstream.default = script.reply(ANSWER)
    async with serving("--config", str(path), env=env) as served:
        client = sdk(served.url)
        message = await client.messages.create(
            model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
        models = [m.id async for m in client.models.list()]
    assert first_text(message) == "Goodbye, gracefully."
    assert upstream.received[0].json["model"] == "claude-haiku-4-5"
    assert upstream.received[0].headers["x-api-key"] == secret
    assert "claude-*" in models
    assert "mistral-*" in models


async def test_init_with_nothing_in_the_environment_writes_a_file_that_starts(
    tmp_path: Path,
) -> None:
    path = tmp_path / "empty.yaml"
    code, _, err = await run("init", "--config", str(path))
    assert code == 0, err
    assert "providers: {}" in path.read_text()
    code, out, err = await run("check", "--config", str(path))
    assert code == 0, err
    assert "providers: none" in out


async def test_check_never_prints_credentials_in_urls(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    raw = gateway_yaml(upstream)
    raw["providers"]["anth"]["base_url"] = f"http://admin:hunter2@127.0.0.1:{upstream.port}"
    raw["providers"]["anth"]["proxy"] = "http://proxyuser:s3cret-proxy@127.0.0.1:3128"
    code, out, err = await run("check", "--config", str(write(tmp_path, raw)), env=ENV)
    assert code == 0, err
    assert "hunter2" not in out + err
    assert "s3cret-proxy" not in out + err
    assert f"http://***@127.0.0.1:{upstream.port}" in out
    assert "proxy=http://***@127.0.0.1:3128" in out
