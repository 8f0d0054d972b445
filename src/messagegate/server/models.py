"""``GET /v1/models`` and ``GET /v1/models/{id}``: the configured models, Anthropic's format."""

from __future__ import annotations

from typing import Any

from messagegate.config import Config, Model
from messagegate.errors import InvalidRequest, NotFound

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


def model_object(model: Model) -> dict[str, Any]:
    return {
        "type": "model",
        "id": model.name,
        "display_name": model.display_name or model.name,
        "created_at": model.created_at,
    }


def get_model(config: Config, model_id: str) -> dict[str, Any]:
    model = config.models.get(model_id)
    if model is None:
        raise NotFound(f"model: {model_id}")
    return model_object(model)


def list_models(config: Config, params: dict[str, str]) -> dict[str, Any]:
    """A page of models after ``after_id`` or before ``before_id``, ``limit`` long."""
    names = list(config.models)
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
        "data": [model_object(config.models[name]) for name in page],
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
