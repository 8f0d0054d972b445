"""What every step of reading a config knows: the file's name (for errors) and the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from messagegate.config.problems import ConfigError, explain, fail, join

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Context:
    source: str
    environ: Mapping[str, str]

    def fail(self, path: str, problem: str) -> ConfigError:
        return fail(self.source, path, problem)

    def convert(self, raw: object, shape: type[_T], path: str = "") -> _T:
        """`raw` decoded as `shape`; a mismatch is a ConfigError naming its key path."""
        try:
            return msgspec.convert(raw, shape)
        except msgspec.ValidationError as error:
            where, problem = explain(error, shape, raw)
            raise self.fail(join(path, where) if where else path, problem) from None

    def overlay(self, base: _T, written: Mapping[str, Any], path: str) -> _T:
        """The section `base` with the keys `written` at `path` over it."""
        merged = msgspec.structs.asdict(base) | dict(written)  # type: ignore[arg-type]
        return self.convert(merged, type(base), path)
