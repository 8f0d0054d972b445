"""A gateway key's settings (allowed models, limits, budget, expiry, routing defaults): one parser
for the YAML `keys:` entries, the `keys` commands and the admin API, and their JSON form."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

import msgspec

from messagegate.config.problems import explain, join
from messagegate.config.routing_fields import RoutingSettings

Period = Literal["day", "week", "month"]
PERIODS: tuple[Period, ...] = ("day", "week", "month")
BudgetMode = Literal["soft", "hard"]

KEY_FIELDS = frozenset(
    {"models", "rpm", "tpm", "concurrency", "budget", "period", "budget_mode", "expires", "routing"}
)
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Bounds that keep a typo from meaning "unlimited" in practice or overflowing a counter.
_MAX_RATE = 10**9
_MAX_BUDGET_USD = 10**9


class KeyFieldError(ValueError):
    """A key setting is invalid; `field` names it."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name
        self.problem = problem


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """None means no limit. `budget` is USD per `period` (per the key's life without one)."""

    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None
    budget: float | None = None
    period: Period | None = None
    budget_mode: BudgetMode = "soft"
    # Whether any limit is set: the one test a request of an unlimited key pays.
    enabled: bool = field(init=False, compare=False)

    def __post_init__(self) -> None:
        limits = (self.rpm, self.tpm, self.concurrency, self.budget)
        object.__setattr__(self, "enabled", any(v is not None for v in limits))


@dataclass(frozen=True, slots=True)
class KeySettings:
    models: tuple[str, ...] = ()
    limits: KeyLimits = field(default_factory=KeyLimits)
    expires_at: float | None = None
    routing: Mapping[str, Any] = field(default_factory=dict)


def allows(models: tuple[str, ...], name: str) -> bool:
    """Whether an allow-list of globs (empty: everything) admits the model name a client sent."""
    return not models or _allow_list(models).fullmatch(name) is not None


@lru_cache(maxsize=1024)
def _allow_list(models: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{fnmatch.translate(m)})" for m in models))


def parse_key_settings(data: Mapping[str, Any]) -> KeySettings:
    """The settings in `data` (keys of KEY_FIELDS; others are the caller's); KeyFieldError."""
    mode = data.get("budget_mode", "soft")
    if mode not in ("soft", "hard"):
        raise KeyFieldError("budget_mode", f"expected 'soft' or 'hard', got {mode!r}")
    period = data.get("period")
    if period is not None and period not in PERIODS:
        raise KeyFieldError("period", f"expected one of {', '.join(PERIODS)}, got {period!r}")
    limits = KeyLimits(
        rpm=_count(data, "rpm"),
        tpm=_count(data, "tpm"),
        concurrency=_count(data, "concurrency"),
        budget=_budget(data.get("budget")),
        period=period,
        budget_mode=mode,
    )
    return KeySettings(
        models=_models(data.get("models")),
        limits=limits,
        expires_at=_expires(data.get("expires")),
        routing=_routing(data.get("routing")),
    )


def settings_json(settings: KeySettings) -> dict[str, Any]:
    """The settings as `parse_key_settings` reads them back (what is unset is left out)."""
    limits = settings.limits
    out: dict[str, Any] = {}
    if settings.models:
        out["models"] = list(settings.models)
    for name in ("rpm", "tpm", "concurrency", "budget", "period"):
        value = getattr(limits, name)
        if value is not None:
            out[name] = value
    if limits.budget_mode != "soft":
        out["budget_mode"] = limits.budget_mode
    if settings.expires_at is not None:
        out["expires"] = iso_time(settings.expires_at)
    if settings.routing:
        out["routing"] = dict(settings.routing)
    return out


def parse_duration(text: str) -> float:
    """Seconds in `90d`, `12h`, `30m`, `45s` or `2w`."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"expected a duration such as 90d, 12h or 30m, got {text!r}")
    return int(match.group(1)) * _SECONDS[match.group(2)]


def iso_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _count(data: Mapping[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= _MAX_RATE:
        raise KeyFieldError(name, f"expected a positive integer, got {value!r}")
    return value


def _budget(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise KeyFieldError("budget", f"expected a number of USD, got {value!r}")
    if not 0 <= value <= _MAX_BUDGET_USD:
        raise KeyFieldError("budget", f"must be from 0 to {_MAX_BUDGET_USD} USD")
    return float(value)


def _models(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(m, str) for m in items):
        raise KeyFieldError("models", "expected model names or globs")
    models = tuple(m.strip() for m in items if m.strip())
    if not models:
        raise KeyFieldError("models", "names no model (leave it out to allow every model)")
    return models


def _expires(value: object) -> float | None:
    """An absolute time: epoch seconds or an ISO 8601 date/time (UTC unless it says otherwise)."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:  # str(): YAML reads unquoted dates and times as date and datetime objects
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise KeyFieldError("expires", f"expected an ISO 8601 time, got {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _routing(value: object) -> dict[str, Any]:
    if value is None:
        return {}
    try:
        msgspec.convert(value, RoutingSettings)
    except msgspec.ValidationError as exc:
        where, problem = explain(exc, RoutingSettings, value)
        raise KeyFieldError(join("routing", where), problem) from None
    assert isinstance(value, dict)
    return dict(value)
