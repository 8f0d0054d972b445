"""``POST /v1/messages`` and ``/v1/messages/count_tokens``: validate, route, answer."""

from __future__ import annotations

from typing import Any

import orjson

from messagegate.api.schema import (
    ROUTING_FIELDS,
    parse_count_tokens_request,
    parse_messages_request,
)
from messagegate.config import ApiKey, Config
from messagegate.errors import InvalidRequest, PermissionDenied
from messagegate.ledger.row import Outcome
from messagegate.limits.limiter import Limiter, Ticket
from messagegate.routing.policy import RoutingSettings
from messagegate.routing.router import Routed, Router, RouteRequest
from messagegate.server.accounting import Accounting
from messagegate.server.exchange import Exchange, encode_headers
from messagegate.server.streaming import StreamOutcome, relay

_API_HEADERS = ("anthropic-version", "anthropic-beta")


class MessagesEndpoint:
    def __init__(
        self, config: Config, router: Router, accounting: Accounting | None = None
    ) -> None:
        self.config = config
        self.router = router
        self.accounting = accounting or Accounting(Limiter())
        # By key name: the key's routing defaults (to see that they changed) and their settings.
        self._key_settings: dict[str | None, tuple[object, RoutingSettings]] = {}

    async def create(self, exchange: Exchange, key: ApiKey | None) -> None:
        data, size = await self._read_json(exchange)
        request = parse_messages_request(data)
        route_request = self._route_request(exchange, data, request.model, key)
        ticket = self.accounting.admit(key, route_request.model, size, request.max_tokens)
        try:
            if request.stream:
                await self._stream(exchange, route_request, key, ticket)
                return
            routed = await exchange.unless_client_leaves(self.router.complete(route_request))
            self._log_route(exchange, routed)
            usage = routed.value.usage
            self.accounting.finish(exchange, key, ticket, routed, usage, Outcome.COMPLETE, False)
            headers = routed.value.headers | _route_headers(routed)
            if ticket is not None:
                headers |= ticket.headers()
            await exchange.respond(200, orjson.dumps(routed.value.body), headers)
            exchange.log_fields["tokens"] = _tokens(routed.value.usage)
        finally:
            if ticket is not None:
                ticket.release()  # an answer that never came uses nothing; else a no-op

    async def count_tokens(self, exchange: Exchange, key: ApiKey | None) -> None:
        data, _ = await self._read_json(exchange)
        request = parse_count_tokens_request(data)
        routed = await self.router.count_tokens(
            self._route_request(exchange, data, request.model, key)
        )
        self._log_route(exchange, routed)
        await exchange.respond_json({"input_tokens": routed.value}, _route_headers(routed))

    async def _stream(
        self,
        exchange: Exchange,
        route_request: RouteRequest,
        key: ApiKey | None,
        ticket: Ticket | None,
    ) -> None:
        writer = exchange.body_writer()  # before any upstream work: without one, nothing opens
        routed = await exchange.unless_client_leaves(self.router.open_stream(route_request))
        self._log_route(exchange, routed)
        stream = routed.value
        limit_headers = ticket.headers() if ticket is not None else {}
        headers = encode_headers(stream.headers | _route_headers(routed) | limit_headers)

        def finish(outcome: StreamOutcome) -> None:
            ended = _OUTCOMES[outcome]
            self.accounting.finish(exchange, key, ticket, routed, stream.usage, ended, True)

        outcome = await relay(exchange, writer, stream, headers, self.config.ping_interval, finish)
        if outcome is StreamOutcome.COMPLETED:
            self.router.record_stream(routed, stream.usage)
        elif outcome is StreamOutcome.FAILED:
            self.router.record_failure(routed)
        exchange.log_fields["tokens"] = _tokens(stream.usage)

    async def _read_json(self, exchange: Exchange) -> tuple[Any, int]:
        body = await exchange.read_body(self.config.max_body_bytes)
        try:
            return orjson.loads(body), len(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(f"request body is not valid JSON: {exc}") from None

    def _route_request(
        self, exchange: Exchange, data: dict[str, Any], model_name: str, key: ApiKey | None
    ) -> RouteRequest:
        exchange.log_fields["model"] = model_name
        if key is not None and key.models and not key.allows(model_name):
            raise PermissionDenied(f"this key may not use the model {model_name!r}")
        model = self.router.model(model_name)
        settings = self._settings(data, key)
        headers = {k: exchange.headers[k] for k in _API_HEADERS if k in exchange.headers}
        beta = b"beta=true" in exchange.query and exchange.query_params().get("beta") == "true"
        return RouteRequest(model=model, body=data, headers=headers, settings=settings, beta=beta)

    def _settings(self, data: dict[str, Any], key: ApiKey | None) -> RoutingSettings:
        """The request's routing settings; without routing fields, its key's defaults (cached)."""
        if ROUTING_FIELDS.isdisjoint(data):
            name, defaults = (key.name, key.routing) if key is not None else (None, None)
            cached = self._key_settings.get(name)
            if cached is None or cached[0] is not defaults:
                cached = self._key_settings[name] = (defaults, self._resolve({}, key))
            return cached[1]
        return self._resolve(data, key)

    def _resolve(self, data: dict[str, Any], key: ApiKey | None) -> RoutingSettings:
        key_defaults = key.routing.values if key is not None else {}
        return RoutingSettings.resolve(data, key_defaults, self.config.routing_defaults.values)

    def _log_route(self, exchange: Exchange, routed: Routed[Any]) -> None:
        exchange.log_fields["provider"] = routed.route.provider.name
        exchange.log_fields["route"] = routed.route.label
        exchange.log_fields["attempts"] = str(routed.attempts)
        if routed.model.name != exchange.log_fields.get("model"):
            exchange.log_fields["fallback_model"] = routed.model.name
        if routed.skipped:
            exchange.log_fields["skipped"] = " | ".join(routed.skipped)


_OUTCOMES = {
    StreamOutcome.COMPLETED: Outcome.COMPLETE,
    StreamOutcome.DISCONNECTED: Outcome.CLIENT_ABORTED,
    StreamOutcome.FAILED: Outcome.UPSTREAM_FAILED,
}


def _route_headers(routed: Routed[Any]) -> dict[str, str]:
    return {
        "x-messagegate-provider": routed.route.provider.name,
        "x-messagegate-upstream-model": routed.route.model,
        "x-messagegate-attempts": str(routed.attempts),
    }


def _tokens(usage: Any) -> str:
    estimated = " (estimated)" if usage.estimated else ""
    return f"in={usage.input_tokens} out={usage.output_tokens}{estimated}"
