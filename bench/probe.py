"""Issue 6's bare probe: the minimal proxy path, run beside the gateway as this machine's yardstick.

Issue 6 set its targets against this probe measured on its own machine (8,100 req/s at 0.12 ms of
CPU a request at concurrency 64, +0.24 ms p50 at concurrency 1). The probe reads the body, parses
it with orjson, translates it, makes one pooled aiohttp call upstream, translates the answer back,
and runs as raw ASGI on uvicorn with uvloop and httptools. It does nothing else: no validation,
auth, routing, logging or metrics. Measured in the same run as the gateway, it shows how fast the
machine is that day, and what the gateway's features cost on top of the minimal path.

The issue's probe served non-streaming requests to an OpenAI-compatible upstream; this one also
streams, and serves the Anthropic route, in the same minimal way: an Anthropic upstream's bytes are
relayed as they are, an OpenAI stream is translated one upstream read at a time.

    python -m bench.probe --port 8070 --api-key KEY --openai MODEL=URL --anthropic MODEL=URL
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

import aiohttp
import orjson
import uvicorn

from bench.replies import OPENAI_MODEL

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_ANTHROPIC_VERSION = "2023-06-01"
_JSON_HEADER = {"content-type": "application/json"}
_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def to_openai(request: dict[str, Any], model: str, stream: bool) -> dict[str, Any]:
    """A Messages request as a Chat Completions request: text, tool calls and tool results."""
    messages: list[dict[str, Any]] = []
    system = request.get("system")
    if system:
        messages.append({"role": "system", "content": _text(system)})
    for message in request["messages"]:
        messages += _openai_messages(message["role"], message["content"])
    out: dict[str, Any] = {
        "model": model,
        "max_tokens": request["max_tokens"],
        "messages": messages,
        "stream": stream,
    }
    if stream:
        out["stream_options"] = {"include_usage": True}
    if "temperature" in request:
        out["temperature"] = request["temperature"]
    if request.get("tools"):
        out["tools"] = [_openai_tool(tool) for tool in request["tools"]]
    return out


def _text(content: str | list[dict[str, Any]]) -> str:
    if isinstance(content, str):
        return content
    return "".join(block["text"] for block in content if block["type"] == "text")


def _openai_messages(role: str, content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    out = [
        {"role": "tool", "tool_call_id": block["tool_use_id"], "content": _text(block["content"])}
        for block in content
        if block["type"] == "tool_result"
    ]
    message: dict[str, Any] = {"role": role, "content": _text(content)}
    calls = [_openai_call(block) for block in content if block["type"] == "tool_use"]
    if calls:
        message["tool_calls"] = calls
    if message["content"] or calls:
        out.append(message)
    return out


def _openai_call(block: dict[str, Any]) -> dict[str, Any]:
    arguments = orjson.dumps(block["input"]).decode()
    function = {"name": block["name"], "arguments": arguments}
    return {"id": block["id"], "type": "function", "function": function}


def _openai_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = {
        "name": tool["name"],
        "description": tool.get("description", ""),
        "parameters": tool["input_schema"],
    }
    return {"type": "function", "function": function}


def to_anthropic(completion: dict[str, Any], model: str) -> dict[str, Any]:
    """A Chat Completions answer as a Messages answer."""
    choice = completion["choices"][0]
    message = choice["message"]
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        function = call["function"]
        arguments = orjson.loads(function["arguments"] or "{}")
        content.append(
            {"type": "tool_use", "id": call["id"], "name": function["name"], "input": arguments}
        )
    usage = completion.get("usage") or {}
    return {
        "id": f"msg_{completion['id']}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _STOP_REASONS.get(choice.get("finish_reason"), "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage.get("prompt_tokens", 0),
            "output_tokens": usage.get("completion_tokens", 0),
        },
    }


class Probe:
    """The raw ASGI app: one upstream URL per model name, one pooled aiohttp session."""

    def __init__(self, openai: dict[str, str], anthropic: dict[str, str], api_key: str) -> None:
        self.openai = openai
        self.anthropic = anthropic
        self.openai_headers = {"authorization": f"Bearer {api_key}", **_JSON_HEADER}
        self.anthropic_headers = {
            "x-api-key": api_key,
            "anthropic-version": _ANTHROPIC_VERSION,
            **_JSON_HEADER,
        }
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._proxy(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _proxy(self, receive: Receive, send: Send) -> None:
        assert self.session is not None
        raw = await _read_body(receive)
        request = orjson.loads(raw)
        model, stream = request.get("model"), request.get("stream", False)
        if model in self.anthropic:
            post = self.session.post(
                self.anthropic[model], data=raw, headers=self.anthropic_headers
            )
        elif model in self.openai:
            payload = orjson.dumps(to_openai(request, OPENAI_MODEL, stream))
            post = self.session.post(self.openai[model], data=payload, headers=self.openai_headers)
        else:
            await _respond(send, 404, _error("not_found_error"))
            return
        async with post as answer:
            if answer.status != 200:
                await _respond(send, 502, _error("api_error"))
            elif model in self.anthropic:
                await _relay(answer, send, stream)
            elif stream:
                await _translate_stream(answer, send, model)
            else:
                await _respond(send, 200, to_anthropic(orjson.loads(await answer.read()), model))


async def _relay(answer: aiohttp.ClientResponse, send: Send, stream: bool) -> None:
    """An Anthropic upstream's answer, relayed as it arrives."""
    headers = _SSE_HEADERS if stream else _JSON_HEADERS
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    async for data in answer.content.iter_any():
        await send({"type": "http.response.body", "body": data, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _translate_stream(answer: aiohttp.ClientResponse, send: Send, model: str) -> None:
    """An OpenAI stream as a Messages stream, one upstream read at a time."""
    await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
    stream = StreamTranslator(model)
    async for data in answer.content.iter_any():
        await send({"type": "http.response.body", "body": stream.feed(data), "more_body": True})
    await send({"type": "http.response.body", "body": stream.finish()})


class StreamTranslator:
    """OpenAI stream bytes in, Messages events out: one text block, the stop reason, the usage."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.pending = b""
        self.started = False
        self.stop_reason = "end_turn"
        self.output_tokens = 0

    def feed(self, data: bytes) -> bytes:
        lines = (self.pending + data).split(b"\n")
        self.pending = lines.pop()
        out = []
        for line in lines:
            if line.startswith(b"data: {"):
                out += self._chunk(orjson.loads(line[6:]))
        return b"".join(out)

    def finish(self) -> bytes:
        events = [self._start()] if not self.started else []
        events.append(_event("content_block_stop", {"index": 0}))
        delta = {"stop_reason": self.stop_reason, "stop_sequence": None}
        usage = {"output_tokens": self.output_tokens}
        events.append(_event("message_delta", {"delta": delta, "usage": usage}))
        events.append(_event("message_stop", {}))
        return b"".join(events)

    def _chunk(self, chunk: dict[str, Any]) -> list[bytes]:
        out = [] if self.started else [self._start()]
        for choice in chunk.get("choices") or []:
            text = choice["delta"].get("content")
            if text:
                delta = {"index": 0, "delta": {"type": "text_delta", "text": text}}
                out.append(_event("content_block_delta", delta))
            if choice.get("finish_reason"):
                self.stop_reason = _STOP_REASONS.get(choice["finish_reason"], "end_turn")
        if chunk.get("usage"):
            self.output_tokens = chunk["usage"].get("completion_tokens", 0)
        return out

    def _start(self) -> bytes:
        self.started = True
        message: dict[str, Any] = {
            "id": "msg_probe",
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        block = {"index": 0, "content_block": {"type": "text", "text": ""}}
        start = _event("message_start", {"message": message})
        return start + _event("content_block_start", block)


def _event(name: str, data: dict[str, Any]) -> bytes:
    payload = orjson.dumps({"type": name, **data})
    return b"event: " + name.encode() + b"\ndata: " + payload + b"\n\n"


def _error(kind: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": "probe: " + kind}}


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(send: Send, status: int, payload: dict[str, Any]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _JSON_HEADERS})
    await send({"type": "http.response.body", "body": orjson.dumps(payload)})


def _route(text: str) -> tuple[str, str]:
    model, separator, url = text.partition("=")
    if not separator:
        raise argparse.ArgumentTypeError(f"expected MODEL=URL, got {text!r}")
    return model, url


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.probe",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", required=True, help="the upstreams' key")
    for kind, url in (("openai", "Chat Completions"), ("anthropic", "Messages")):
        parser.add_argument(
            f"--{kind}", type=_route, action="append", default=[], help=f"MODEL=URL of {url}"
        )
    args = parser.parse_args(argv)
    app = Probe(dict(args.openai), dict(args.anthropic), args.api_key)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        proxy_headers=False,
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
