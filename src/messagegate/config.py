"""The YAML config file, parsed once into frozen objects with errors that name the key path."""

from __future__ import annotations

import fnmatch
import importlib
import ipaddress
import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import yaml

from messagegate.api.schema import ROUTING_FIELDS, RoutingFields, describe_error
from messagegate.keyspec import KEY_FIELDS, KeyFieldError, KeyLimits, allows, parse_key_settings
from messagegate.otel_env import OtelVariableError, OtlpSettings, parse_otlp
from messagegate.redis_config import OutagePolicy, RedisSettings, read_outage, read_redis
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
class TlsSettings:
    """A provider's TLS: extra trusted CAs, a client certificate, or (for tests only) no checks."""

    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    verify: bool = True


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a route can take; a request that needs more skips it (`routing/capabilities.py`)."""

    vision: bool = True
    pdf: bool = True
    tools: bool = True
    thinking: bool = True
    structured_output: bool = True
    max_stop_sequences: int | None = None
    temperature_max: float = 1.0


# Defaults by provider kind, then preset. An OpenAI-compatible route takes a PDF as a placeholder
# text (translate/openai_request.py): refusing it would refuse every later turn of its conversation.
KIND_CAPABILITIES = {
    "anthropic": Capabilities(),
    "openai": Capabilities(max_stop_sequences=4, temperature_max=2.0),
}
PRESET_CAPABILITIES: dict[str, dict[str, Any]] = {
    "deepseek": {"vision": False, "structured_output": False, "max_stop_sequences": 16},
    "vllm": {"max_stop_sequences": None},
    "ollama": {"max_stop_sequences": None},
    "llamacpp": {"max_stop_sequences": None},
}


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
    # An http:// proxy URL (the provider's `proxy:`, else HTTPS_PROXY/HTTP_PROXY less NO_PROXY).
    proxy: Secret | None = None
    tls: TlsSettings = field(default_factory=TlsSettings)
    capabilities: Capabilities = field(default_factory=Capabilities)
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
    capabilities: Capabilities = field(default_factory=Capabilities)

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
class RequestDefaults:
    """What a request without `model` or `max_tokens` gets (gateway-wide or per key)."""

    model: str | None = None
    max_tokens: int | None = None

    def over(self, other: RequestDefaults) -> RequestDefaults:
        """These defaults, with `other`'s where these have none."""
        return RequestDefaults(
            model=self.model if self.model is not None else other.model,
            max_tokens=self.max_tokens if self.max_tokens is not None else other.max_tokens,
        )


