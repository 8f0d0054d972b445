"""The longest prefix of a text that starts a JSON object, released as it arrives."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import ClassVar

_PLAIN_RUN = re.compile(r'[^"\\\x00-\x1f]+')
_ESCAPABLE = frozenset('"\\/bfnrtu')
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_LITERALS = {"t": "true", "f": "false", "n": "null"}
_NUMBER_CHARS = frozenset("0123456789+-.eE")
_NUMBER_PREFIX = re.compile(r"-?(?:(?:0|[1-9]\d*)(?:\.\d*)?(?:(?<=\d)[eE][+-]?\d*)?)?")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_WHITESPACE = frozenset(" \t\n\r")
_STRING_STATES = frozenset({"string", "escape", "unicode", "low"})


class JsonPrefix:
    """Incrementally accepts the longest prefix of text that starts a JSON object.

    ``feed`` returns the part of its input that is safe to pass on: with ``completion()``
    appended, everything released so far parses. What is not settled yet is held back (a
    member's key until its value starts, a comma until what follows it, half an escape or
    surrogate pair, number or literal); after the object closes, or once the text stops being
    JSON, input is ignored. A lone surrogate escape counts as not JSON: most parsers refuse it.
    """

    _STEPS: ClassVar[dict[str, Callable[[JsonPrefix, str], None]]] = {}

    def __init__(self) -> None:
        self._state = "start"
        self._closers: list[str] = []
        self._held = ""
        self._in_key = False
        self._token = ""  # the number, literal or \u escape being read
        self._high_surrogate = False
        self._dead = False
        self._out: list[str] = []

    @property
    def complete(self) -> bool:
        """The top-level object has closed: nothing further can be added."""
        return self._state == "done"

    def feed(self, text: str) -> str:
        pos = 0
        while pos < len(text) and not self._dead and self._state != "done":
            if self._state == "string":
                run = _PLAIN_RUN.match(text, pos)
                if run is not None:
                    self._emit(run.group())
                    pos = run.end()
                    continue
            self._STEPS[self._state](self, text[pos])
            pos += 1
        released, self._out = "".join(self._out), []
        return released

    def completion(self) -> str:
        """What closes the released text: an open string's quote and the open brackets."""
        in_value_string = self._state in _STRING_STATES and not self._in_key
        return ('"' if in_value_string else "") + "".join(reversed(self._closers))

    def _emit(self, text: str) -> None:
        """String content: a key's waits for its value, a value's goes out (with what's held)."""
        if self._in_key:
            self._held += text
        else:
            self._release(text)

    def _release(self, text: str) -> None:
        self._out.append(self._held + text)
        self._held = ""

    def _die(self) -> None:
        """The text stopped being JSON: drop what is held, keep the state for ``completion``."""
        self._held = ""
        self._dead = True

    def _start(self, ch: str) -> None:
        if ch in _WHITESPACE:
            self._held += ch
        elif ch == "{":
            self._open("{", "}", "object_first")
        else:
            self._die()

    def _open(self, ch: str, closer: str, state: str) -> None:
        self._release(ch)
        self._closers.append(closer)
        self._state = state

    def _close(self, ch: str) -> None:
        if not self._closers or self._closers[-1] != ch:
            self._die()
            return
        self._release(ch)
        self._closers.pop()
        self._state = "after_value" if self._closers else "done"

    def _object_first(self, ch: str) -> None:
        if ch == "}":
            self._close(ch)
        else:
            self._object_next(ch)

    def _object_next(self, ch: str) -> None:
        if ch in _WHITESPACE:
            self._held += ch
        elif ch == '"':
            self._held += ch
            self._in_key, self._state = True, "string"
        else:
            self._die()

    def _string(self, ch: str) -> None:
        if ch == '"':
            self._emit(ch)
            self._state = "colon" if self._in_key else "after_value"
        elif ch == "\\":
            self._held += ch
            self._state = "escape"
        else:
            self._emit(_escaped_control(ch))

    def _escape(self, ch: str) -> None:
        if ch not in _ESCAPABLE or (self._high_surrogate and ch != "u"):
            self._die()
        elif ch == "u":
            self._held += ch
            self._token, self._state = "", "unicode"
        else:
            self._emit(ch)
            self._state = "string"

    def _unicode(self, ch: str) -> None:
        if ch not in _HEX_DIGITS:
            self._die()
            return
        self._held += ch
        self._token += ch
        if len(self._token) == 4:
            self._surrogates(int(self._token, 16))

    def _surrogates(self, code: int) -> None:
        high, low = 0xD800 <= code <= 0xDBFF, 0xDC00 <= code <= 0xDFFF
        if high and not self._high_surrogate:
            self._high_surrogate, self._state = True, "low"  # hold it until its other half
        elif low != self._high_surrogate:
            self._die()
        else:
            self._high_surrogate = False
            self._emit("")
            self._state = "string"

    def _low(self, ch: str) -> None:
        if ch != "\\":
            self._die()
            return
        self._held += ch
        self._state = "escape"

    def _colon(self, ch: str) -> None:
        if ch in _WHITESPACE or ch == ":":
            self._held += ch
            self._state = "value" if ch == ":" else "colon"
        else:
            self._die()

    def _value(self, ch: str) -> None:
        if ch in _WHITESPACE:
            self._held += ch
        elif ch == '"':
            self._release(ch)
            self._in_key, self._state = False, "string"
        elif ch == "{":
            self._open(ch, "}", "object_first")
        elif ch == "[":
            self._open(ch, "]", "array_first")
        elif ch == "-" or ch.isdigit():
            self._token, self._state = "", "number"
            self._number(ch)
        elif ch in _LITERALS:
            self._token, self._state = ch, "literal"
            self._held += ch
        else:
            self._die()

    def _array_first(self, ch: str) -> None:
        if ch == "]":
            self._close(ch)
        else:
            self._value(ch)

    def _number(self, ch: str) -> None:
        candidate = self._token + ch
        if ch in _NUMBER_CHARS and _NUMBER_PREFIX.fullmatch(candidate):
            self._token = candidate
            if _NUMBER.fullmatch(candidate):
                self._release(ch)
            else:
                self._held += ch
        elif _NUMBER.fullmatch(self._token):
            self._state = "after_value"
            self._after_value(ch)
        else:
            self._die()

    def _literal(self, ch: str) -> None:
        expected = _LITERALS[self._token[0]]
        if not expected.startswith(self._token + ch):
            self._die()
            return
        self._token += ch
        self._held += ch
        if self._token == expected:
            self._release("")
            self._state = "after_value"

    def _after_value(self, ch: str) -> None:
        if ch in _WHITESPACE:
            self._release(ch)
        elif ch == ",":
            self._held += ch
            self._state = "object_next" if self._closers[-1] == "}" else "value"
        elif ch in "}]":
            self._close(ch)
        else:
            self._die()


def _escaped_control(ch: str) -> str:
    """Raw control characters are invalid inside JSON strings; some models emit them anyway."""
    return json.dumps(ch)[1:-1] if ch < " " else ch


JsonPrefix._STEPS.update(
    {
        "start": JsonPrefix._start,
        "object_first": JsonPrefix._object_first,
        "object_next": JsonPrefix._object_next,
        "string": JsonPrefix._string,
        "escape": JsonPrefix._escape,
        "unicode": JsonPrefix._unicode,
        "low": JsonPrefix._low,
        "colon": JsonPrefix._colon,
        "value": JsonPrefix._value,
        "array_first": JsonPrefix._array_first,
        "number": JsonPrefix._number,
        "literal": JsonPrefix._literal,
        "after_value": JsonPrefix._after_value,
    }
)
