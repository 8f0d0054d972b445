"""The bench's yardsticks: the bare probe, and a DIRECT its load generator did not hold back."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import aiohttp
import orjson
from bench import body, report
from bench.measure import Row, compare
from bench.probe import Probe, StreamTranslator, to_anthropic, to_openai
from bench.replies import OPENAI_MODEL

from bench_rows import bench_row
from fakes.upstream import FakeUpstream, Reply


def test_the_probe_sends_the_openai_body_that_direct_sends() -> None:
    for stream in (False, True):
        sent = to_openai(body.anthropic_body("bench-openai-zero", stream), OPENAI_MODEL, stream)
        assert sent == body.openai_body(OPENAI_MODEL, stream)


def test_the_probe_answers_a_completion_as_a_message() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    completion = {
        "id": "chatcmpl-1",
        "choices": [
            {"message": {"content": "Hi", "tool_calls": [call]}, "finish_reason": "tool_calls"}
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3},
    }
    message = to_anthropic(completion, "bench-openai-zero")
    assert message["content"] == [
        {"type": "text", "text": "Hi"},
        {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}},
    ]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {"input_tokens": 7, "output_tokens": 3}


async def through_probe(upstream: FakeUpstream, model: str) -> tuple[int, dict[str, Any]]:
    """One non-streaming request through the probe's ASGI app, in process."""
    app = Probe({"bench-openai-zero": f"{upstream.url}/v1/chat/completions"}, {}, "sk-up")
    sent: list[MutableMapping[str, Any]] = []
    request = orjson.dumps(body.anthropic_body(model, False))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": request, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async with aiohttp.ClientSession() as session:
        app.session = session
        await app({"type": "http"}, receive, send)
    return sent[0]["status"], orjson.loads(sent[1]["body"])


async def test_the_probe_sends_the_translated_request_and_answers_in_messages_form(
    upstream: FakeUpstream,
) -> None:
    completion = {
        "id": "chatcmpl-1",
        "choices": [{"message": {"content": "Hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 1},
    }
    upstream.script(Reply(json=completion))
    status, answer = await through_probe(upstream, "bench-openai-zero")
    assert status == 200
    assert answer["content"] == [{"type": "text", "text": "Hi"}]
    [received] = upstream.received
    assert received.path == "/v1/chat/completions"
    assert received.headers["authorization"] == "Bearer sk-up"
    assert received.json == body.openai_body(OPENAI_MODEL, False)


async def test_the_probe_refuses_an_unknown_model_and_reports_a_failed_upstream(
    upstream: FakeUpstream,
) -> None:
    status, answer = await through_probe(upstream, "no-such-model")
    assert (status, answer["error"]["type"]) == (404, "not_found_error")
    assert upstream.received == []
    upstream.script(Reply(status=500, json={"error": "down"}))
    status, answer = await through_probe(upstream, "bench-openai-zero")
    assert (status, answer["error"]["type"]) == (502, "api_error")


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def events(raw: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: ")]


def test_the_probe_translates_a_stream_cut_anywhere() -> None:
    chunks: list[dict[str, Any]] = [
        {"choices": [{"delta": {"content": word}}]} for word in ("The", " fox")
    ]
    chunks.append({"choices": [{"delta": {}, "finish_reason": "length"}]})
    chunks.append({"choices": [], "usage": {"completion_tokens": 2}})
    upstream = b"".join(sse(c) for c in chunks) + b"data: [DONE]\n\n"
    for cut in range(1, len(upstream)):
        stream = StreamTranslator("bench-openai-zero")
        out = stream.feed(upstream[:cut]) + stream.feed(upstream[cut:]) + stream.finish()
        got = events(out)
        assert [e["type"] for e in got] == [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ], cut
        assert "".join(e["delta"]["text"] for e in got[2:4]) == "The fox"
        assert got[5]["delta"]["stop_reason"] == "max_tokens"
        assert got[5]["usage"] == {"output_tokens": 2}


def row(scenario: str, target: str, rps: float, p50_ms: float, cpu_ms: float | None) -> Row:
    return bench_row(scenario, target, rps=rps, p50_ms=p50_ms, cpu_ms=cpu_ms)


def test_each_target_is_shown_as_a_multiple_of_the_probe_there_and_here() -> None:
    rows = [
        row("zero/json/openai/c64", "DIRECT", 20_000, 3.0, None),
        row("zero/json/openai/c64", "probe", 2_000, 30.0, 0.40),
        row("zero/json/openai/c64", "messagegate", 2_200, 28.0, 0.50),
        row("zero/json/openai/c1", "DIRECT", 20_000, 0.05, None),
        row("zero/json/openai/c1", "probe", 2_000, 0.65, 0.5),
        row("zero/json/openai/c1", "messagegate", 2_000, 0.75, 0.5),
    ]
    compare(rows)
    table = report.probe_table(rows)
    assert table is not None
    lines = table.splitlines()[2:]
    # Throughput: 1.10x the probe, where the issue asked for 5,000 / 8,100 = 0.62x.
    assert lines[0].endswith("| 0.62x | 2,000.000 | 2,200.000 | 1.10x | yes |")
    # CPU: 1.25x the probe, where the issue allowed 0.2 / 0.12 = 1.67x.
    assert lines[1].endswith("| 1.67x | 0.400 | 0.500 | 1.25x | yes |")
    # Added p50: +0.70 against +0.60 is 1.17x, where the issue allowed 0.3 / 0.24 = 1.25x.
    assert lines[2].endswith("| 1.25x | 0.600 | 0.700 | 1.17x | yes |")
    assert report.machine_speed(rows) == (
        "DIRECT served 20,000 req/s in zero/json/openai/c64 here; the issue measured"
        " ~50,000 on its machine (0.40x)."
    )


def test_the_targets_table_shows_the_probe_beside_each_target() -> None:
    rows = [
        row("zero/json/openai/c64", "probe", 6_000, 10.0, 0.15),
        row("zero/json/openai/c64", "messagegate", 4_000, 12.0, 0.25),
    ]
    ours, probe = report.checks(rows, []), report.checks(rows, [], report.PROBE)
    lines = report.checks_table(ours, probe).splitlines()
    assert lines[0].endswith("| bare probe | probe met |")
    assert lines[2].endswith("| **no** | missed by 1,000.00 req/s (20%) | 6,000.000 req/s | yes |")
    assert lines[3].endswith("| 0.150 ms/req | yes |")
    assert report.probe_table(rows[1:]) is None


def test_a_256_stream_ratio_is_not_judged_when_direct_was_held_back() -> None:
    # 256 realistic answers of 0.545 s allow ~470/s; DIRECT did 374 (0.80x) here.
    rows = [
        row("realistic/stream/openai/c256", "DIRECT", 374, 677.0, None),
        row("realistic/stream/openai/c256", "messagegate", 409, 616.0, 2.4),
        row("realistic/json/openai/c256", "DIRECT", 466, 549.0, None),
        row("realistic/json/openai/c256", "messagegate", 440, 551.0, 0.5),
    ]
    compare(rows)
    found = {c.what: c for c in report.checks(rows, [])}
    for what in (
        "realistic/stream/openai/c256 vs DIRECT",
        "realistic/stream/openai/c256 added p50",
    ):
        assert not found[what].judged
        assert found[what].note.startswith("DIRECT did 0.796x of the 470/s")
    kept_pace = found["realistic/json/openai/c256 vs DIRECT"]
    # 0.94x of a DIRECT that kept pace: a real miss.
    assert kept_pace.judged
    assert not kept_pace.met
    assert "| not judged |" in report.checks_table(list(found.values()))
