"""What the gateway takes from uvicorn, checked against the installed uvicorn's own source.

`CoalescingTransport` stands in for the socket's transport under uvicorn's httptools protocol, and
`HttpProtocol` overrides some of that protocol's methods and reads some of its state. An upgrade
that renames one of those, or calls a transport method the wrapper does not forward, would break
streaming silently; these tests name what changed instead (pyproject pins the tested range).
"""

from __future__ import annotations

import ast
import asyncio
import inspect
from collections.abc import Iterator
from importlib.metadata import version
from types import ModuleType
from typing import Any
from unittest import mock

import pytest
import uvicorn
from uvicorn.protocols import utils
from uvicorn.protocols.http import flow_control, httptools_impl
from uvicorn.server import ServerState

from messagegate.server.coalescing import CoalescingTransport
from messagegate.server.http_protocol import HttpProtocol

_PROTOCOL = httptools_impl.HttpToolsProtocol
_CYCLE = httptools_impl.RequestResponseCycle


def _tree(module: ModuleType) -> ast.Module:
    return ast.parse(inspect.getsource(module))


def _transport_calls(module: ModuleType) -> Iterator[tuple[str, int]]:
    """(method, line) for each ``<...>transport.method(`` call in `module`."""
    for node in ast.walk(_tree(module)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value
        name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
        if name in ("transport", "_transport"):
            yield node.func.attr, node.lineno


def _assigned(cls: type, method: str = "__init__") -> set[str]:
    """Attributes `cls.method` sets on ``self``."""
    tree = ast.parse(inspect.cleandoc("\n" + inspect.getsource(getattr(cls, method))))
    names = set()
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else []
        targets += [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            if isinstance(target, ast.Attribute) and getattr(target.value, "id", "") == "self":
                names.add(target.attr)
    return names


def test_uvicorn_is_within_the_tested_range() -> None:
    major, minor = (int(part) for part in version("uvicorn").split(".")[:2])
    assert (major, minor) == (0, 55), "pyproject pins uvicorn>=0.55,<0.56: the range tested"


@pytest.mark.parametrize("module", [httptools_impl, flow_control, utils], ids=lambda m: m.__name__)
def test_every_transport_call_of_uvicorn_is_forwarded_by_the_coalescing_transport(
    module: ModuleType,
) -> None:
    calls = list(_transport_calls(module))
    assert calls, f"{module.__name__} calls no transport method any more: read it again"
    missing = {
        f"{name} (line {line})"
        for name, line in calls
        if not callable(getattr(CoalescingTransport, name, None))
    }
    assert not missing, f"{module.__name__} calls transport methods not forwarded: {missing}"


# The protocol methods HttpProtocol overrides (calling uvicorn's own): uvicorn must still have
# each, with the same parameters, and call them itself.
_OVERRIDDEN = [
    "connection_made",
    "connection_lost",
    "data_received",
    "on_headers_complete",
    "pause_writing",
    "resume_writing",
    "send_400_response",
]


@pytest.mark.parametrize("name", _OVERRIDDEN)
def test_each_overridden_method_still_exists_in_uvicorn_with_its_parameters(name: str) -> None:
    assert name in vars(HttpProtocol), f"HttpProtocol no longer overrides {name}: update the list"
    theirs = getattr(_PROTOCOL, name, None)
    assert theirs is not None, f"uvicorn's HttpToolsProtocol has no {name} any more"
    ours = getattr(HttpProtocol, name)
    assert list(inspect.signature(ours).parameters) == list(inspect.signature(theirs).parameters), (
        f"uvicorn changed the parameters of {name}"
    )


def _statements(function: Any) -> list[str]:
    """A function's statements, as source, with the cycle's class name and comments left out."""
    tree = ast.parse(inspect.cleandoc("\n" + inspect.getsource(function)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    text = [ast.unparse(node) for node in body if not isinstance(node, ast.Expr)]
    return [line.replace("RequestResponseCycle(", "HeadCycle(") for line in text]


def test_the_protocol_begins_a_cycle_as_uvicorn_does() -> None:
    # HttpProtocol._begin_cycle is uvicorn's on_headers_complete building a HeadCycle: what
    # uvicorn's does must still be what it does (an upgrade that changes it fails here).
    ours = " ".join(_statements(HttpProtocol._begin_cycle))
    for name in ("parse_url", "_should_upgrade", "limit_concurrency", "service_unavailable"):
        assert name in ours
    uvicorns = _statements(_PROTOCOL.on_headers_complete)
    constructed = next(line for line in uvicorns if "HeadCycle(" in line)
    keywords = constructed[constructed.index("HeadCycle(") :]
    assert keywords.replace("self.parser.", "parser.") in ours.replace("self.parser.", "parser.")
    assert any("_start_asgi_task(self.cycle, app)" in line for line in uvicorns)
    assert any("self.pipeline.appendleft((self.cycle, app))" in line for line in uvicorns)


def test_uvicorn_answers_a_parser_error_through_send_400_response() -> None:
    # A head over the header-count limit is refused by raising in on_headers_complete: uvicorn
    # must turn the parser's error into a call of send_400_response, which answers 431 instead.
    source = inspect.getsource(_PROTOCOL.data_received)
    assert "except httptools.HttpParserError" in source
    assert "self.send_400_response(" in source


def test_the_protocol_and_cycle_state_the_gateway_reads_is_still_set_by_uvicorn() -> None:
    protocol_state = _assigned(_PROTOCOL) | _assigned(_PROTOCOL, "connection_made")
    protocol_state |= _assigned(_PROTOCOL, "on_message_begin")
    protocol_state |= _assigned(_PROTOCOL, "on_headers_complete")
    wanted = {"app_state", "connections", "cycle", "flow", "headers", "loop", "scope", "transport"}
    assert wanted <= protocol_state, f"uvicorn no longer sets {wanted - protocol_state}"
    cycle_state = _assigned(_CYCLE)
    wanted = {"chunked_encoding", "disconnected", "keep_alive", "more_body", "scope"}
    wanted |= {"response_complete", "response_started"}
    assert wanted <= cycle_state, f"uvicorn's cycle no longer has {wanted - cycle_state}"
    assert "write_paused" in _assigned(flow_control.FlowControl)
    # `BodyWriter.begin` turns off chunked framing by setting this before the response starts.
    send = inspect.getsource(_CYCLE.send)
    assert "if self.chunked_encoding is None and" in send


async def test_a_connection_keeps_to_cpythons_fast_attribute_layout() -> None:
    """CPython 3.11 shares the attribute keys of at most 30 instance attributes: a protocol with
    more reads every attribute (uvicorn's own included) the slow way. The gateway adds two."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    config = uvicorn.Config(app, http=HttpProtocol, lifespan="off")
    config.load()
    protocol = HttpProtocol(config=config, server_state=ServerState(), app_state={})
    transport = mock.Mock(spec=asyncio.Transport)
    transport.get_extra_info.return_value = None
    transport.is_closing.return_value = False
    protocol.connection_made(transport)
    protocol.data_received(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
    await asyncio.sleep(0)
    protocol.state.listener = mock.Mock()
    assert len(vars(protocol)) <= 30, sorted(vars(protocol))
    protocol.connection_lost(None)
