"""Privacy mode's event streams: each SSE ``data:`` object sealed field by field, in sequence;
``event:`` lines and error events stay clear. Pure."""

from __future__ import annotations

import orjson

from messagegate.privacy.codec import (
    ANSWER,
    ANSWER_CLEAR,
    CodecError,
    ExchangeCipher,
    RawFields,
    raw_fields,
)

_DATA = b"data: "
_ERROR_TYPE = b'"error"'
# Searches bytes with `find`, not `in`: on CPython 3.11 `in` first tries its operand as an
# integer, and the TypeError it builds and drops costs ~1,800 instructions (callgrind).
# A stream's bytes held back while they end in no complete event, at most.
MAX_PENDING_BYTES = 16 * 1024 * 1024


class EventSealer:
    """The gateway's side: seals whole events (what the relay writes is whole events), each
    field's value as the bytes it is in the event."""

    __slots__ = ("_cipher", "seq")

    def __init__(self, cipher: ExchangeCipher) -> None:
        self._cipher = cipher
        self.seq = 0

    def seal(self, chunk: bytes) -> bytes:
        blocks = chunk.split(b"\n\n")
        return b"\n\n".join([self._block(block) if block else block for block in blocks])

    def _block(self, block: bytes) -> bytes:
        head, data = _split(block)
        if data is None:
            return block
        fields = _fields(data)
        if fields is None or _passes_clear(fields):
            return block
        sealed = self._cipher.seal_fields(fields, ANSWER, self.seq, ANSWER_CLEAR)
        self.seq += 1
        return head + _DATA + sealed


class EventOpener:
    """The proxy's side: takes the stream in any chunks, returns the whole events it opened."""

    __slots__ = ("_cipher", "_pending", "seq")

    def __init__(self, cipher: ExchangeCipher) -> None:
        self._cipher = cipher
        self._pending = b""
        self.seq = 0

    def feed(self, chunk: bytes) -> bytes:
        data = self._pending + chunk
        end = data.rfind(b"\n\n")
        if end < 0:
            if len(data) > MAX_PENDING_BYTES:
                raise CodecError("an event is larger than the stream allows")
            self._pending = data
            return b""
        self._pending = data[end + 2 :]
        return b"".join([self._block(b) + b"\n\n" for b in data[:end].split(b"\n\n") if b])

    def finish(self) -> None:
        if self._pending.strip():
            raise CodecError("the stream ended inside an event")

    def _block(self, block: bytes) -> bytes:
        head, data = _split(block)
        if data is None:
            return block
        try:
            fields = _fields(data)
        except ValueError:
            raise CodecError(f"event {self.seq} is not JSON") from None
        if fields is None or _passes_clear(fields):
            return block
        opened = self._cipher.open_fields(fields, ANSWER, self.seq, ANSWER_CLEAR)
        self.seq += 1
        if opened.find(b"\n") >= 0:  # JSON's whitespace, which one data line cannot hold
            opened = orjson.dumps(orjson.loads(opened))
        return head + _DATA + opened


def _split(block: bytes) -> tuple[bytes, bytes | None]:
    """The event's lines before its data, and its data (its ``data:`` lines joined)."""
    start = block.find(_DATA)
    if start < 0 or (start > 0 and block[start - 1] != 0x0A):
        return block, None
    data = block[start + 6 :]
    if data.find(b"\n") < 0:  # the usual event: one data line, the last
        return block[:start], data
    lines = block[start:].split(b"\n")
    return block[:start], b"\n".join(line.removeprefix(_DATA) for line in lines)


def _fields(data: bytes) -> RawFields | None:
    """The event's fields; None when its data is JSON but no object (nothing to seal);
    ValueError when it is no JSON."""
    try:
        return raw_fields(data)
    except ValueError:
        orjson.loads(data)
        return None


def _passes_clear(fields: RawFields) -> bool:
    """Errors stay readable; an event with nothing to seal (ping, message_stop) takes no
    sequence number, so the gateway's pings, sent by a timer, need no place in the order."""
    if fields.keys() <= ANSWER_CLEAR:
        return True
    kind = fields.get("type")
    if kind is None:
        return False
    value = bytes(kind)
    # A string spelt with escapes is read as JSON reads it.
    return value == _ERROR_TYPE or (value.find(b"\\") >= 0 and orjson.loads(value) == "error")
