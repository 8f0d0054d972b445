"""``log_format: json``: one object per line, the access object's fixed schema, its trace id."""

from __future__ import annotations

import logging
import sys

import orjson
import pytest
from anthropic.types import MessageParam

import fakes.anthropic_script as script
from fakes.gateway import build_config, running_gateway
from fakes.upstream import FakeUpstream
from helpers import anthropic_config, post
from messagegate.config import ConfigError
from messagegate.telemetry.json_logs import JsonFormatter, trace_id

HELLO: list[MessageParam] = [{"role": "user", "content": "Hello"}]
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SCHEMA = {
    "time",
    "level",
    "logger",
    "method",
    "path",
    "status",
    "duration_ms",
    "request_id",
    "trace_id",
    "key",
    "model",
    "provider",
    "route",
    "attempts",
    "fallback_model",
    "skipped",
    "input_tokens",
    "output_tokens",
    "tokens_estimated",
    "error",
    "stream_error",
    "disconnected",
}


async def test_each_request_is_one_json_object_with_the_fixed_schema(
    upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="messagegate.access")
    upstream.default = script.reply(script.message([{"type": "text", "text": "hi"}]))
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        body = {"model": "claude-test", "max_tokens": 5, "messages": HELLO}
        headers = {"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}
        assert (await post(url, "/v1/messages", body, headers))[0] == 200
        assert (await post(url, "/v1/messages", body | {"model": "nope"}))[0] == 404
    records = [r for r in caplog.records if r.name == "messagegate.access"]
    assert len(records) == 2
    formatter = JsonFormatter()
    lines = [formatter.format(r) for r in records]
    assert all("\n" not in line for line in lines)
    ok, missing = (orjson.loads(line) for line in lines)
    assert set(ok) == SCHEMA
    assert set(missing) == SCHEMA
    assert ok["method"] == "POST"
    assert ok["path"] == "/v1/messages"
    assert ok["status"] == 200
    assert isinstance(ok["duration_ms"], float)
    assert ok["request_id"].startswith("req_")
    assert ok["trace_id"] == TRACE
    assert ok["key"] == "alice"
    assert ok["route"] == "anth/claude-upstream-1"
    assert ok["attempts"] == 1
    assert (ok["input_tokens"], ok["output_tokens"], ok["tokens_estimated"]) == (11, 7, False)
    assert ok["time"].endswith("Z")
    assert missing["status"] == 404
    assert missing["error"] == "not_found_error"
    assert missing["trace_id"] is None
    assert missing["input_tokens"] is None
    # The text line is what it was before.
    assert (
        records[0]
        .getMessage()
        .endswith(
            "key=alice model=claude-test provider=anth route=anth/claude-upstream-1 attempts=1 "
            "tokens=in=11 out=7"
        )
    )


def test_other_records_carry_their_message_and_exception() -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        record = logging.LogRecord(
            "messagegate.error", logging.ERROR, "", 0, "oops %s", ("x",), None
        )
        record.exc_info = sys.exc_info()
    doc = orjson.loads(JsonFormatter().format(record))
    assert doc["message"] == "oops x"
    assert doc["level"] == "ERROR"
    assert "ValueError: broken" in doc["exception"]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"00-{TRACE}-00f067aa0ba902b7-01", TRACE),
        (f"00-{TRACE.upper()}-00f067aa0ba902b7-01", None),
        (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),
        ("00-sk-secret-key-in-the-header", None),
        (None, None),
    ],
)
def test_only_a_well_formed_trace_id_is_logged(header: str | None, expected: str | None) -> None:
    assert trace_id(header) == expected


def test_log_format_is_text_or_json(upstream: FakeUpstream) -> None:
    assert build_config(anthropic_config(upstream)).log_format == "text"
    assert build_config(anthropic_config(upstream, log_format="json")).log_format == "json"
    with pytest.raises(ConfigError, match="log_format: expected 'text' or 'json', got 'xml'"):
        build_config(anthropic_config(upstream, log_format="xml"))
