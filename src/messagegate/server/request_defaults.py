"""`request_defaults`: the `model` and `max_tokens` a request without them gets, a key's first."""

from __future__ import annotations

from typing import Any

from messagegate.config import ApiKey, Config, RequestDefaults
from messagegate.errors import InvalidRequest


class RequestDefaulter:
    """Each key's defaults merged over the gateway's once, at startup."""

    def __init__(self, config: Config) -> None:
        self.gateway = config.request_defaults
        self.by_key = {
            k.name: k.request_defaults.over(config.request_defaults) for k in config.keys
        }

    def defaults(self, key: ApiKey | None) -> RequestDefaults:
        return self.gateway if key is None else self.by_key[key.name]

    def model(self, data: dict[str, Any], model: str | None, key: ApiKey | None) -> str:
        """The request's model, or its default; a 400 naming the field without either."""
        if model is not None:
            return model
        default = self.defaults(key).model
        if default is None:
            raise InvalidRequest("model: Field required")
        data["model"] = default
        return default

    def max_tokens(self, data: dict[str, Any], max_tokens: int | None, key: ApiKey | None) -> None:
        """Fills in the default `max_tokens` (the upstream needs one); a 400 without one."""
        if max_tokens is not None:
            return
        default = self.defaults(key).max_tokens
        if default is None:
            raise InvalidRequest("max_tokens: Field required")
        data["max_tokens"] = default