@dataclass(frozen=True, slots=True)
class ScenarioConditions:
    """What a scenario's `when:` asks of a request; None means "not asked"."""

    model: str | None = None
    thinking: Literal["enabled", "adaptive", "off"] | None = None
    thinking_budget_over: int | None = None
    effort: tuple[str, ...] | None = None
    input_tokens_over: int | None = None
    session_input_tokens_over: int | None = None
    tools_include: tuple[str, ...] | None = None
    has_image: bool | None = None
    has_document: bool | None = None
    tag: str | None = None
    header: Mapping[str, str] | None = None
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    """A rule that rewrites a request's model: `use`, or what `function` answers."""

    name: str
    when: ScenarioConditions
    use: str | None = None
    python: str | None = None
    function: Callable[..., Any] | None = field(default=None, compare=False, repr=False)
    on_error: Literal["skip", "reject"] = "skip"
    timeout: float = 0.1


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A gateway key; one from the database has an empty `key` (only its hash is stored)."""

    key: Secret
    name: str
    routing: RoutingDefaults = field(default_factory=RoutingDefaults)
    request_defaults: RequestDefaults = field(default_factory=RequestDefaults)
    # Tried before the gateway-wide scenarios.
    scenarios: tuple[Scenario, ...] = ()
    # Globs of the model names a client may send; empty: any.
    models: tuple[str, ...] = ()
    limits: KeyLimits = field(default_factory=KeyLimits)
    expires_at: float | None = None

    def allows(self, model: str) -> bool:
        return allows(self.models, model)


@dataclass(frozen=True, slots=True)
class PrivacySettings:
    """Privacy mode (docs/privacy-protocol.md): ``optional`` serves both kinds of request,
    ``required`` refuses plaintext ones; `key_file` is written by ``messagegate privacy keygen``."""

    mode: Literal["off", "optional", "required"] = "off"
    key_file: str | None = None
    # Seconds a replaced key still accepts new secrets after a newer one appeared in the file.
    rotation_grace: float = 86400.0
    # Attestation evidence served beside the public key (a TEE's quote), read at start.
    evidence_file: str | None = None


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """``GET /metrics``: who may read it, where, and whether keys get their own series."""

    enabled: bool = True
    auth: Literal["none", "key"] = "none"
    # A second listener for /metrics only (host, port); None serves it on the API port.
    listen: tuple[str, int] | None = None
    key_labels: bool = False
    # Keys beyond this many share the series `key="other"`.
    max_key_series: int = 100


@dataclass(frozen=True, slots=True)
class OtelSettings:
    """OpenTelemetry traces; the exporter and sampler settings come from the OTEL_* variables."""

    enabled: bool = False
    # Prompt and answer text become span attributes only when asked for.
    capture_content: bool = False
    otlp: OtlpSettings = field(default_factory=OtlpSettings)


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
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    source: str = "<config>"
    # Names clients may send for a configured model.
    aliases: Mapping[str, str] = field(default_factory=dict)
    request_defaults: RequestDefaults = field(default_factory=RequestDefaults)
    scenarios: tuple[Scenario, ...] = ()
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    log_format: Literal["text", "json"] = "text"
    otel: OtelSettings = field(default_factory=OtelSettings)
    limits: Limits = field(default_factory=Limits)
    # The key store: `database:` as written; else the documented default path (None without a
    # home directory), which `serve` uses only once it exists.
    database: str | None = None
    default_database: str | None = None
    admin_key: Secret | None = None
    # The time zone whose calendar days, weeks and months budget periods follow.
    budget_timezone: str = "UTC"
    # Limits shared by every replica (None: each process keeps its own), and what the limits and
    # stored keys do while Redis or the database is out of reach.
    redis: RedisSettings | None = None
    on_outage: OutagePolicy = field(default_factory=OutagePolicy)


CONFIG_PATH_VARIABLE = "MESSAGEGATE_CONFIG"
LOG_LEVEL_VARIABLE = "MESSAGEGATE_LOG_LEVEL"
# prometheus_client's own variable: set, every worker writes its metrics to files there.
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def metrics_directory() -> str | None:
    """Where ``serve --workers N`` has its workers share metrics (None: one process)."""
    return os.environ.get(METRICS_DIR_VARIABLE) or None


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
        all_models = self.models(top.get("models"), providers)
        models = {name: m for name, m in all_models.items() if not m.is_pattern}
        # Longer patterns are more specific; sorted() keeps file order among equals.
        patterns = sorted(
            (m for m in all_models.values() if m.is_pattern), key=lambda m: -len(m.name)
        )
        max_body = self.get(top, "max_body_bytes", "", int, DEFAULT_MAX_BODY_BYTES)
        if max_body <= 0:
            raise self.fail("max_body_bytes", "must be positive")
        explicit = self.get(top, "explicit_provider_models", "", bool, True)

        def servable(name: str) -> bool:
            """Would a request naming `name` find a model (exact, provider/model or pattern)?"""
            provider, slash, rest = name.partition("/")
            return (
                name in models
                or (explicit and bool(slash and rest) and provider in providers)
                or any(p.matches(name) for p in patterns)
            )

        aliases = self.aliases(top.get("aliases"), models, servable)

        def known(name: str) -> bool:
            return name in aliases or servable(name)

        keys = self.keys(top.get("keys"))
        for i, key in enumerate(keys):
            self.check_default_model(key.request_defaults, f"keys.{i}.request_defaults", known)
        defaults = self.request_defaults(top.get("request_defaults"), "request_defaults")
        self.check_default_model(defaults, "request_defaults", known)
        scenarios = self.scenarios(top.get("scenarios"), "scenarios")
        self.scenario_targets(scenarios, "scenarios", known)
        for i, key in enumerate(keys):
            self.scenario_targets(key.scenarios, f"keys.{i}.scenarios", known)
        return Config(
            host=host,
            port=port,
            keys=keys,
            providers=providers,
            models=models,
            patterns=tuple(patterns),
            explicit_provider_models=explicit,
            max_body_bytes=max_body,
            routing_defaults=self.routing(top.get("routing_defaults"), "routing_defaults"),
            shutdown_grace=self.positive(top, "shutdown_grace", "", 30.0),
            ping_interval=self.positive(top, "ping_interval", "", 15.0),
            failover=self.failover(top.get("failover")),
            breaker=self.breaker(top.get("circuit_breaker")),
            privacy=self.privacy(top.get("privacy")),
            source=self.source,
            aliases=aliases,
            request_defaults=defaults,
            scenarios=scenarios,
            metrics=self.metrics(top.get("metrics"), has_keys=bool(top.get("keys"))),
            log_format=self.choice(top, "log_format", "", ("text", "json")),
            otel=self.otel(top.get("otel")),
            limits=self.limits(top.get("limits")),
            database=self.get(top, "database", "", str),
            default_database=default_database_path(self.environ),
            admin_key=self.admin_key(top),
            budget_timezone=self.timezone(top),
            redis=read_redis(self, top.get("redis")),
            on_outage=read_outage(self, top.get("on_outage")),
        )

    def aliases(
        self, raw: object, models: Mapping[str, Model], servable: Callable[[str], bool]
    ) -> dict[str, str]:
        if raw is None:
            return {}
        names = frozenset(map(str, raw)) if isinstance(raw, dict) else frozenset()
        data = self.mapping(raw, "aliases", names)
        aliases: dict[str, str] = {}
        for name, target in data.items():
            path = f"aliases.{name}"
            if str(name) in models:
                raise self.fail(path, f"{name!r} is already a model's name")
            if not isinstance(target, str) or not servable(target):
                raise self.fail(path, f"expected the name of a configured model, got {target!r}")
            aliases[str(name)] = target
        return aliases

    def request_defaults(self, raw: object, path: str) -> RequestDefaults:
        if raw is None:
            return RequestDefaults()
        data = self.mapping(raw, path, frozenset({"model", "max_tokens"}))
        return RequestDefaults(
            model=self.get(data, "model", path, str),
            max_tokens=self.optional_positive_int(data, "max_tokens", path),
        )

    def check_default_model(
        self, defaults: RequestDefaults, path: str, known: Callable[[str], bool]
    ) -> None:
        if defaults.model is not None and not known(defaults.model):
            raise self.fail(f"{path}.model", f"unknown model {defaults.model!r}")

    def otel(self, raw: object) -> OtelSettings:
        if raw is None:
            return OtelSettings()
        data = self.mapping(raw, "otel", frozenset({"enabled", "capture_content"}))
        enabled = self.get(data, "enabled", "otel", bool, False)
        capture = self.get(data, "capture_content", "otel", bool, False)
        if not enabled:
            return OtelSettings(capture_content=capture)
        try:
            otlp = parse_otlp(self.environ)
        except OtelVariableError as error:
            raise self.fail("otel", str(error)) from None
        return OtelSettings(enabled=True, capture_content=capture, otlp=otlp)

    def metrics(self, raw: object, *, has_keys: bool) -> MetricsSettings:
        if raw is None:
            return MetricsSettings()
        data = self.mapping(raw, "metrics", frozenset(MetricsSettings.__dataclass_fields__))
        listen = self.get(data, "listen", "metrics", str)
        max_keys = self.get(data, "max_key_series", "metrics", int, 100)
        if max_keys < 0:
            raise self.fail("metrics.max_key_series", "must not be negative")
        auth = self.choice(data, "auth", "metrics", ("none", "key"))
        if auth == "key" and not has_keys:
            raise self.fail("metrics.auth", "'key' needs gateway keys (`keys:`)")
        return MetricsSettings(
            enabled=self.get(data, "enabled", "metrics", bool, True),
            auth=auth,
            listen=None if listen is None else self.listen(listen, "metrics.listen"),
            key_labels=self.get(data, "key_labels", "metrics", bool, False),
            max_key_series=max_keys,
        )

    def choice(self, data: dict[str, Any], key: str, path: str, allowed: tuple[str, ...]) -> Any:
        """One of `allowed`, the first being the default."""
        value = self.get(data, key, path, str, allowed[0])
        if value not in allowed:
            expected = " or ".join(repr(a) for a in allowed)
            raise self.fail(_join(path, key), f"expected {expected}, got {value!r}")
        return value

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

    def privacy(self, raw: object) -> PrivacySettings:
        if raw is None:
            return PrivacySettings()
        data = self.mapping(raw, "privacy", frozenset(PrivacySettings.__dataclass_fields__))
        mode = self.get(data, "mode", "privacy", str, "optional")
        if mode not in ("off", "optional", "required"):
            raise self.fail("privacy.mode", f"expected off, optional or required, got {mode!r}")
        key_file = self.get(data, "key_file", "privacy", str)
        if mode != "off" and not key_file:
            raise self.fail("privacy.key_file", "is required unless mode is off")
        return PrivacySettings(
            mode=mode,
            key_file=key_file,
            rotation_grace=self.positive(data, "rotation_grace", "privacy", 86400.0),
            evidence_file=self.get(data, "evidence_file", "privacy", str),
        )

    def listen(self, value: str, path: str = "listen") -> tuple[str, int]:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise self.fail(path, f"expected HOST:PORT, got {value!r}")
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
        data = self.mapping(
            raw, path, KEY_FIELDS | {"key", "name", "request_defaults", "scenarios"}
        )
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
            request_defaults=self.request_defaults(
                data.get("request_defaults"), _join(path, "request_defaults")
            ),
            scenarios=self.scenarios(data.get("scenarios"), _join(path, "scenarios")),
            models=settings.models,
            limits=settings.limits,
            expires_at=settings.expires_at,
        )

    def scenarios(self, raw: object, path: str) -> tuple[Scenario, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            raise self.fail(path, f"expected a list, got {_kind(raw)}")
        scenarios = tuple(self.scenario(item, f"{path}.{i}") for i, item in enumerate(raw))
        names = [s.name for s in scenarios]
        for i, name in enumerate(names):
            if names.index(name) != i:
                raise self.fail(f"{path}.{i}.name", f"duplicate scenario name {name!r}")
        return scenarios

    def scenario(self, raw: object, path: str) -> Scenario:
        data = self.mapping(raw, path, _SCENARIO_KEYS)
        name = self.required(data, "name", path, str)
        use = self.get(data, "use", path, str)
        python = self.get(data, "python", path, str)
        if (use is None) == (python is None):
            raise self.fail(path, "needs exactly one of use: (a model) or python: (a function)")
        if data.get("when") is None and python is None:
            raise self.fail(_join(path, "when"), "is required")
        on_error = self.get(data, "on_error", path, str, "skip")
        if on_error not in ("skip", "reject"):
            raise self.fail(_join(path, "on_error"), f"expected skip or reject, got {on_error!r}")
        timeout = self.positive(data, "timeout", path, 0.1)
        if timeout > _SCENARIO_TIMEOUT_MAX:
            raise self.fail(_join(path, "timeout"), f"must be at most {_SCENARIO_TIMEOUT_MAX}")
        return Scenario(
            name=name,
            when=self.conditions(data.get("when", {}), _join(path, "when")),
            use=use,
            python=python,
            function=self.function(python, _join(path, "python")) if python else None,
            on_error=on_error,
            timeout=timeout,
        )

    def conditions(self, raw: object, path: str) -> ScenarioConditions:
        data = self.mapping(raw, path, frozenset(ScenarioConditions.__dataclass_fields__))
        thinking = self.get(data, "thinking", path, str)
        if thinking not in (None, "enabled", "adaptive", "off"):
            raise self.fail(
                _join(path, "thinking"), f"expected enabled, adaptive or off, got {thinking!r}"
            )
        effort = self.names(data, "effort", path)
        if effort is not None and not set(effort) <= _EFFORTS:
            raise self.fail(_join(path, "effort"), f"expected some of: {_list(_EFFORTS)}")
        return ScenarioConditions(
            model=self.get(data, "model", path, str),
            thinking=thinking,
            thinking_budget_over=self.non_negative_int(data, "thinking_budget_over", path),
            effort=effort,
            input_tokens_over=self.non_negative_int(data, "input_tokens_over", path),
            session_input_tokens_over=self.non_negative_int(
                data, "session_input_tokens_over", path
            ),
            tools_include=self.names(data, "tools_include", path),
            has_image=self.get(data, "has_image", path, bool),
            has_document=self.get(data, "has_document", path, bool),
            tag=self.get(data, "tag", path, str),
            header=self.header_globs(data.get("header"), _join(path, "header")),
            key=self.get(data, "key", path, str),
        )

    def names(self, data: dict[str, Any], key: str, path: str) -> tuple[str, ...] | None:
        """A name or a list of names."""
        value = data.get(key)
        if value is None:
            return None
        values = [value] if isinstance(value, str) else value
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, str) for v in values)
        ):
            raise self.fail(_join(path, key), "expected a name or a non-empty list of names")
        return tuple(values)

    def header_globs(self, raw: object, path: str) -> Mapping[str, str] | None:
        if raw is None:
            return None
        if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
            raise self.fail(path, "expected a mapping of header names to value globs")
        # Header names arrive lower-cased.
        return {str(k).lower(): v for k, v in raw.items()}

    def non_negative_int(self, data: dict[str, Any], key: str, path: str) -> int | None:
        value: int | None = self.get(data, key, path, int)
        if value is not None and value < 0:
            raise self.fail(_join(path, key), "must not be negative")
        return value

    def function(self, spec: str, path: str) -> Callable[..., Any]:
        module_name, sep, attribute = spec.partition(":")
        if not sep or not module_name or not attribute:
            raise self.fail(path, f"expected package.module:function, got {spec!r}")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # the user's module may fail in any way while importing
            raise self.fail(path, f"cannot import {module_name}: {exc}") from None
        function = getattr(module, attribute, None)
        if not callable(function):
            raise self.fail(path, f"{module_name} has no function {attribute}")
        return function  # type: ignore[no-any-return]

    def scenario_targets(
        self, scenarios: tuple[Scenario, ...], path: str, known: Callable[[str], bool]
    ) -> None:
        """`use:` names a model the gateway serves: exact, alias, `provider/model` or pattern."""
        for i, scenario in enumerate(scenarios):
            if scenario.use is not None and not known(scenario.use):
                raise self.fail(f"{path}.{i}.use", f"unknown model {scenario.use!r}")

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
            proxy=self.proxy(data, path, base_url),
            tls=self.tls(data.get("tls"), _join(path, "tls")),
            capabilities=self.kind_capabilities(kind, self.get(data, "preset", path, str)),
            max_connections=self.optional_positive_int(data, "max_connections", path),
            max_waiting=self.get(data, "max_waiting", path, int, 100),
            pool_timeout=self.positive(data, "pool_timeout", path, 10.0),
        )

    def proxy(self, data: dict[str, Any], path: str, base_url: str) -> Secret | None:
        """The provider's own `proxy:` (`direct` for none), else the environment's, as curl does."""
        own = self.get(data, "proxy", path, str)
        where = _join(path, "proxy")
        if own is None:
            url, where = environment_proxy(base_url, self.environ)
            if url is None:
                return None
        elif own == "direct":
            return None
        else:
            url = own
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            raise self.fail(where, f"expected an http:// proxy URL, got scheme {parts.scheme!r}")
        return Secret(parts.geturl())

    def tls(self, raw: object, path: str) -> TlsSettings:
        if raw is None:
            return TlsSettings()
        data = self.mapping(raw, path, frozenset(TlsSettings.__dataclass_fields__))
        settings = TlsSettings(
            ca_file=self.get(data, "ca_file", path, str),
            client_cert=self.get(data, "client_cert", path, str),
            client_key=self.get(data, "client_key", path, str),
            verify=self.get(data, "verify", path, bool, True),
        )
        if settings.client_key is not None and settings.client_cert is None:
            raise self.fail(_join(path, "client_key"), "needs client_cert")
        try:
            context = ssl.create_default_context(cafile=settings.ca_file)
            if settings.client_cert is not None:
                context.load_cert_chain(settings.client_cert, settings.client_key)
        except (OSError, ssl.SSLError) as exc:
            raise self.fail(path, f"cannot load: {exc.strerror or exc}") from None
        return settings

    def kind_capabilities(self, kind: str, preset: str | None) -> Capabilities:
        base = KIND_CAPABILITIES[kind]
        return replace(base, **PRESET_CAPABILITIES.get(preset or "", {}))

    def capabilities(self, raw: object, path: str, base: Capabilities) -> Capabilities:
        """A route's own `capabilities:` over its provider's defaults."""
        if raw is None:
            return base
        data = self.mapping(raw, path, frozenset(Capabilities.__dataclass_fields__))
        values: dict[str, Any] = {}
        for key in data:
            if key == "max_stop_sequences":
                values[key] = self.optional_positive_int(data, key, path)
            elif key == "temperature_max":
                values[key] = self.positive(data, key, path, base.temperature_max)
            else:
                values[key] = self.get(data, key, path, bool, getattr(base, key))
        return replace(base, **values)

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
            capabilities=self.capabilities(
                data.get("capabilities"),
                _join(path, "capabilities"),
                providers[provider_name].capabilities,
            ),
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
        "aliases",
        "request_defaults",
        "privacy",
        "scenarios",
        "metrics",
        "log_format",
        "otel",
        "limits",
        "database",
        "admin_key",
        "budget_timezone",
        "redis",
        "on_outage",
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
        "proxy",
        "tls",
        "max_connections",
        "max_waiting",
        "pool_timeout",
    }
)
_SCENARIO_KEYS = frozenset({"name", "when", "use", "python", "on_error", "timeout"})
_SCENARIO_TIMEOUT_MAX = 10.0
_EFFORTS = frozenset({"low", "medium", "high", "max"})
_ROUTE_KEYS = frozenset(
    {
        "provider",
        "model",
        "quantized",
        "price",
        "max_context",
        "max_output",
        "priority",
        "capabilities",
    }
)


def environment_proxy(base_url: str, environ: Mapping[str, str]) -> tuple[str | None, str]:
    """The proxy the environment sets for `base_url`, and the variable it came from.

    As curl and httpx: `https_proxy`/`HTTPS_PROXY` for https, `http_proxy`/`HTTP_PROXY` for http,
    `all_proxy`/`ALL_PROXY` otherwise; none when `no_proxy`/`NO_PROXY` names the host.
    """
    parts = urlsplit(base_url)
    scheme = parts.scheme
    if _no_proxy(parts.hostname or "", parts.port, environ):
        return None, "NO_PROXY"
    for name in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY", "all_proxy", "ALL_PROXY"):
        value = environ.get(name, "").strip()
        if value:
            return value, name
    return None, ""


def _no_proxy(host: str, port: int | None, environ: Mapping[str, str]) -> bool:
    raw = environ.get("no_proxy") or environ.get("NO_PROXY") or ""
    for entry in (e.strip().lower() for e in raw.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        entry_host, _, entry_port = entry.rpartition(":") if _has_port(entry) else (entry, "", "")
        if entry_port and port is not None and str(port) != entry_port:
            continue
        if _host_matches(host.lower(), entry_host.strip("[]").lstrip(".")):
            return True
    return False


def _has_port(entry: str) -> bool:
    head, sep, tail = entry.rpartition(":")
    return bool(sep) and tail.isdigit() and (head.endswith("]") or ":" not in head)


def _host_matches(host: str, entry: str) -> bool:
    if host == entry or host.endswith("." + entry):
        return True
    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


def _list(names: object) -> str:
    return ", ".join(sorted(names))  # type: ignore[call-overload]
