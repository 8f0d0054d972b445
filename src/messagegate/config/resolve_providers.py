"""A provider's settings: its defaults by kind and preset, its proxy and TLS files, checked."""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

import msgspec

from messagegate.config.context import Context
from messagegate.config.dialect import PRESETS, OpenAIDialect
from messagegate.config.environment import environment_proxy
from messagegate.config.objects import (
    KIND_CAPABILITIES,
    PRESET_CAPABILITIES,
    Capabilities,
    Provider,
    Secret,
    Timeouts,
    TlsSettings,
)
from messagegate.config.problems import join
from messagegate.config.schema import ProviderSpec

_DEFAULT_AUTH = {"anthropic": "x-api-key", "openai": "bearer"}


def resolve_provider(ctx: Context, name: str, spec: ProviderSpec) -> Provider:
    path = f"providers.{name}"
    base_url = spec.base_url.rstrip("/")
    if not base_url.startswith(("http://", "https://")):
        raise ctx.fail(join(path, "base_url"), f"expected an http(s) URL, got {base_url!r}")
    if spec.preset is not None and spec.preset not in PRESETS:
        raise ctx.fail(
            join(path, "preset"), f"unknown preset (expected one of: {', '.join(sorted(PRESETS))})"
        )
    return Provider(
        name=name,
        kind=spec.kind,
        base_url=base_url,
        api_key=Secret(spec.api_key) if spec.api_key else None,
        region=spec.region,
        zero_data_retention=spec.zero_data_retention,
        weight=spec.weight,
        auth=spec.auth or _DEFAULT_AUTH[spec.kind],  # type: ignore[arg-type]
        timeouts=spec.timeouts or Timeouts(),
        dialect=_dialect(spec),
        token_encoding=spec.token_encoding,
        proxy=_proxy(ctx, spec, path, base_url),
        tls=_tls(ctx, spec.tls, join(path, "tls")),
        capabilities=_kind_capabilities(spec),
        max_connections=spec.max_connections,
        max_waiting=spec.max_waiting,
        pool_timeout=spec.pool_timeout,
    )


def _dialect(spec: ProviderSpec) -> OpenAIDialect:
    """An OpenAI-compatible provider's preset with its own switches; Anthropic's take none."""
    if spec.kind != "openai":
        return OpenAIDialect()
    return spec.over(PRESETS[spec.preset] if spec.preset is not None else OpenAIDialect())


def _kind_capabilities(spec: ProviderSpec) -> Capabilities:
    """What the provider's routes can take unless they say otherwise: by kind, then preset."""
    preset = PRESET_CAPABILITIES.get(spec.preset or "", {})
    return msgspec.structs.replace(KIND_CAPABILITIES[spec.kind], **preset)


def _proxy(ctx: Context, spec: ProviderSpec, path: str, base_url: str) -> Secret | None:
    """The provider's own `proxy:` (`direct` for none), else the environment's, as curl does."""
    where = join(path, "proxy")
    if spec.proxy is None:
        url, where = environment_proxy(base_url, ctx.environ)
        if url is None:
            return None
    elif spec.proxy == "direct":
        return None
    else:
        url = spec.proxy
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise ctx.fail(where, f"expected an http:// proxy URL, got scheme {parts.scheme!r}")
    return Secret(parts.geturl())


def _tls(ctx: Context, settings: TlsSettings | None, path: str) -> TlsSettings:
    """The TLS files, loaded once here so that a wrong one stops the start, not a request."""
    if settings is None:
        return TlsSettings()
    if settings.client_key is not None and settings.client_cert is None:
        raise ctx.fail(join(path, "client_key"), "needs client_cert")
    try:
        context = ssl.create_default_context(cafile=settings.ca_file)
        if settings.client_cert is not None:
            context.load_cert_chain(settings.client_cert, settings.client_key)
    except (OSError, ssl.SSLError) as exc:
        raise ctx.fail(path, f"cannot load: {exc.strerror or exc}") from None
    return settings
