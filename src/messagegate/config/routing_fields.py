"""The per-request routing fields: what a request, a key and `routing_defaults` may set."""

from __future__ import annotations

from typing import Literal

import msgspec


class RoutingFields(msgspec.Struct, kw_only=True):
    """Per-request routing fields: consumed by the gateway, never sent upstream."""

    allowed_providers: list[str] | None = None
    eu_native: bool | None = None
    allow_zero_data_retention: bool | None = None
    allow_quantization: bool | None = None
    enable_model_fallback: bool | None = None
    preference: Literal["speed", "cost", "balanced"] | None = None


class RoutingSettings(RoutingFields, kw_only=True, forbid_unknown_fields=True):
    """The routing fields as config and key settings write them: nothing else is allowed."""


ROUTING_FIELDS = frozenset(RoutingFields.__struct_fields__)
