"""The YAML config file, parsed once into frozen objects with errors that name the key path."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from messagegate.api.schema import ROUTING_FIELDS, RoutingFields, describe_error
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
class Limits:
    """What one peer may make the gateway hold or wait for; beyond it, an error, not an outage."""

    # A request head (request line and headers): over these, 431 (nginx's and Apache's scale).
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    # Seconds a client may take to send a whole request head, and to stay silent within a body.
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    # Open client connections per process; None: half the open-file limit (each client may
    # need an upstream socket too). Connections beyond it are closed at once, with a log line.
    max_connections: int | None = None
    # Request bodies being read or held, all requests together: beyond it, 529 overloaded_error.
    max_inflight_body_bytes: int = 256 * 1024 * 1024
    # An upstream's non-streamed answer (decompressed), and one event of a stream.
    max_upstream_answer_bytes: int = 64 * 1024 * 1024
    max_upstream_event_bytes: int = 16 * 1024 * 1024


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
    # Connections to this provider in use at once (None: no limit); beyond it, up to
    # `max_waiting` requests wait `pool_timeout` seconds each for one to be free.
    max_connections: int | None = None
    max_waiting: int = 100
    pool_timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cache_read: float | None = None


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
    name: str
    routes: tuple[Route, ...]
    fallbacks: tuple[str, ...] = ()
    display_name: str | None = None
    created_at: str = "2025-01-01T00:00:00Z"


@dataclass(frozen=True, slots=True)
class RoutingDefaults:
    """Defaults for the per-request routing fields (gateway-wide or per key)."""

    values: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ApiKey:
    key: Secret
    name: str
    routing: RoutingDefaults = field(default_factory=RoutingDefaults)


@dataclass(frozen=True, slots=True)
class Config:
    host: str
    port: int
    keys: tuple[ApiKey, ...]
    providers: Mapping[str, Provider]
    models: Mapping[str, Model]
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    routing_defaults: RoutingDefaults = field(default_factory=RoutingDefaults)
    shutdown_grace: float = 30.0
    ping_interval: float = 15.0
    failover: FailoverPolicy = field(default_factory=FailoverPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    source: str = "<config>"
    limits: Limits = field(default_factory=Limits)


CONFIG_PATH_VARIABLE = "MESSAGEGATE_CONFIG"
LOG_LEVEL_VARIABLE = "MESSAGEGATE_LOG_LEVEL"


def worker_settings() -> tuple[Config, str]:
    """The config and log level ``serve --workers N`` hands its workers through the environment."""
    path = os.environ.get(CONFIG_PATH_VARIABLE)
    if not path:
        raise ConfigError(f"{CONFIG_PATH_VARIABLE} is not set")
    return load_config(path), os.environ.get(LOG_LEVEL_VARIABLE, "info")


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


def _yaml_problem(error: yaml.YAMLError) -> str:
    """What is wrong and where, without PyYAML's quote of the offending line: that line may hold
    a key."""
    problem = getattr(error, "problem", None) or "syntax error"
    mark = getattr(error, "problem_mark", None)
    if mark is None:
        return str(problem)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"


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
        models = self.models(top.get("models"), providers)
        max_body = self.get(top, "max_body_bytes", "", int, DEFAULT_MAX_BODY_BYTES)
        if max_body <= 0:
            raise self.fail("max_body_bytes", "must be positive")
        return Config(
            host=host,
            port=port,
            keys=self.keys(top.get("keys")),
            providers=providers,
            models=models,
            max_body_bytes=max_body,
            routing_defaults=self.routing(top.get("routing_defaults"), "routing_defaults"),
            shutdown_grace=self.positive(top, "shutdown_grace", "", 30.0),
            ping_interval=self.positive(top, "ping_interval", "", 15.0),
            failover=self.failover(top.get("failover")),
            breaker=self.breaker(top.get("circuit_breaker")),
            source=self.source,
            limits=self.limits(top.get("limits")),
        )

    def limits(self, raw: object) -> Limits:
        if raw is None:
            return Limits()
        data = self.mapping(raw, "limits", frozenset(Limits.__dataclass_fields__))
        values: dict[str, Any] = {}
        for key in data:
            if key.endswith("_timeout"):
                values[key] = self.positive(data, key, "limits", 1.0)
            else:
                value = self.optional_positive_int(data, key, "limits")
                if value is None and key != "max_connections":
                    raise self.fail(f"limits.{key}", "must be a positive integer")
                values[key] = value
        return Limits(**values)

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
        data = self.mapping(raw, path, frozenset({"key", "name", "routing"}))
        key = self.required(data, "key", path, str)
        if not key:
            raise self.fail(_join(path, "key"), "must not be empty")
        return ApiKey(
            key=Secret(key),
            name=self.required(data, "name", path, str),
            routing=self.routing(data.get("routing"), _join(path, "routing")),
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
        if self.get(data, "max_waiting", path, int, 100) < 0:
            raise self.fail(_join(path, "max_waiting"), "must not be negative")
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
            max_connections=self.optional_positive_int(data, "max_connections", path),
            max_waiting=self.get(data, "max_waiting", path, int, 100),
            pool_timeout=self.positive(data, "pool_timeout", path, 10.0),
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
                if fallback not in models:
                    raise self.fail(
                        f"models.{model.name}.fallbacks.{i}", f"unknown model {fallback!r}"
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
                self.route(r, f"{path}.routes.{i}", providers, i) for i, r in enumerate(routes)
            ),
            fallbacks=tuple(fallbacks),
            display_name=self.get(data, "display_name", path, str),
            created_at=str(data.get("created_at", "2025-01-01T00:00:00Z")),
        )

    def route(
        self, raw: object, path: str, providers: Mapping[str, Provider], position: int
    ) -> Route:
        data = self.mapping(raw, path, _ROUTE_KEYS)
        provider_name = self.required(data, "provider", path, str)
        if provider_name not in providers:
            raise self.fail(_join(path, "provider"), f"unknown provider {provider_name!r}")
        return Route(
            provider=providers[provider_name],
            model=self.required(data, "model", path, str),
            quantized=self.get(data, "quantized", path, bool, False),
            price=self.price(data.get("price"), _join(path, "price")),
            max_context=self.optional_positive_int(data, "max_context", path),
            max_output=self.optional_positive_int(data, "max_output", path),
            priority=self.get(data, "priority", path, int, position),
        )

    def price(self, raw: object, path: str) -> Price | None:
        if raw is None:
            return None
        data = self.mapping(raw, path, frozenset({"input", "output", "cache_read"}))
        return Price(
            input=self.required(data, "input", path, float),
            output=self.required(data, "output", path, float),
            cache_read=self.get(data, "cache_read", path, float),
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
        "limits",
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
        "max_connections",
        "max_waiting",
        "pool_timeout",
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
