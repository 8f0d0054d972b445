"""The YAML config file, parsed once into frozen objects with errors that name the key path."""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import yaml

from messagegate.api.schema import ROUTING_FIELDS, RoutingFields, describe_error
from messagegate.keyspec import KEY_FIELDS, KeyFieldError, KeyLimits, allows, parse_key_settings
from messagegate.translate.openai_dialect import DIALECT_FIELDS, PRESETS, OpenAIDialect, dialect_for

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(Exception):
    """The config file is invalid; the message names the file, the key path and the problem."""


class Secret(str):
    """A string whose repr never shows it, so a key can't leak through logs or tracebacks."""

    def __repr__(self) -> str:
        return "Secret('***')"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds; first_byte bounds the wait for the first answer, idle the gap between reads."""

    connect: float = 10.0
    first_byte: float = 300.0
    idle: float = 300.0
    total: float = 900.0


@dataclass(frozen=True, slots=True)
class FailoverPolicy:
    """Attempts per route before moving on, jittered exponential backoff between them."""

    attempts_per_route: int = 2
    backoff_initial: float = 0.25
    backoff_max: float = 2.0
    # A retry-after longer than this moves on to the next route instead of waiting.
    max_retry_after: float = 5.0


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """A route is skipped for `cooldown` seconds after `failures_to_open` failures in a row."""

    failures_to_open: int = 5
    cooldown: float = 30.0


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    kind: Literal["anthropic", "openai"]
    base_url: str
    api_key: Secret | None
    region: str | None = None
    zero_data_retention: bool = False
    weight: float = 1.0
    auth: Literal["x-api-key", "bearer"] = "x-api-key"
    timeouts: Timeouts = field(default_factory=Timeouts)
    dialect: OpenAIDialect = field(default_factory=OpenAIDialect)
    token_encoding: str = "o200k_base"


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cache_read: float | None = None
    # Cache writes for 5 minutes and for 1 hour; unset: Anthropic's 1.25x and 2x the input price.
    cache_write: float | None = None
    cache_write_1h: float | None = None


@dataclass(frozen=True, slots=True)
class Route:
    provider: Provider
    model: str
    quantized: bool = False
    price: Price | None = None
    max_context: int | None = None
    max_output: int | None = None
    # Routes of equal priority share load by provider weight; by default each is its own level.
    priority: int = 0

    @property
    def label(self) -> str:
        return f"{self.provider.name}/{self.model}"


@dataclass(frozen=True, slots=True)
class Model:
    """A model clients may name; a pattern model's name is a glob and its routes' `model` may be
    empty, meaning the name the client asked for."""

    name: str
    routes: tuple[Route, ...]
    fallbacks: tuple[str, ...] = ()
    display_name: str | None = None
    created_at: str = "2025-01-01T00:00:00Z"

    @property
    def is_pattern(self) -> bool:
        return is_pattern(self.name)

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name, self.name)


def is_pattern(name: str) -> bool:
    return any(c in name for c in "*?[")


@dataclass(frozen=True, slots=True)
class RoutingDefaults:
    """Defaults for the per-request routing fields (gateway-wide or per key)."""

    values: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A gateway key; one from the database has an empty `key` (only its hash is stored)."""

    key: Secret
    name: str
    routing: RoutingDefaults = field(default_factory=RoutingDefaults)
    # Globs of the model names a client may send; empty: any.
    models: tuple[str, ...] = ()
    limits: KeyLimits = field(default_factory=KeyLimits)
    expires_at: float | None = None

    def allows(self, model: str) -> bool:
        return allows(self.models, model)


