"""From the file's shape to the objects the gateway runs on, with the checks across sections."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from messagegate.config.context import Context
from messagegate.config.environment import default_database_path
from messagegate.config.keyspec import KeyFieldError, parse_key_settings
from messagegate.config.objects import (
    PRIVACY_OFF,
    ApiKey,
    BreakerPolicy,
    Capabilities,
    Config,
    FailoverPolicy,
    Limits,
    MetricsSettings,
    Model,
    OtelSettings,
    PrivacySettings,
    Provider,
    RequestDefaults,
    Route,
    RoutingDefaults,
    Secret,
    is_pattern,
)
from messagegate.config.otel_env import OtelVariableError, parse_otlp
from messagegate.config.problems import join
from messagegate.config.redis import OutagePolicy, resolve_redis
from messagegate.config.resolve_providers import resolve_provider
from messagegate.config.resolve_scenarios import check_targets, resolve_scenarios
from messagegate.config.routing_fields import RoutingSettings
from messagegate.config.schema import (
    ConfigSpec,
    KeySpec,
    MetricsSpec,
    ModelSpec,
    OtelSpec,
    RequestDefaultsSpec,
    RouteSpec,
)

# The key settings config/keyspec.py checks (the `keys` commands and the admin API share them).
_KEY_SETTINGS = (
    "models",
    "rpm",
    "tpm",
    "concurrency",
    "budget",
    "period",
    "budget_mode",
    "expires",
)


def resolve_config(ctx: Context, spec: ConfigSpec) -> Config:
    host, port = _listen(ctx, spec.listen, "listen")
    providers = {name: resolve_provider(ctx, name, p) for name, p in spec.providers.items()}
    every_model = _models(ctx, spec.models, providers)
    models = {name: m for name, m in every_model.items() if not m.is_pattern}
    # Longer patterns are more specific; sorted() keeps file order among equals.
    patterns = tuple(
        sorted((m for m in every_model.values() if m.is_pattern), key=lambda m: -len(m.name))
    )

    def servable(name: str) -> bool:
        """Would a request naming `name` find a model (exact, provider/model or pattern)?"""
        provider, slash, rest = name.partition("/")
        return (
            name in models
            or (spec.explicit_provider_models and bool(slash and rest) and provider in providers)
            or any(p.matches(name) for p in patterns)
        )

    aliases = _aliases(ctx, spec.aliases or {}, models, servable)

    def known(name: str) -> bool:
        return name in aliases or servable(name)

    keys = _keys(ctx, spec.keys or [])
    defaults = _request_defaults(spec.request_defaults)
    scenarios = resolve_scenarios(ctx, spec.scenarios, "scenarios")
    _check_model(ctx, defaults.model, "request_defaults.model", known)
    check_targets(ctx, scenarios, "scenarios", known)
    for i, key in enumerate(keys):
        _check_model(ctx, key.request_defaults.model, f"keys.{i}.request_defaults.model", known)
        check_targets(ctx, key.scenarios, f"keys.{i}.scenarios", known)
    return Config(
        host=host,
        port=port,
        keys=keys,
        providers=providers,
        models=models,
        patterns=patterns,
        explicit_provider_models=spec.explicit_provider_models,
        max_body_bytes=spec.max_body_bytes,
        routing_defaults=_routing(spec.routing_defaults),
        shutdown_grace=spec.shutdown_grace,
        ping_interval=spec.ping_interval,
        failover=spec.failover or FailoverPolicy(),
        breaker=spec.circuit_breaker or BreakerPolicy(),
        privacy=_privacy(ctx, spec.privacy),
        source=ctx.source,
        aliases=aliases,
        request_defaults=defaults,
        scenarios=scenarios,
        metrics=_metrics(ctx, spec.metrics, has_keys=bool(spec.keys)),
        log_format=spec.log_format,
        otel=_otel(ctx, spec.otel),
        limits=spec.limits or Limits(),
        database=spec.database,
        default_database=default_database_path(ctx.environ),
        admin_key=_admin_key(ctx, spec),
        budget_timezone=_timezone(ctx, spec.budget_timezone),
        redis=resolve_redis(ctx, spec.redis),
        on_outage=spec.on_outage or OutagePolicy(),
    )


def _listen(ctx: Context, value: str, path: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ctx.fail(path, f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _models(
    ctx: Context, specs: Mapping[str, ModelSpec], providers: Mapping[str, Provider]
) -> dict[str, Model]:
    models = {name: _model(ctx, name, spec, providers) for name, spec in specs.items()}
    for model in models.values():
        for i, fallback in enumerate(model.fallbacks):
            if fallback not in models or is_pattern(fallback):
                raise ctx.fail(
                    f"models.{model.name}.fallbacks.{i}",
                    f"unknown model {fallback!r} (a fallback names an exact model)",
                )
    return models


def _model(ctx: Context, name: str, spec: ModelSpec, providers: Mapping[str, Provider]) -> Model:
    path = f"models.{name}.routes"
    return Model(
        name=name,
        routes=tuple(
            _route(ctx, route, f"{path}.{i}", providers, i, is_pattern(name))
            for i, route in enumerate(spec.routes)
        ),
        fallbacks=spec.fallbacks,
        display_name=spec.display_name,
        created_at=spec.created_at,
    )


def _route(
    ctx: Context,
    spec: RouteSpec,
    path: str,
    providers: Mapping[str, Provider],
    position: int,
    in_pattern: bool,
) -> Route:
    provider = providers.get(spec.provider)
    if provider is None:
        raise ctx.fail(join(path, "provider"), f"unknown provider {spec.provider!r}")
    # A pattern's route sends the requested name unless it names its own upstream model.
    if spec.model is None and not in_pattern:
        raise ctx.fail(join(path, "model"), "is required")
    return Route(
        provider=provider,
        model=spec.model or "",
        quantized=spec.quantized,
        price=spec.price,
        max_context=spec.max_context,
        max_output=spec.max_output,
        priority=position if spec.priority is None else spec.priority,
        capabilities=_capabilities(ctx, spec, provider.capabilities, join(path, "capabilities")),
    )


def _capabilities(ctx: Context, spec: RouteSpec, base: Capabilities, path: str) -> Capabilities:
    """A route's own `capabilities:` over its provider's defaults."""
    return base if spec.capabilities is None else ctx.overlay(base, spec.capabilities, path)


def _aliases(
    ctx: Context,
    specs: Mapping[str, str],
    models: Mapping[str, Model],
    servable: Callable[[str], bool],
) -> dict[str, str]:
    for name, target in specs.items():
        if name in models:
            raise ctx.fail(f"aliases.{name}", f"{name!r} is already a model's name")
        if not servable(target):
            raise ctx.fail(
                f"aliases.{name}", f"expected the name of a configured model, got {target!r}"
            )
    return dict(specs)


def _check_model(ctx: Context, name: str | None, path: str, known: Callable[[str], bool]) -> None:
    if name is not None and not known(name):
        raise ctx.fail(path, f"unknown model {name!r}")


def _request_defaults(spec: RequestDefaultsSpec | None) -> RequestDefaults:
    if spec is None:
        return RequestDefaults()
    return RequestDefaults(model=spec.model, max_tokens=spec.max_tokens)


def _routing(settings: RoutingSettings | None) -> RoutingDefaults:
    if settings is None:
        return RoutingDefaults()
    written = msgspec.structs.asdict(settings)
    return RoutingDefaults(values={k: v for k, v in written.items() if v is not None})


def _keys(ctx: Context, specs: list[KeySpec]) -> tuple[ApiKey, ...]:
    keys = tuple(_key(ctx, spec, f"keys.{i}") for i, spec in enumerate(specs))
    seen: set[str] = set()
    for i, key in enumerate(keys):
        if key.name in seen:
            raise ctx.fail(f"keys.{i}.name", f"duplicate key name {key.name!r}")
        seen.add(key.name)
    return keys


def _key(ctx: Context, spec: KeySpec, path: str) -> ApiKey:
    written = {name: getattr(spec, name) for name in _KEY_SETTINGS}
    try:
        settings = parse_key_settings({k: v for k, v in written.items() if v is not None})
    except KeyFieldError as exc:
        raise ctx.fail(join(path, exc.field), exc.problem) from None
    return ApiKey(
        key=Secret(spec.key),
        name=spec.name,
        routing=_routing(spec.routing),
        request_defaults=_request_defaults(spec.request_defaults),
        scenarios=resolve_scenarios(ctx, spec.scenarios, join(path, "scenarios")),
        models=settings.models,
        limits=settings.limits,
        expires_at=settings.expires_at,
    )


def _privacy(ctx: Context, settings: PrivacySettings | None) -> PrivacySettings:
    if settings is None:
        return PRIVACY_OFF
    if settings.mode != "off" and not settings.key_file:
        raise ctx.fail("privacy.key_file", "is required unless mode is off")
    return settings


def _metrics(ctx: Context, spec: MetricsSpec | None, *, has_keys: bool) -> MetricsSettings:
    if spec is None:
        return MetricsSettings()
    if spec.auth == "key" and not has_keys:
        raise ctx.fail("metrics.auth", "'key' needs gateway keys (`keys:`)")
    return MetricsSettings(
        enabled=spec.enabled,
        auth=spec.auth,
        listen=None if spec.listen is None else _listen(ctx, spec.listen, "metrics.listen"),
        key_labels=spec.key_labels,
        max_key_series=spec.max_key_series,
    )


def _otel(ctx: Context, spec: OtelSpec | None) -> OtelSettings:
    if spec is None:
        return OtelSettings()
    if not spec.enabled:
        return OtelSettings(capture_content=spec.capture_content)
    try:
        otlp = parse_otlp(ctx.environ)
    except OtelVariableError as error:
        raise ctx.fail("otel", str(error)) from None
    return OtelSettings(enabled=True, capture_content=spec.capture_content, otlp=otlp)


def _admin_key(ctx: Context, spec: ConfigSpec) -> Secret | None:
    if spec.admin_key is None:
        return None
    if any(spec.admin_key == key.key for key in spec.keys or ()):
        raise ctx.fail("admin_key", "must not be a gateway key")
    return Secret(spec.admin_key)


def _timezone(ctx: Context, name: str) -> str:
    try:
        ZoneInfo(name)
    except (ValueError, ZoneInfoNotFoundError):
        raise ctx.fail("budget_timezone", f"unknown time zone {name!r}") from None
    return name
