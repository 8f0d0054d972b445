"""``GET /v1/models`` and ``GET /v1/models/{id}``: the configured models, Anthropic's format.

The list holds the exact names, then each pattern (its id is the glob, its display name says
which providers serve it), then the aliases; one model is looked up as a request's `model` is.
"""

from __future__ import annotations

from typing import Any

from messagegate.config import Model
from messagegate.errors import InvalidRequest
from messagegate.routing.names import ModelNames

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


def model_object(model: Model, name: str | None = None) -> dict[str, Any]:
    """The model as Anthropic lists one; `name` when listed under an alias."""
    display_name = name or model.display_name
    if display_name is None and model.is_pattern:
        providers = ", ".join(dict.fromkeys(r.provider.name for r in model.routes))
        display_name = f"{model.name} (any model of {providers} matching it)"
    return {
        "type": "model",
        "id": name or model.name,
        "display_name": display_name or model.name,
        "created_at": model.created_at,
    }


def get_model(names: ModelNames, model_id: str) -> dict[str, Any]:
    model = names.resolve(model_id)
    return model_object(model, model_id if model_id in names.config.aliases else None)


def list_models(names: ModelNames, params: dict[str, str]) -> dict[str, Any]:
    """A page of models (patterns, then aliases after them) after ``after_id`` or before
    ``before_id``, ``limit`` long."""
    config = names.config
    listed: dict[str, dict[str, Any]] = {
        **{name: model_object(m) for name, m in config.models.items()},
        **{m.name: model_object(m) for m in config.patterns},
    }
    for alias in config.aliases:
        listed.setdefault(alias, get_model(names, alias))
    ids = list(listed)
    limit = _limit(params.get("limit"))
    after, before = params.get("after_id"), params.get("before_id")
    if after is not None:
        ids = ids[_position(ids, after, "after_id") + 1 :]
        page, has_more = ids[:limit], len(ids) > limit
    elif before is not None:
        ids = ids[: _position(ids, before, "before_id")]
        page, has_more = ids[-limit:], len(ids) > limit
    else:
        page, has_more = ids[:limit], len(ids) > limit
    return {
        "data": [listed[name] for name in page],
        "has_more": has_more,
        "first_id": page[0] if page else None,
        "last_id": page[-1] if page else None,
    }


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidRequest(f"limit: must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def _position(names: list[str], model_id: str, field: str) -> int:
    if model_id not in names:
        raise InvalidRequest(f"{field}: unknown model {model_id!r}")
    return names.index(model_id)
