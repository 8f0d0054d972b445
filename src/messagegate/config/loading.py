"""Reading a config file: YAML, then ``${VAR}`` substitution, then its shape, then the checks."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from messagegate.config.context import Context
from messagegate.config.environment import substitute
from messagegate.config.objects import Config
from messagegate.config.problems import ConfigError
from messagegate.config.resolve import resolve_config
from messagegate.config.schema import ConfigSpec


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, substitute ``${VAR}`` and validate a config file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    return parse_config(raw, source=str(path), environ=os.environ if environ is None else environ)


def parse_config(raw: object, *, source: str, environ: Mapping[str, str]) -> Config:
    """The config a parsed YAML tree says; ConfigError names the file, key path and problem."""
    ctx = Context(source, environ)
    spec = ctx.convert(substitute(raw, "", source, environ), ConfigSpec)
    return resolve_config(ctx, spec)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """What is wrong and where, without PyYAML's quote of the offending line: that line may hold
    a key."""
    problem = getattr(error, "problem", None) or "syntax error"
    mark = getattr(error, "problem_mark", None)
    if mark is None:
        return str(problem)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