@dataclass(frozen=True, slots=True)
class Config:
    host: str
    port: int
    keys: tuple[ApiKey, ...]
    providers: Mapping[str, Provider]
    # Exact names; `patterns` holds the glob ones, most specific (longest) first.
    models: Mapping[str, Model]
    patterns: tuple[Model, ...] = ()
    explicit_provider_models: bool = True
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    routing_defaults: RoutingDefaults = field(default_factory=RoutingDefaults)
    shutdown_grace: float = 30.0
    ping_interval: float = 15.0
    failover: FailoverPolicy = field(default_factory=FailoverPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    source: str = "<config>"
    # The key store: `database:` as written; else the documented default path (None without a
    # home directory), which `serve` uses only once it exists.
    database: str | None = None
    default_database: str | None = None
    admin_key: Secret | None = None
    # The time zone whose calendar days, weeks and months budget periods follow.
    budget_timezone: str = "UTC"


CONFIG_PATH_VARIABLE = "MESSAGEGATE_CONFIG"
LOG_LEVEL_VARIABLE = "MESSAGEGATE_LOG_LEVEL"


def default_database_path(environ: Mapping[str, str]) -> str | None:
    """``$XDG_DATA_HOME/messagegate/messagegate.db``, else ``~/.local/share/messagegate/...``."""
    data_home = environ.get("XDG_DATA_HOME") or (
        str(Path(environ["HOME"]) / ".local" / "share") if environ.get("HOME") else None
    )
    return str(Path(data_home) / "messagegate" / "messagegate.db") if data_home else None


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, substitute ``${VAR}`` and validate a config file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(raw, source=str(path), environ=os.environ if environ is None else environ)


def parse_config(raw: object, *, source: str, environ: Mapping[str, str]) -> Config:
    reader = _Reader(source, environ)
    return reader.config(reader.substitute(raw, ""))


class _Reader:
    """Walks the YAML tree; every error names the file and the dotted key path."""

    def __init__(self, source: str, environ: Mapping[str, str]) -> None:
        self.source = source
        self.environ = environ

    def fail(self, path: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}: {path or '<top>'}: {problem}")

    def substitute(self, value: object, path: str) -> object:
        if isinstance(value, str):
            return _ENV_VAR.sub(lambda m: self._env(m.group(1), path), value)
        if isinstance(value, dict):
            return {k: self.substitute(v, _join(path, str(k))) for k, v in value.items()}
        if isinstance(value, list):
            return [self.substitute(v, f"{path}.{i}") for i, v in enumerate(value)]
        return value

    def _env(self, name: str, path: str) -> str:
        if name not in self.environ:
            raise self.fail(path, f"environment variable {name} is not set")
        return self.environ[name]

    def mapping(self, value: object, path: str, allowed: frozenset[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping, got {_kind(value)}")
        unknown = sorted(set(map(str, value)) - allowed)
        if unknown:
            raise self.fail(
                _join(path, unknown[0]), f"unknown key (expected one of: {_list(allowed)})"
            )
        return value

    def get(
        self, data: dict[str, Any], key: str, path: str, kind: type, default: Any = None
    ) -> Any:
        value = data.get(key, default)
        if value is None and default is None and kind is not type(None):
            return None
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(_join(path, key), f"expected {kind.__name__}, got {_kind(value)}")
        return value

    def required(self, data: dict[str, Any], key: str, path: str, kind: type) -> Any:
        if data.get(key) is None:
            raise self.fail(_join(path, key), "is required")
        return self.get(data, key, path, kind)

    def config(self, raw: object) -> Config:
        top = self.mapping(raw, "", _TOP_KEYS)
        host, port = self.listen(self.get(top, "listen", "", str, "127.0.0.1:8080"))
        providers = self.providers(top.get("providers"))
        all_models = self.models(top.get("models"), providers)
        models = {name: m for name, m in all_models.items() if not m.is_pattern}
        # Longer patterns are more specific; sorted() keeps file order among equals.
        patterns = sorted(
            (m for m in all_models.values() if m.is_pattern), key=lambda m: -len(m.name)
        )
        max_body = self.get(top, "max_body_bytes", "", int, DEFAULT_MAX_BODY_BYTES)
        if max_body <= 0:
            raise self.fail("max_body_bytes", "must be positive")
        return Config(
            host=host,
            port=port,
            keys=self.keys(top.get("keys")),
            providers=providers,
            models=models,
            patterns=tuple(patterns),
            explicit_provider_models=self.get(top, "explicit_provider_models", "", bool, True),
            max_body_bytes=max_body,
            routing_defaults=self.routing(top.get("routing_defaults"), "routing_defaults"),
            shutdown_grace=self.positive(top, "shutdown_grace", "", 30.0),
            ping_interval=self.positive(top, "ping_interval", "", 15.0),
            failover=self.failover(top.get("failover")),
            breaker=self.breaker(top.get("circuit_breaker")),
            source=self.source,
            database=self.get(top, "database", "", str),
            default_database=default_database_path(self.environ),
            admin_key=self.admin_key(top),
            budget_timezone=self.timezone(top),
        )

    def timezone(self, top: dict[str, Any]) -> str:
        name: str = self.get(top, "budget_timezone", "", str, "UTC")
        try:
            ZoneInfo(name)
        except (ValueError, ZoneInfoNotFoundError):
            raise self.fail("budget_timezone", f"unknown time zone {name!r}") from None
        return name

    def admin_key(self, top: dict[str, Any]) -> Secret | None:
        value = self.get(top, "admin_key", "", str)
        if value is None:
            return None
        if len(value) < 16:
            raise self.fail("admin_key", "must be at least 16 characters")
        if any(value == k.get("key") for k in top.get("keys") or () if isinstance(k, dict)):
            raise self.fail("admin_key", "must not be a gateway key")
        return Secret(value)

    def failover(self, raw: object) -> FailoverPolicy:
        if raw is None:
            return FailoverPolicy()
        data = self.mapping(raw, "failover", frozenset(FailoverPolicy.__dataclass_fields__))
        defaults = FailoverPolicy()
        values: dict[str, Any] = {}
        for key in data:
            default = getattr(defaults, key)
            values[key] = self.get(data, key, "failover", type(default), default)
            if values[key] < (1 if key == "attempts_per_route" else 0):
                raise self.fail(f"failover.{key}", "is out of range")
        return FailoverPolicy(**values)

    def breaker(self, raw: object) -> BreakerPolicy:
        if raw is None:
            return BreakerPolicy()
        data = self.mapping(raw, "circuit_breaker", frozenset(BreakerPolicy.__dataclass_fields__))
        failures = self.get(data, "failures_to_open", "circuit_breaker", int, 5)
        if failures < 1:
            raise self.fail("circuit_breaker.failures_to_open", "must be at least 1")
        cooldown = self.positive(data, "cooldown", "circuit_breaker", 30.0)
        return BreakerPolicy(failures_to_open=failures, cooldown=cooldown)

    def listen(self, value: str) -> tuple[str, int]:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise self.fail("listen", f"expected HOST:PORT, got {value!r}")
        return host.strip("[]") or "127.0.0.1", int(port)

    def positive(self, data: dict[str, Any], key: str, path: str, default: float) -> float:
        value: float = self.get(data, key, path, float, default)
        if value <= 0:
            raise self.fail(_join(path, key), "must be a positive number")
        return value

    def keys(self, raw: object) -> tuple[ApiKey, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            raise self.fail("keys", f"expected a list, got {_kind(raw)}")
        keys = tuple(self.key(item, f"keys.{i}") for i, item in enumerate(raw))
        names = [k.name for k in keys]
        for i, name in enumerate(names):
            if names.index(name) != i:
                raise self.fail(f"keys.{i}.name", f"duplicate key name {name!r}")
        return keys

    def key(self, raw: object, path: str) -> ApiKey:
        data = self.mapping(raw, path, KEY_FIELDS | {"key", "name"})
        key = self.required(data, "key", path, str)
        if not key:
            raise self.fail(_join(path, "key"), "must not be empty")
        try:
            settings = parse_key_settings({k: v for k, v in data.items() if k != "routing"})
        except KeyFieldError as exc:
            raise self.fail(_join(path, exc.field), exc.problem) from None
        return ApiKey(
            key=Secret(key),
            name=self.required(data, "name", path, str),
            routing=self.routing(data.get("routing"), _join(path, "routing")),
            models=settings.models,
            limits=settings.limits,
            expires_at=settings.expires_at,
        )

    def routing(self, raw: object, path: str) -> RoutingDefaults:
        if raw is None:
            return RoutingDefaults()
        data = self.mapping(raw, path, ROUTING_FIELDS)
        try:
            msgspec.convert(data, RoutingFields)
        except msgspec.ValidationError as exc:
            raise self.fail(path, describe_error(str(exc))) from None
        return RoutingDefaults(values=dict(data))

    def providers(self, raw: object) -> dict[str, Provider]:
        if raw is None:
            raise self.fail("providers", "is required")
        data = self.mapping(
            raw, "providers", frozenset(map(str, raw)) if isinstance(raw, dict) else frozenset()
        )
        return {str(name): self.provider(str(name), spec) for name, spec in data.items()}

    def provider(self, name: str, raw: object) -> Provider:
        path = f"providers.{name}"
        data = self.mapping(raw, path, _PROVIDER_KEYS | DIALECT_FIELDS)
        kind = self.required(data, "kind", path, str)
        if kind not in ("anthropic", "openai"):
            raise self.fail(_join(path, "kind"), f"expected 'anthropic' or 'openai', got {kind!r}")
        base_url = self.required(data, "base_url", path, str).rstrip("/")
        if not base_url.startswith(("http://", "https://")):
            raise self.fail(_join(path, "base_url"), f"expected an http(s) URL, got {base_url!r}")
        api_key = self.get(data, "api_key", path, str)
        auth = self.get(data, "auth", path, str, "x-api-key" if kind == "anthropic" else "bearer")
        if auth not in ("x-api-key", "bearer"):
            raise self.fail(_join(path, "auth"), f"expected 'x-api-key' or 'bearer', got {auth!r}")
        return Provider(
            name=name,
            kind=kind,
            base_url=base_url,
            api_key=Secret(api_key) if api_key else None,
            region=self.get(data, "region", path, str),
            zero_data_retention=self.get(data, "zero_data_retention", path, bool, False),
            weight=self.positive(data, "weight", path, 1.0),
            auth=auth,
            timeouts=self.timeouts(data.get("timeouts"), _join(path, "timeouts")),
            dialect=self.dialect(data, path) if kind == "openai" else OpenAIDialect(),
            token_encoding=self.get(data, "token_encoding", path, str, "o200k_base"),
        )

    def timeouts(self, raw: object, path: str) -> Timeouts:
        if raw is None:
            return Timeouts()
        data = self.mapping(raw, path, frozenset(Timeouts.__dataclass_fields__))
        defaults = Timeouts()
        values = {k: self.positive(data, k, path, getattr(defaults, k)) for k in data}
        return Timeouts(**values)

    def dialect(self, data: dict[str, Any], path: str) -> OpenAIDialect:
        preset = self.get(data, "preset", path, str)
        if preset is not None and preset not in PRESETS:
            raise self.fail(
                _join(path, "preset"), f"unknown preset (expected one of: {_list(PRESETS)})"
            )
        defaults = OpenAIDialect()
        overrides = {}
        for key in DIALECT_FIELDS & set(data):
            default = getattr(defaults, key)
            overrides[key] = self.get(data, key, path, type(default), default)
        try:
            return dialect_for(preset, overrides)
        except (TypeError, ValueError) as exc:
            raise self.fail(path, str(exc)) from None

    def models(self, raw: object, providers: Mapping[str, Provider]) -> dict[str, Model]:
        if raw is None:
            raise self.fail("models", "is required")
        if not isinstance(raw, dict):
            raise self.fail("models", f"expected a mapping, got {_kind(raw)}")
        models = {str(name): self.model(str(name), spec, providers) for name, spec in raw.items()}
        for model in models.values():
            for i, fallback in enumerate(model.fallbacks):
                if fallback not in models or is_pattern(fallback):
                    raise self.fail(
                        f"models.{model.name}.fallbacks.{i}",
                        f"unknown model {fallback!r} (a fallback names an exact model)",
                    )
        return models

    def model(self, name: str, raw: object, providers: Mapping[str, Provider]) -> Model:
        path = f"models.{name}"
        data = self.mapping(
            raw, path, frozenset({"routes", "fallbacks", "display_name", "created_at"})
        )
        routes = data.get("routes")
        if not isinstance(routes, list) or not routes:
            raise self.fail(_join(path, "routes"), "expected a non-empty list of routes")
        fallbacks = self.get(data, "fallbacks", path, list, [])
        if not all(isinstance(f, str) for f in fallbacks):
            raise self.fail(_join(path, "fallbacks"), "expected a list of model names")
        return Model(
            name=name,
            routes=tuple(
                self.route(r, f"{path}.routes.{i}", providers, i, is_pattern(name))
                for i, r in enumerate(routes)
            ),
            fallbacks=tuple(fallbacks),
            display_name=self.get(data, "display_name", path, str),
            created_at=str(data.get("created_at", "2025-01-01T00:00:00Z")),
        )

    def route(
        self,
        raw: object,
        path: str,
        providers: Mapping[str, Provider],
        position: int,
        in_pattern: bool,
    ) -> Route:
        data = self.mapping(raw, path, _ROUTE_KEYS)
        provider_name = self.required(data, "provider", path, str)
        if provider_name not in providers:
            raise self.fail(_join(path, "provider"), f"unknown provider {provider_name!r}")
        # A pattern's route sends the requested name unless it names its own upstream model.
        model = self.get(data, "model", path, str, "") if in_pattern else None
        return Route(
            provider=providers[provider_name],
            model=model if model is not None else self.required(data, "model", path, str),
            quantized=self.get(data, "quantized", path, bool, False),
            price=self.price(data.get("price"), _join(path, "price")),
            max_context=self.optional_positive_int(data, "max_context", path),
            max_output=self.optional_positive_int(data, "max_output", path),
            priority=self.get(data, "priority", path, int, position),
        )

    def price(self, raw: object, path: str) -> Price | None:
        if raw is None:
            return None
        data = self.mapping(
            raw, path, frozenset({"input", "output", "cache_read", "cache_write", "cache_write_1h"})
        )
        return Price(
            input=self.required(data, "input", path, float),
            output=self.required(data, "output", path, float),
            cache_read=self.get(data, "cache_read", path, float),
            cache_write=self.get(data, "cache_write", path, float),
            cache_write_1h=self.get(data, "cache_write_1h", path, float),
        )

    def optional_positive_int(self, data: dict[str, Any], key: str, path: str) -> int | None:
        value: int | None = self.get(data, key, path, int)
        if value is not None and value <= 0:
            raise self.fail(_join(path, key), "must be a positive integer")
        return value


_TOP_KEYS = frozenset(
    {
        "listen",
        "keys",
        "providers",
        "models",
        "max_body_bytes",
        "routing_defaults",
        "shutdown_grace",
        "ping_interval",
        "failover",
        "circuit_breaker",
        "explicit_provider_models",
        "database",
        "admin_key",
        "budget_timezone",
    }
)
_PROVIDER_KEYS = frozenset(
    {
        "kind",
        "base_url",
        "api_key",
        "region",
        "zero_data_retention",
        "weight",
        "auth",
        "timeouts",
        "preset",
        "token_encoding",
    }
)
_ROUTE_KEYS = frozenset(
    {"provider", "model", "quantized", "price", "max_context", "max_output", "priority"}
)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


def _list(names: object) -> str:
    return ", ".join(sorted(names))  # type: ignore[call-overload]
