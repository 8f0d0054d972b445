"""The resolved config: the frozen objects the gateway runs on, and their defaults.

The leaf sections (timeouts, limits, policies, prices...) are msgspec structs decoded straight from
the file, so a key, its type, bound and default are written once, here; the rest are built by
`config/resolve.py` from the file's shape in `config/schema.py`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec

from messagegate.config.dialect import OpenAIDialect
from messagegate.config.keyspec import KeyLimits, allows
from messagegate.config.otel_env import OtlpSettings
from messagegate.config.redis import OutagePolicy, RedisSettings

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024

Positive = Annotated[float, msgspec.Meta(gt=0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]


class Secret(str):
    """A string whose repr never shows it, so a key can't leak through logs or tracebacks."""

    def __repr__(self) -> str:
        return "Secret('***')"


class Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A config section read as written: unknown keys are errors, the fields are the defaults."""


class Timeouts(Section, frozen=True):
    """Seconds; first_byte bounds the wait for the first answer, idle the gap between reads."""

    connect: Positive = 10.0
    first_byte: Positive = 300.0
    idle: Positive = 300.0
    total: Positive = 900.0


class FailoverPolicy(Section, frozen=True):
    """Attempts per route before moving on, jittered exponential backoff between them."""

    attempts_per_route: PositiveInt = 2
    backoff_initial: NonNegative = 0.25
    backoff_max: NonNegative = 2.0
    # A retry-after longer than this moves on to the next route instead of waiting.
    max_retry_after: NonNegative = 5.0


class BreakerPolicy(Section, frozen=True):
    """A route is skipped for `cooldown` seconds after `failures_to_open` failures in a row."""

    failures_to_open: PositiveInt = 5
    cooldown: Positive = 30.0


class TlsSettings(Section, frozen=True):
    """A provider's TLS: extra trusted CAs, a client certificate, or (for tests only) no checks."""

    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    verify: bool = True


class Capabilities(Section, frozen=True):
    """What a route can take; a request that needs more skips it (`routing/capabilities.py`)."""

    vision: bool = True
    pdf: bool = True
    tools: bool = True
    thinking: bool = True
    structured_output: bool = True
    max_stop_sequences: PositiveInt | None = None
    temperature_max: Positive = 1.0


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


class Limits(Section, frozen=True):
    """What one peer may make the gateway hold or wait for; beyond it, an error, not an outage."""

    # A request head (request line and headers): over these, 431 (nginx's and Apache's scale).
    max_header_bytes: PositiveInt = 64 * 1024
    max_headers: PositiveInt = 100
    # Seconds a client may take to send a whole request head, and to stay silent within a body.
    header_timeout: Positive = 10.0
    body_timeout: Positive = 30.0
    # Open client connections per process; None: half the open-file limit (each client may
    # need an upstream socket too). Connections beyond it are closed at once, with a log line.
    max_connections: PositiveInt | None = None
    # Request bodies being read or held, all requests together: beyond it, 529 overloaded_error.
    max_inflight_body_bytes: PositiveInt = 256 * 1024 * 1024
    # An upstream's non-streamed answer (decompressed), and one event of a stream.
    max_upstream_answer_bytes: PositiveInt = 64 * 1024 * 1024
    max_upstream_event_bytes: PositiveInt = 16 * 1024 * 1024


class Price(Section, frozen=True):
    """USD per million tokens."""

    input: NonNegative
    output: NonNegative
    cache_read: NonNegative | None = None
    # Cache writes for 5 minutes and for 1 hour; unset: Anthropic's 1.25x and 2x the input price.
    cache_write: NonNegative | None = None
    cache_write_1h: NonNegative | None = None


class PrivacySettings(Section, frozen=True):
    """Privacy mode (docs/privacy-protocol.md): ``optional`` serves both kinds of request,
    ``required`` refuses plaintext ones; `key_file` is written by ``messagegate privacy keygen``.
    A `privacy:` section without `mode` means ``optional``; no section at all, ``off``."""

    mode: Literal["off", "optional", "required"] = "optional"
    key_file: str | None = None
    # Seconds a replaced key still accepts new secrets after a newer one appeared in the file.
    rotation_grace: Positive = 86400.0
    # Attestation evidence served beside the public key (a TEE's quote), read at start.
    evidence_file: str | None = None


PRIVACY_OFF = PrivacySettings(mode="off")


@dataclass(frozen=True, slots=True)
class OtelSettings:
    """OpenTelemetry traces; the exporter and sampler settings come from the OTEL_* variables."""

    enabled: bool = False
    # Prompt and answer text become span attributes only when asked for.
    capture_content: bool = False
    otlp: OtlpSettings = field(default_factory=OtlpSettings)


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
    privacy: PrivacySettings = PRIVACY_OFF
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
