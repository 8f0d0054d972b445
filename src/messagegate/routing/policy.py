"""The effective routing settings of one request, and the hard filters they impose on routes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from messagegate.config import Route
from messagegate.config.routing_fields import ROUTING_FIELDS

BUILT_IN_DEFAULTS: Mapping[str, Any] = {
    "allowed_providers": None,
    "eu_native": False,
    "allow_zero_data_retention": False,
    "allow_quantization": True,
    "enable_model_fallback": True,
    "preference": None,
}


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    allowed_providers: frozenset[str] | None
    eu_native: bool
    allow_zero_data_retention: bool
    allow_quantization: bool
    enable_model_fallback: bool
    preference: str | None

    @classmethod
    def resolve(cls, *layers: Mapping[str, Any]) -> RoutingSettings:
        """The first layer that sets a field wins: request, then key, then gateway defaults."""
        values = dict(BUILT_IN_DEFAULTS)
        for layer in reversed(layers):
            values.update((k, v) for k, v in layer.items() if k in ROUTING_FIELDS and v is not None)
        allowed = values["allowed_providers"]
        values["allowed_providers"] = frozenset(allowed) if allowed is not None else None
        return cls(**values)


def exclusion(route: Route, settings: RoutingSettings, input_tokens: int | None) -> str | None:
    """The filter that rules this route out, or None when the route is eligible."""
    provider = route.provider
    if settings.allowed_providers is not None and provider.name not in settings.allowed_providers:
        return "allowed_providers"
    if settings.eu_native and provider.region != "eu":
        return "eu_native"
    if settings.allow_zero_data_retention and not provider.zero_data_retention:
        return "allow_zero_data_retention"
    if not settings.allow_quantization and route.quantized:
        return "allow_quantization"
    if (
        input_tokens is not None
        and route.max_context is not None
        and input_tokens > route.max_context
    ):
        return "max_context"
    return None
