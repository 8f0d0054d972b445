"""Config errors: msgspec's validation errors told as the file's dotted key path and problem."""

from __future__ import annotations

import re
import types
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec

_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_FIELD = re.compile(r"Object (missing required|contains unknown) field `([^`]+)`")
_MISMATCH = re.compile(r"Expected `([^`]+)`, got `([^`]+)`")
_BOUND = re.compile(r"Expected `(int|float)` (>=|>|<=|<) (\S+)")
_LENGTH = re.compile(r"Expected `(str|array|object)` of length >= (\d+)")
_ENUM = re.compile(r"Invalid enum value (.+)")
# msgspec's names for JSON-ish types, as the errors say them.
_TYPE_WORDS = {"object": "a mapping", "array": "a list", "null": "nothing"}


class ConfigError(Exception):
    """The config file is invalid; the message names the file, the key path and the problem."""


def fail(source: str, path: str, problem: str) -> ConfigError:
    return ConfigError(f"{source}: {path or '<top>'}: {problem}")


def join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def location(text: str) -> tuple[str, str]:
    """msgspec's ``Expected ... - at `$.a[0].b``` as (problem, ``a.0.b``)."""
    what, _, where = text.partition(" - at `")
    path = where.rstrip("`").removeprefix("$")
    return what, re.sub(r"\[(\d+)\]", r".\1", path).lstrip(".")


def explain(error: msgspec.ValidationError, shape: Any, raw: object) -> tuple[str, str]:
    """(dotted key path, problem) of a failed ``msgspec.convert(raw, shape)``."""
    what, _, where = str(error).partition(" - at `")
    spot = _Spot(shape, raw)
    for segment in _segments(where.rstrip("`").removeprefix("$")):
        spot.enter(segment)
    field = _FIELD.fullmatch(what)
    if field is not None:
        path = join(spot.path, field.group(2))
        if field.group(1) == "missing required":
            return path, "is required"
        return path, f"unknown key (expected one of: {', '.join(sorted(spot.keys()))})"
    return spot.path, _problem(what, spot)


def _segments(where: str) -> Iterator[str | int | None]:
    """The path's keys: a name, a list index, or None for a mapping's key msgspec doesn't say."""
    for name, index in _SEGMENT.findall(where):
        if name:
            yield name
        else:
            yield None if index == "..." else int(index)


def _problem(what: str, spot: _Spot) -> str:
    mismatch = _MISMATCH.fullmatch(what)
    if mismatch is not None:
        expected, got = mismatch.groups()
        if got == "null" and spot.required:
            return "is required"
        wanted = [_TYPE_WORDS.get(t, t) for t in expected.split(" | ") if t != "null"]
        return f"expected {' or '.join(wanted)}, got {_TYPE_WORDS.get(got, got)}"
    bound = _BOUND.fullmatch(what)
    if bound is not None:
        return _bound_problem(*bound.groups())
    length = _LENGTH.fullmatch(what)
    if length is not None:
        kind, least = length.groups()
        if kind == "str":
            return "must not be empty" if least == "1" else f"must be at least {least} characters"
        return f"expected a non-empty {_TYPE_WORDS[kind].removeprefix('a ')}"
    enum = _ENUM.fullmatch(what)
    if enum is not None:
        return f"expected {_choices(spot.literal_values())}, got {enum.group(1)}"
    return what[:1].lower() + what[1:]


def _bound_problem(kind: str, op: str, limit: str) -> str:
    bound = (op, float(limit))
    if bound == (">", 0.0) or (kind == "int" and bound == (">=", 1.0)):
        return "must be a positive integer" if kind == "int" else "must be a positive number"
    if bound == (">=", 0.0):
        return "must not be negative"
    words = {">=": "at least", ">": "more than", "<=": "at most", "<": "less than"}
    return f"must be {words[op]} {limit}"


def _choices(values: tuple[object, ...]) -> str:
    quoted = [repr(v) for v in values]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


class _Spot:
    """Walks the file's shape and its raw tree side by side along an error's path."""

    def __init__(self, shape: Any, raw: object) -> None:
        self.shape = shape
        self.raw = raw
        self.path = ""
        self.required = False

    def enter(self, segment: str | int | None) -> None:
        if isinstance(segment, str):
            info = {f.encode_name: f for f in msgspec.structs.fields(self._struct())}[segment]
            self.shape, self.required = info.type, info.required
        else:
            container = self._member(lambda t: _origin(t) in (list, tuple, dict))
            self.shape, self.required = get_args(container)[-1], True
            if segment is None:
                segment = self._failing_key(self.shape)
        if isinstance(self.raw, dict):
            self.raw = self.raw.get(segment)
        elif isinstance(self.raw, list) and isinstance(segment, int):
            self.raw = self.raw[segment]
        self.path = join(self.path, segment)

    def keys(self) -> list[str]:
        return [f.encode_name for f in msgspec.structs.fields(self._struct())]

    def literal_values(self) -> tuple[object, ...]:
        return get_args(self._member(lambda t: _origin(t) is Literal))

    def _struct(self) -> Any:
        return self._member(lambda t: isinstance(t, type) and issubclass(t, msgspec.Struct))

    def _failing_key(self, value_shape: Any) -> str:
        """The first entry that fails: msgspec stops there, but names no mapping key."""
        assert isinstance(self.raw, dict)
        for key, value in self.raw.items():
            try:
                msgspec.convert(value, value_shape)
            except msgspec.ValidationError:
                return str(key)
        raise AssertionError("no entry of the mapping fails")

    def _member(self, wanted: Callable[[Any], bool]) -> Any:
        for member in _members(self.shape):
            if wanted(member):
                return member
        raise AssertionError(f"{self.shape!r} has no such member")


def _origin(shape: Any) -> Any:
    return get_origin(shape)


def _members(shape: Any) -> Iterator[Any]:
    """A type with its Annotated and Union (X | None) wrappings taken off."""
    origin = get_origin(shape)
    if origin is Annotated:
        yield from _members(get_args(shape)[0])
    elif origin in (Union, types.UnionType):
        for member in get_args(shape):
            yield from _members(member)
    else:
        yield shape
