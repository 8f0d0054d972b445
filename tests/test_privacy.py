"""Privacy mode end to end: the official SDK -> messagegate proxy -> (recorded TCP) -> gateway
-> fake upstream; what the network sees, what the upstream got, what the client got."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

import fakes.anthropic_script as script
import fakes.openai_script as oai
from conftest import GATEWAY_KEY, SDK
from fakes.gateway import build_config, running_gateway
from fakes.privacy import AcceptingVerifier, RefusingVerifier, Tap, make_key_file, running_proxy
from fakes.upstream import FakeUpstream, Reply
from helpers import anthropic_config, envelope, first_text, openai_config, post, sse_events
from messagegate.privacy.client import RegisteredSecret, SealedExchange
from messagegate.privacy.codec import CodecError
from messagegate.privacy.keys import rotate
from messagegate.privacy.proxy import ProxyApp
from messagegate.privacy.trust import AttestedKeys, KeyNotTrusted, PinnedKeys

MARKER = "ZEBRA-MARKER-7731"
ANSWER_MARKER = "OKAPI-ANSWER-4410"
REQUEST: dict[str, Any] = {
    "max_tokens": 200,
    "system": f"You are {MARKER} the assistant.",
    "messages": [
        {"role": "user", "content": f"Read the file {MARKER}.txt"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "read", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": f"it says {MARKER}"}
            ],
        },
    ],
    "tools": [{"name": "read", "input_schema": {"type": "object"}}],
}


def private(config: dict[str, Any], key_file: Path, **extra: Any) -> dict[str, Any]:
    return {**config, "privacy": {"mode": "required", "key_file": str(key_file), **extra}}


def current_secret(proxy_app: ProxyApp) -> RegisteredSecret:
    session = proxy_app.session
    assert session is not None
    assert session.current is not None
    return session.current


def assert_unseen(tap: Tap) -> None:
    assert tap.upstream, "the tap saw no request"
    assert tap.downstream, "the tap saw no answer"
    for marker in (MARKER, ANSWER_MARKER):
        assert marker.encode() not in tap.seen


async def test_anthropic_route_json_and_stream_cross_the_wire_sealed(
    upstream: FakeUpstream, sdk: SDK, tmp_path: Path
) -> None:
    key_file, key_id = make_key_file(tmp_path)
    answer = script.message([{"type": "text", "text": f"done: {ANSWER_MARKER}"}])
    upstream.script(script.reply(answer), script.stream_reply(answer))
    config = build_config(private(anthropic_config(upstream), key_file))
    async with (
        running_gateway(config) as (url, _),
        Tap(int(url.rsplit(":", 1)[1])) as tap,
        running_proxy(tap.url, PinnedKeys([key_id]), GATEWAY_KEY) as (proxy, _),
    ):
        client = sdk(proxy, key="unused")
        message = await client.messages.create(model="claude-test", **REQUEST)
        async with client.messages.stream(model="claude-test", **REQUEST) as stream:
            streamed = await stream.get_final_message()
    assert first_text(message) == f"done: {ANSWER_MARKER}"
    assert first_text(streamed) == f"done: {ANSWER_MARKER}"
    assert streamed.usage.cache_read_input_tokens == 0
    for received in upstream.received:
        assert received.json["system"] == REQUEST["system"]
        assert received.json["messages"] == REQUEST["messages"]
    assert_unseen(tap)
    assert b"x-messagegate-privacy: v1." in tap.upstream


async def test_openai_route_stream_and_count_tokens_cross_the_wire_sealed(
    upstream: FakeUpstream, sdk: SDK, tmp_path: Path
) -> None:
    key_file, key_id = make_key_file(tmp_path)
    upstream.script(
        Reply(chunks=oai.chunks("gpt-upstream-1", f"ok {ANSWER_MARKER}", [], usage=True))
    )
    config = build_config(private(openai_config(upstream), key_file))
    async with (
        running_gateway(config) as (url, _),
        Tap(int(url.rsplit(":", 1)[1])) as tap,
        running_proxy(tap.url, PinnedKeys([key_id]), GATEWAY_KEY) as (proxy, _),
    ):
        client = sdk(proxy, key="unused")
        async with client.messages.stream(model="gpt-test", **REQUEST) as stream:
            text = "".join([chunk async for chunk in stream.text_stream])
        counted = await client.messages.count_tokens(
            model="gpt-test", messages=REQUEST["messages"], system=REQUEST["system"]
        )
        models = await client.models.list()
    assert text == f"ok {ANSWER_MARKER}"
    assert counted.input_tokens > 10
    assert [m.id for m in models.data] == ["gpt-test"]
    sent = upstream.received[0].json
    assert sent["messages"][0] == {"role": "system", "content": REQUEST["system"]}
    assert MARKER in orjson.dumps(sent["messages"]).decode()
    assert len(upstream.received) == 1
    assert_unseen(tap)


async def _sealed_post(
    url: str, proxy_app: ProxyApp, data: dict[str, Any], header: str | None = None
) -> tuple[int, dict[str, str], bytes, SealedExchange]:
    exchange = SealedExchange(current_secret(proxy_app))
    body = exchange.seal_request(orjson.dumps(data))
    status, headers, raw = await post(
        url, "/v1/messages", body, headers={"x-messagegate-privacy": header or exchange.header}
    )
    return status, headers, raw, exchange


async def test_a_flipped_bit_in_any_sealed_field_is_refused_before_any_upstream_call(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    key_file, key_id = make_key_file(tmp_path)
    config = build_config(private(anthropic_config(upstream), key_file))
    async with (
        running_gateway(config) as (url, _),
        running_proxy(url, PinnedKeys([key_id]), GATEWAY_KEY) as (_, proxy_app),
    ):
        for field in ("system", "messages", "tools"):
            exchange = SealedExchange(current_secret(proxy_app))
            sealed = orjson.loads(
                exchange.seal_request(orjson.dumps({"model": "claude-test", **REQUEST}))
            )
            raw = bytearray(base64.b64decode(sealed[field]))
            raw[5] ^= 0x01
            sealed[field] = base64.b64encode(bytes(raw)).decode()
            status, headers, body = await post(
                url, "/v1/messages", sealed, headers={"x-messagegate-privacy": exchange.header}
            )
            assert status == 400
            assert headers["x-messagegate-privacy-error"] == "decrypt_failed"
            kind, message = envelope(body)
            assert kind == "invalid_request_error"
            assert field in message
            assert MARKER not in message
    assert upstream.received == []


async def test_a_replayed_request_is_refused_and_reaches_no_upstream(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    key_file, key_id = make_key_file(tmp_path)
    upstream.script(script.reply(script.message([{"type": "text", "text": "once"}])))
    config = build_config(private(anthropic_config(upstream), key_file))
    async with (
        running_gateway(config) as (url, _),
        running_proxy(url, PinnedKeys([key_id]), GATEWAY_KEY) as (_, proxy_app),
    ):
        exchange = SealedExchange(current_secret(proxy_app))
        body = exchange.seal_request(orjson.dumps({"model": "claude-test", **REQUEST}))
        header = {"x-messagegate-privacy": exchange.header}
        first = await post(url, "/v1/messages", body, headers=header)
        second = await post(url, "/v1/messages", body, headers=header)
    assert first[0] == 200
    assert orjson.loads(exchange.open_answer(first[2]))["content"][0]["text"] == "once"
    assert second[0] == 400
    assert second[1]["x-messagegate-privacy-error"] == "replay"
    assert len(upstream.received) == 1


async def test_a_reordered_or_dropped_stream_event_fails_to_open(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    key_file, key_id = make_key_file(tmp_path)
    answer = script.message([{"type": "text", "text": "one two"}])
    upstream.script(script.stream_reply(answer))
    config = build_config(private(anthropic_config(upstream), key_file))
    async with (
        running_gateway(config) as (url, _),
        running_proxy(url, PinnedKeys([key_id]), GATEWAY_KEY) as (_, proxy_app),
    ):
        status, headers, raw, exchange = await _sealed_post(
            url, proxy_app, {"model": "claude-test", "stream": True, **REQUEST}
        )
    assert status == 200
    assert headers["x-messagegate-privacy"] == "v1"
    events = [block + b"\n\n" for block in raw.split(b"\n\n") if block]
    names = [name for name, _ in sse_events(raw)]
    assert names[0] == "message_start"
    assert ANSWER_MARKER.encode() not in raw
    whole = exchange.event_opener().feed(raw)
    deltas = [d["delta"] for name, d in sse_events(whole) if name == "content_block_delta"]
    assert "".join(delta["text"] for delta in deltas) == "one two"
    assert names[1] == "ping"  # clear, outside the sequence
    swapped = [*events[:2], events[3], events[2], *events[4:]]
    dropped = [*events[:3], *events[4:]]
    for broken in (swapped, dropped):
        with pytest.raises(CodecError):
            exchange.event_opener().feed(b"".join(broken))


async def test_required_mode_refuses_plaintext_and_optional_mode_serves_it(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    key_file, _ = make_key_file(tmp_path)
    config = build_config(private(anthropic_config(upstream), key_file))
    async with running_gateway(config) as (url, _):
        status, headers, body = await post(url, "/v1/messages", {"model": "claude-test", **REQUEST})
    assert status == 400
    assert headers["x-messagegate-privacy-error"] == "required"
    assert "messagegate proxy" in envelope(body)[1]
    assert upstream.received == []
    upstream.script(script.reply(script.message([{"type": "text", "text": "clear"}])))
    optional = build_config(private(anthropic_config(upstream), key_file, mode="optional"))
    async with running_gateway(optional) as (url, _):
        status, _, body = await post(url, "/v1/messages", {"model": "claude-test", **REQUEST})
    assert status == 200
    assert orjson.loads(body)["content"][0]["text"] == "clear"


async def test_a_wrong_pin_or_a_refusing_verifier_stops_the_proxy_before_any_prompt(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    key_file, key_id = make_key_file(tmp_path)
    evidence = tmp_path / "quote.bin"
    evidence.write_bytes(b"trusted-quote")
    config = build_config(
        private(anthropic_config(upstream), key_file, evidence_file=str(evidence))
    )
    async with running_gateway(config) as (url, _):
        for trust in (PinnedKeys(["00" * 32]), AttestedKeys(RefusingVerifier())):
            app = ProxyApp(url, trust, GATEWAY_KEY)
            with pytest.raises(KeyNotTrusted):
                await app.startup()
            await app.shutdown()
            assert app.session is None
        verifier = AcceptingVerifier()
        async with running_proxy(url, AttestedKeys(verifier), GATEWAY_KEY) as (_, proxy_app):
            assert proxy_app.session is not None
            assert proxy_app.session.key_id == key_id
    assert verifier.seen[0][0] == b"trusted-quote"
    assert upstream.received == []


async def test_a_forgotten_secret_is_renewed_without_a_failed_request(
    upstream: FakeUpstream, sdk: SDK, tmp_path: Path
) -> None:
    key_file, key_id = make_key_file(tmp_path)
    upstream.default = script.reply(script.message([{"type": "text", "text": "fine"}]))
    config = build_config(private(anthropic_config(upstream), key_file))
    async with (
        running_gateway(config) as (url, gateway),
        running_proxy(url, PinnedKeys([key_id]), GATEWAY_KEY) as (proxy, proxy_app),
    ):
        first_secret = current_secret(proxy_app)
        assert gateway.privacy is not None
        gateway.privacy.secrets._entries.clear()  # as if the gateway had restarted
        message = await sdk(proxy, key="unused").messages.create(model="claude-test", **REQUEST)
        assert current_secret(proxy_app) is not first_secret
    assert first_text(message) == "fine"
    assert len(upstream.received) == 1


async def test_200_concurrent_streams_across_a_key_rotation_lose_no_request(
    upstream: FakeUpstream, sdk: SDK, tmp_path: Path
) -> None:
    key_file, _ = make_key_file(tmp_path, age=100)
    evidence = tmp_path / "quote.bin"
    evidence.write_bytes(b"trusted-quote")
    hold = asyncio.Event()
    answer = script.message([{"type": "text", "text": "streamed answer"}])
    upstream.default = script.stream_reply(answer, hold=hold, hold_after=1)
    config = build_config(
        private(anthropic_config(upstream), key_file, evidence_file=str(evidence), rotation_grace=1)
    )
    now = [0.0]
    async with (
        running_gateway(config) as (url, _),
        running_proxy(
            url, AttestedKeys(AcceptingVerifier()), GATEWAY_KEY, clock=lambda: now[0]
        ) as (proxy, proxy_app),
    ):
        assert proxy_app.session is not None
        client = sdk(proxy, key="unused", timeout=60)

        async def one() -> str:
            async with client.messages.stream(model="claude-test", **REQUEST) as stream:
                return await stream.get_final_text()

        first = [asyncio.create_task(one()) for _ in range(100)]
        await _wait_for(lambda: len(upstream.received) == 100)
        old_key = proxy_app.session.key_id
        # Rotated 50 s ago with a grace of 1 s: the first key takes no new secret any more.
        rotate(key_file, 1.0, time.time() - 50)
        now[0] += 4000.0  # the proxy's secret is due for renewal
        second = [asyncio.create_task(one()) for _ in range(100)]
        await _wait_for(lambda: len(upstream.received) == 200)
        hold.set()
        texts = await asyncio.gather(*first, *second)
        assert proxy_app.session.key_id != old_key
    assert texts == ["streamed answer"] * 200


async def _wait_for(condition: Any) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def test_the_proxy_command_exits_when_the_pin_does_not_match(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    key_file, _ = make_key_file(tmp_path)
    config = build_config(private(anthropic_config(upstream), key_file))
    async with running_gateway(config) as (url, _):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "messagegate.cli",
            "proxy",
            "--gateway",
            url,
            "--pin",
            "ab" * 32,
            "--listen",
            "127.0.0.1:0",
            env={**os.environ, "MESSAGEGATE_API_KEY": GATEWAY_KEY},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 3
    assert b"is not one of the pinned keys" in stderr
    assert upstream.received == []


async def test_error_messages_of_private_requests_quote_no_request_content(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    key_file, key_id = make_key_file(tmp_path)
    quoting = f"messages.0.content: 'Read the file {MARKER}.txt' is not allowed"
    upstream.script(script.error_reply(400, "invalid_request_error", quoting))
    config = build_config(private(anthropic_config(upstream), key_file))
    async with (
        running_gateway(config) as (url, _),
        running_proxy(url, PinnedKeys([key_id]), GATEWAY_KEY) as (_, proxy_app),
    ):
        bad_role = {**REQUEST, "messages": [{"role": MARKER, "content": "hi"}]}
        invalid = await _sealed_post(url, proxy_app, {"model": "claude-test", **bad_role})
        refused = await _sealed_post(url, proxy_app, {"model": "claude-test", **REQUEST})
    assert invalid[0] == 400
    assert envelope(invalid[2])[1].startswith("messages.0.role")
    assert refused[0] == 400
    assert envelope(refused[2]) == (
        "invalid_request_error",
        "messages.0.content: '…' is not allowed",
    )
    for _, _, body, _ in (invalid, refused):
        assert MARKER.encode() not in body
    assert len(upstream.received) == 1


async def test_routing_filters_and_failover_work_as_without_privacy(
    upstream: FakeUpstream, second_upstream: FakeUpstream, sdk: SDK, tmp_path: Path
) -> None:
    key_file, key_id = make_key_file(tmp_path)
    upstream.default = script.error_reply(529, "overloaded_error", "busy")
    second_upstream.script(script.reply(script.message([{"type": "text", "text": "backup"}])))
    config = anthropic_config(upstream)
    config["providers"]["second"] = {**config["providers"]["anth"], "base_url": second_upstream.url}
    config["providers"]["third"] = {**config["providers"]["anth"], "base_url": second_upstream.url}
    routes = [{"provider": name, "model": f"{name}-model"} for name in ("anth", "third", "second")]
    config["models"]["claude-test"]["routes"] = routes
    async with (
        running_gateway(build_config(private(config, key_file))) as (url, _),
        running_proxy(url, PinnedKeys([key_id]), GATEWAY_KEY) as (proxy, _),
    ):
        response = await sdk(proxy, key="unused").messages.with_raw_response.create(
            model="claude-test", extra_body={"allowed_providers": ["anth", "second"]}, **REQUEST
        )
    message = await response.parse()
    assert first_text(message) == "backup"
    assert response.headers["x-messagegate-provider"] == "second"
    assert len(upstream.received) == 2  # tried twice, as without privacy mode
    (received,) = second_upstream.received
    assert received.json["model"] == "second-model"
    assert received.json["system"] == REQUEST["system"]
    assert "allowed_providers" not in received.json


async def test_events_reordered_on_the_wire_end_the_stream_with_a_clear_error(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    key_file, key_id = make_key_file(tmp_path)
    upstream.script(script.stream_reply(script.message([{"type": "text", "text": "one two"}])))
    swapped: list[bool] = []

    def swap_two_deltas(data: bytes) -> bytes:
        events = re.findall(rb"event: content_block_delta\ndata: [^\n]*\n\n", data)
        if len(events) < 2:
            return data
        swapped.append(True)
        marker = b"\x00"
        data = data.replace(events[0], marker, 1).replace(events[1], events[0], 1)
        return data.replace(marker, events[1], 1)

    config = build_config(private(anthropic_config(upstream), key_file))
    async with (
        running_gateway(config) as (url, _),
        Tap(int(url.rsplit(":", 1)[1]), rewrite=swap_two_deltas) as tap,
        running_proxy(tap.url, PinnedKeys([key_id]), GATEWAY_KEY) as (proxy, _),
    ):
        status, _, body = await post(
            proxy, "/v1/messages", {"model": "claude-test", "stream": True, **REQUEST}, key=None
        )
    assert swapped
    assert status == 200
    events = sse_events(body)
    # The chunk that does not open is not relayed, not even its first events.
    assert "content_block_delta" not in [name for name, _ in events]
    name, error = events[-1]
    assert name == "error"
    assert error["error"]["type"] == "api_error"
    assert error["error"]["message"] == "privacy mode: field `index` does not decrypt"


async def test_an_answer_that_is_not_sealed_is_refused_by_the_proxy(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    key_file, key_id = make_key_file(tmp_path)
    upstream.script(script.reply(script.message([{"type": "text", "text": "hi"}])))

    def hide_the_seal(data: bytes) -> bytes:
        return data.replace(b"x-messagegate-privacy: v1\r\n", b"x-messagegate-other-0: v1\r\n")

    config = build_config(private(anthropic_config(upstream), key_file))
    async with (
        running_gateway(config) as (url, _),
        Tap(int(url.rsplit(":", 1)[1]), rewrite=hide_the_seal) as tap,
        running_proxy(tap.url, PinnedKeys([key_id]), GATEWAY_KEY) as (proxy, _),
    ):
        status, _, body = await post(proxy, "/v1/messages", {"model": "claude-test", **REQUEST})
    assert b"x-messagegate-privacy: v1\r\n" in tap.downstream
    assert status == 502
    assert envelope(body) == ("api_error", "privacy mode: the answer was not sealed")


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"model": "claude-test"'])
async def test_a_body_that_is_not_one_json_object_is_refused_by_the_proxy_unsent(
    upstream: FakeUpstream, tmp_path: Path, body: bytes
) -> None:
    key_file, key_id = make_key_file(tmp_path)
    config = build_config(private(anthropic_config(upstream), key_file))
    async with (
        running_gateway(config) as (url, _),
        Tap(int(url.rsplit(":", 1)[1])) as tap,
        running_proxy(tap.url, PinnedKeys([key_id]), GATEWAY_KEY) as (proxy, _),
    ):
        registered = len(tap.upstream)
        status, _, answer = await post(proxy, "/v1/messages", body, key=None)
        sent = bytes(tap.upstream[registered:])
    kind, message = envelope(answer)
    assert (status, kind) == (400, "invalid_request_error")
    assert message.startswith("body is not a JSON object")
    assert b"/v1/messages" not in sent
    assert upstream.received == []


async def test_a_pretty_printed_body_is_sealed_as_sent_and_routed_as_its_json(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    key_file, key_id = make_key_file(tmp_path)
    upstream.script(script.reply(script.message([{"type": "text", "text": ANSWER_MARKER}])))
    config = build_config(private(anthropic_config(upstream), key_file))
    pretty = orjson.dumps({"model": "claude-test", **REQUEST}, option=orjson.OPT_INDENT_2)
    async with (
        running_gateway(config) as (url, _),
        Tap(int(url.rsplit(":", 1)[1])) as tap,
        running_proxy(tap.url, PinnedKeys([key_id]), GATEWAY_KEY) as (proxy, _),
    ):
        status, _, answer = await post(proxy, "/v1/messages", pretty, key=None)
    assert status == 200
    assert orjson.loads(answer)["content"][0]["text"] == ANSWER_MARKER
    assert upstream.received[0].json["system"] == REQUEST["system"]
    assert upstream.received[0].json["messages"] == REQUEST["messages"]
    assert MARKER.encode() not in tap.seen
