"""``GET /v1/models`` and ``GET /v1/models/{id}``: the configured models and their aliases,
Anthropic's format."""

from __future__ import annotations

from typing import Any

from messagegate.config import Config, Model
from messagegate.errors import InvalidRequest, NotFound

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


def model_object(model: Model, name: str | None = None) -> dict[str, Any]:
    """The model as Anthropic lists one; `name` when listed under an alias."""
    return {
        "type": "model",
        "id": name or model.name,
        "display_name": name or model.display_name or model.name,
        "created_at": model.created_at,
    }


def get_model(config: Config, model_id: str) -> dict[str, Any]:
    model = config.models.get(model_id)
    if model is not None:
        return model_object(model)
    target = config.aliases.get(model_id)
    if target is None:
        raise NotFound(f"model: {model_id}")
    return model_object(config.models[target], model_id)


def list_models(config: Config, params: dict[str, str]) -> dict[str, Any]:
    """A page of models (aliases after them) after ``after_id`` or before ``before_id``."""
    names = [*config.models, *config.aliases]
    limit = _limit(params.get("limit"))
    after, before = params.get("after_id"), params.get("before_id")
    if after is not None:
        names = names[_position(names, after, "after_id") + 1 :]
        page, has_more = names[:limit], len(names) > limit
    elif before is not None:
        names = names[: _position(names, before, "before_id")]
        page, has_more = names[-limit:], len(names) > limit
    else:
        page, has_more = names[:limit], len(names) > limit
    return {
        "data": [get_model(config, name) for name in page],
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
