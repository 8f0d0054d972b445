"""uvicorn's request-response cycle with its response head checked by byte tables: uvicorn runs
two regular expression searches per header (~2,700 instructions each for a rate-limit header); a
`bytes.translate` marking the same forbidden bytes refuses what they refuse at a fraction of it.

A response start may also carry ``HEAD_LINES``: header lines the gateway built itself (its
rate-limit headers), written as they are, after the checked ones; a server advertises that it
takes them in the scope's ``extensions``."""

from __future__ import annotations

from collections.abc import Mapping
from itertools import chain, repeat
from typing import Any, cast

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle

from messagegate.limits.limiter import header_pairs

# The response start's key (and the scope extension) of lines "name: value\r\n" that are valid
# as they are and neither frame the body nor close the connection.
HEAD_LINES = "messagegate.head_lines"

# The bytes uvicorn's HEADER_RE and HEADER_VALUE_RE refuse in a header's name and value.
NAME_REFUSED = bytes([*range(0x20), 0x7F, *b'()<>@,;:[]={} \t\\"'])
VALUE_REFUSED = bytes([*range(0x09), *range(0x0A, 0x20), 0x7F])
# Tables turning a refused byte into 0 and any other into 1: a table lookup per byte, where
# `translate(None, allowed)` would first build its table from the 220 allowed bytes each call.
_NAME_MARKS = bytes(0 if b in NAME_REFUSED else 1 for b in range(256))
_VALUE_MARKS = bytes(0 if b in VALUE_REFUSED else 1 for b in range(256))


class HeadCycle(RequestResponseCycle):
    """Built by the protocol in uvicorn's stead (a cycle made uvicorn's and given this class by
    `__class__` would read every attribute ~7x slower). Everything but the usual response head is
    uvicorn's own."""

    async def send(self, message: ASGISendEvent) -> None:
        fields: Mapping[str, Any] = message  # no TypedDict of uvicorn's names HEAD_LINES
        lines: bytes = fields.get(HEAD_LINES, b"")
        if (
            self.response_started
            or self.disconnected
            or self.flow.write_paused
            or self.access_log
            or message["type"] != "http.response.start"
        ):
            if lines:  # uvicorn's own head takes pairs
                headers = [*fields.get("headers", ()), *header_pairs(lines)]
                message = cast(ASGISendEvent, {**fields, "headers": headers})
            await super().send(message)
            return
        headers = [*self.default_headers, *message.get("headers", ())]
        self._write_head(message["status"], headers, lines)

    def _write_head(self, status: int, headers: list[tuple[bytes, bytes]], lines: bytes) -> None:
        """uvicorn's head, as its `send` writes it, and `lines` as they are."""
        self.response_started = True
        self.waiting_for_100_continue = False
        names = [name for name, _ in headers]
        values = [value for _, value in headers]
        # All names, then all values, checked at once: a Python-level step per header costs more
        # than the bytes' lookups.
        if 0 in b"".join(names).translate(_NAME_MARKS):
            raise RuntimeError("Invalid HTTP header name.")
        if 0 in b"".join(values).translate(_VALUE_MARKS):
            raise RuntimeError("Invalid HTTP header value.")
        # Lowered at once (a name holds no newline: checked above).
        names = b"\n".join(names).lower().split(b"\n")
        has_connection_close = False
        if b"transfer-encoding" in names or b"connection" in names:
            has_connection_close = self._mind_headers(names, values)
        elif b"content-length" in names and self.chunked_encoding is None:
            # The first content-length counts, as in uvicorn's loop.
            self.expected_content_length = int(values[names.index(b"content-length")].decode())
            self.chunked_encoding = False
        # The separators repeat without end: the names and values set the length.
        content = [
            STATUS_LINE[status],
            *chain.from_iterable(zip(names, _COLONS, values, _ENDS, strict=False)),
            lines,
        ]
        if not self.keep_alive and not has_connection_close:
            content.append(b"connection: close\r\n")
        if (
            self.chunked_encoding is None
            and self.scope["method"] != "HEAD"
            and status not in (204, 304)
        ):
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        self.transport.write(b"".join(content))

    def _mind_headers(self, names: list[bytes], values: list[bytes]) -> bool:
        """uvicorn's loop over the headers that set the body's framing and the connection's
        end, in their order (rare: the gateway itself sends neither); whether one closes."""
        has_connection_close = False
        for name, value in zip(names, values, strict=True):
            if name == b"content-length" and self.chunked_encoding is None:
                self.expected_content_length = int(value.decode())
                self.chunked_encoding = False
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self.expected_content_length = 0
                self.chunked_encoding = True
            elif name == b"connection" and b"close" in [
                token.lower().strip() for token in value.split(b",")
            ]:
                self.keep_alive = False
                has_connection_close = True
        return has_connection_close


_COLONS = repeat(b": ")
_ENDS = repeat(b"\r\n")
