"""From the model name a client sent to the Model that serves it: exact, alias, provider/model,
pattern."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from messagegate.catalogue import no_provider_message
from messagegate.config import Config, Model, Route
from messagegate.errors import NotFound

# Names resolved through a pattern or `provider/model` are remembered; clients choose them, so
# the memory is bounded and the oldest name is forgotten first.
MADE_MODELS_MAX = 1024


class ModelNames:
    """Exact names first, then aliases (of any name the rest resolve), then `provider/model` for a
    configured provider, then the patterns."""

    def __init__(self, config: Config, forget: Callable[[Model], None]) -> None:
        self.config = config
        self._forget = forget
        self._explicit = config.providers if config.explicit_provider_models else {}
        # `provider/model` reuses a configured route's settings (price, limits) when there is one.
        self._configured_routes: dict[tuple[str, str], Route] = {}
        for model in config.models.values():
            for route in model.routes:
                self._configured_routes.setdefault((route.provider.name, route.model), route)
        self.made: dict[str, Model] = {}

    def resolve(self, name: str) -> Model:
        target = self.config.aliases.get(name)
        return self._unaliased(name if target is None else target)

    def _unaliased(self, name: str) -> Model:
        model = self.config.models.get(name) or self.made.get(name)
        if model is not None:
            return model
        model = self._make(name)
        if len(self.made) >= MADE_MODELS_MAX:
            oldest = next(iter(self.made))
            self._forget(self.made.pop(oldest))
        self.made[name] = model
        return model

    def _make(self, name: str) -> Model:
        provider_name, slash, upstream_model = name.partition("/")
        provider = self._explicit.get(provider_name) if slash and upstream_model else None
        if provider is not None:
            route = self._configured_routes.get((provider.name, upstream_model))
            return Model(name, (route or Route(provider=provider, model=upstream_model),))
        for pattern in self.config.patterns:
            if pattern.matches(name):
                routes = tuple(replace(r, model=r.model or name) for r in pattern.routes)
                return Model(name, routes, pattern.fallbacks, created_at=pattern.created_at)
        if not self.config.providers:
            raise NotFound(no_provider_message())
        raise NotFound(f"model: {name}")
