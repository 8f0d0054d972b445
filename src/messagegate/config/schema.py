"""The config file's shape: one struct per section, decoded by `msgspec.convert` from YAML.

A new key is one field here (or in `config/objects.py` for the sections decoded as they are): its
name, type, bound and default. What a type can't say (references between sections, patterns,
files that must load) is checked in `config/resolve.py`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from messagegate.config.dialect import DialectSwitches
from messagegate.config.objects import (
    DEFAULT_MAX_BODY_BYTES,
    BreakerPolicy,
    FailoverPolicy,
    Limits,
    NonNegativeInt,
    Positive,
    PositiveInt,
    Price,
    PrivacySettings,
    Timeouts,
    TlsSettings,
)
from messagegate.config.redis import OutagePolicy, RedisSettings
from messagegate.config.routing_fields import RoutingSettings

NonEmptyStr = Annotated[str, msgspec.Meta(min_length=1)]
# A name or a list of names (`effort: max`, `tools_include: [a, b]`).
Names = str | Annotated[list[str], msgspec.Meta(min_length=1)]
SCENARIO_TIMEOUT_MAX = 10.0


class Spec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A section of the file: unknown keys are errors."""


class ProviderSpec(DialectSwitches, Spec, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind: Literal["anthropic", "openai"]
    base_url: str
    api_key: str | None = None
    region: str | None = None
    zero_data_retention: bool = False
    weight: Positive = 1.0
    # Unset: `x-api-key` for kind anthropic, `bearer` for kind openai.
    auth: Literal["x-api-key", "bearer"] | None = None
    timeouts: Timeouts | None = None
    preset: str | None = None
    token_encoding: str = "o200k_base"
    # An http:// proxy URL, or `direct`; unset: the environment's.
    proxy: str | None = None
    tls: TlsSettings | None = None
    max_connections: PositiveInt | None = None
    max_waiting: NonNegativeInt = 100
    pool_timeout: Positive = 10.0


class RouteSpec(Spec, frozen=True):
    provider: str
    # Required, except in a pattern model's route (unset: the name the client asked for).
    model: str | None = None
    quantized: bool = False
    price: Price | None = None
    max_context: PositiveInt | None = None
    max_output: PositiveInt | None = None
    # Unset: the route's position in its list.
    priority: int | None = None
    # Over the provider's: checked against `Capabilities` when merged (config/resolve.py).
    capabilities: dict[str, Any] | None = None


class ModelSpec(Spec, frozen=True):
    routes: Annotated[list[RouteSpec], msgspec.Meta(min_length=1)]
    fallbacks: tuple[str, ...] = ()
    display_name: str | None = None
    created_at: str = "2025-01-01T00:00:00Z"


class RequestDefaultsSpec(Spec, frozen=True):
    model: str | None = None
    max_tokens: PositiveInt | None = None


class ConditionsSpec(Spec, frozen=True):
    model: str | None = None
    thinking: Literal["enabled", "adaptive", "off"] | None = None
    thinking_budget_over: NonNegativeInt | None = None
    effort: Names | None = None
    input_tokens_over: NonNegativeInt | None = None
    session_input_tokens_over: NonNegativeInt | None = None
    tools_include: Names | None = None
    has_image: bool | None = None
    has_document: bool | None = None
    tag: str | None = None
    header: dict[str, str] | None = None
    key: str | None = None


class ScenarioSpec(Spec, frozen=True):
    name: str
    when: ConditionsSpec | None = None
    use: str | None = None
    python: str | None = None
    on_error: Literal["skip", "reject"] = "skip"
    timeout: Annotated[float, msgspec.Meta(gt=0, le=SCENARIO_TIMEOUT_MAX)] = 0.1


class KeySpec(Spec, frozen=True):
    key: NonEmptyStr
    name: str
    routing: RoutingSettings | None = None
    request_defaults: RequestDefaultsSpec | None = None
    scenarios: list[ScenarioSpec] | None = None
    # Checked by config/keyspec.py, the parser the `keys` commands and the admin API share.
    models: Any = None
    rpm: Any = None
    tpm: Any = None
    concurrency: Any = None
    budget: Any = None
    period: Any = None
    budget_mode: Any = None
    expires: Any = None


class MetricsSpec(Spec, frozen=True):
    enabled: bool = True
    auth: Literal["none", "key"] = "none"
    # HOST:PORT of a listener for /metrics only.
    listen: str | None = None
    key_labels: bool = False
    max_key_series: NonNegativeInt = 100


class OtelSpec(Spec, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`otel:`; the exporter and sampler settings are the OTEL_* variables'."""

    enabled: bool = False
    # Prompt and answer text become span attributes only when asked for.
    capture_content: bool = False


class ConfigSpec(Spec, frozen=True, kw_only=True):
    listen: str = "127.0.0.1:8080"
    keys: list[KeySpec] | None = None
    providers: dict[str, ProviderSpec]
    models: dict[str, ModelSpec]
    max_body_bytes: PositiveInt = DEFAULT_MAX_BODY_BYTES
    routing_defaults: RoutingSettings | None = None
    shutdown_grace: Positive = 30.0
    ping_interval: Positive = 15.0
    failover: FailoverPolicy | None = None
    circuit_breaker: BreakerPolicy | None = None
    explicit_provider_models: bool = True
    aliases: dict[str, str] | None = None
    request_defaults: RequestDefaultsSpec | None = None
    privacy: PrivacySettings | None = None
    scenarios: list[ScenarioSpec] | None = None
    metrics: MetricsSpec | None = None
    log_format: Literal["text", "json"] = "text"
    otel: OtelSpec | None = None
    limits: Limits | None = None
    database: str | None = None
    admin_key: Annotated[str, msgspec.Meta(min_length=16)] | None = None
    budget_timezone: str = "UTC"
    # A URL, or a mapping with `url` and options.
    redis: str | RedisSettings | None = None
    on_outage: OutagePolicy | None = None
