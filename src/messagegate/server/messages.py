"""``POST /v1/messages`` and ``/v1/messages/count_tokens``: validate, route, answer."""

from __future__ import annotations

from typing import Any

import orjson

from messagegate.api.headers import CLIENT_API_HEADERS
from messagegate.api.nesting import check_nesting
from messagegate.api.schema import parse_count_tokens_request, parse_messages_request
from messagegate.config import ApiKey, Config
from messagegate.config.routing_fields import ROUTING_FIELDS
from messagegate.errors import InvalidRequest, PermissionDenied, UpstreamProtocolError
from messagegate.ledger.row import Outcome
from messagegate.limits.limiter import Limiter, Reservation, header_pairs
from messagegate.privacy.gateway import ANSWER_HEADERS as PRIVATE_ANSWER
from messagegate.routing.policy import RoutingSettings
from messagegate.routing.router import Routed, Router, RouteRequest
from messagegate.routing.scenario_choice import Choice, ScenarioChooser, all_scenarios
from messagegate.server.accounting import Accounting
from messagegate.server.exchange import Exchange, encode_headers
from messagegate.server.request_defaults import RequestDefaulter
from messagegate.server.streaming import StreamOutcome, relay
from messagegate.telemetry.metrics import GatewayMetrics
from messagegate.translate.token_count import InputCount

SCENARIO_HEADER = "x-messagegate-scenario"


class MessagesEndpoint:
    def __init__(
        self,
        config: Config,
        router: Router,
        accounting: Accounting | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.config = config
        self.router = router
        self.accounting = accounting or Accounting(Limiter())
        self.metrics = metrics
        # By key name: the key's routing defaults (to see that they changed) and their settings.
        self._key_settings: dict[str | None, tuple[object, RoutingSettings]] = {}
        self.defaults = RequestDefaulter(config)
        # Without scenarios, requests pay nothing for them.
        self.scenarios = ScenarioChooser(config, router) if all_scenarios(config) else None

    async def create(self, exchange: Exchange, key: ApiKey | None) -> None:
        data, size = await self._read_json(exchange)
        request = parse_messages_request(data)
        model = self.defaults.model(data, request.model, key)
        self.defaults.max_tokens(data, request.max_tokens, key)
        if self.scenarios is None:
            route_request = self._route_request(exchange, data, model, key)
        else:
            route_request = await self._scenario_request(exchange, data, model, key)
        accounting = self.accounting
        max_tokens = data["max_tokens"]
        ticket: Reservation | None
        if accounting.shared is None:
            ticket = accounting.admit(key, route_request.model, size, max_tokens)
        else:
            ticket = await accounting.admit_shared(key, route_request.model, size, max_tokens)
        try:
            if request.stream:
                await self._stream(exchange, route_request, key, ticket)
                return
            routed = await exchange.unless_client_leaves(self.router.complete(route_request))
            self._log_route(exchange, routed)
            usage = routed.value.usage
            self.accounting.finish(exchange, key, ticket, routed, usage, Outcome.COMPLETE, False)
            limit_lines = ticket.head_lines() if ticket is not None else b""
            headers = routed.value.headers
            if headers and limit_lines:
                headers = _relayed(headers, limit_lines)
            headers = headers | _route_headers(routed, exchange)
            if exchange.privacy is not None:
                body = exchange.privacy.seal_answer(routed.value.body)
                await exchange.respond(200, body, headers | PRIVATE_ANSWER, limit_lines)
            else:
                try:
                    body = orjson.dumps(routed.value.body)
                except orjson.JSONEncodeError:
                    raise UpstreamProtocolError(
                        "the upstream's answer is nested too deeply"
                    ) from None
                await exchange.respond(200, body, headers, limit_lines)
            exchange.log_fields["tokens"] = _tokens(usage)
            if self.scenarios is not None:
                self.scenarios.remember(data, usage)
        finally:
            if ticket is not None:
                ticket.release()  # an answer that never came uses nothing; else a no-op

    async def count_tokens(self, exchange: Exchange, key: ApiKey | None) -> None:
        data, _ = await self._read_json(exchange)
        request = parse_count_tokens_request(data)
        model = self.defaults.model(data, request.model, key)
        if self.scenarios is None:
            route_request = self._route_request(exchange, data, model, key)
        else:
            route_request = await self._scenario_request(exchange, data, model, key)
        routed = await self.router.count_tokens(route_request)
        self._log_route(exchange, routed)
        answer = {"input_tokens": routed.value}
        headers = _route_headers(routed, exchange)
        if exchange.privacy is not None:
            body = exchange.privacy.seal_answer(answer)
            await exchange.respond(200, body, headers | PRIVATE_ANSWER)
        else:
            await exchange.respond_json(answer, headers)

    async def _stream(
        self,
        exchange: Exchange,
        route_request: RouteRequest,
        key: ApiKey | None,
        ticket: Reservation | None,
    ) -> None:
        writer = exchange.body_writer()  # before any upstream work: without one, nothing opens
        routed = await exchange.unless_client_leaves(self.router.open_stream(route_request))
        self._log_route(exchange, routed)
        stream = routed.value
        limit_lines = ticket.head_lines() if ticket is not None else b""
        relayed = stream.headers
        if relayed and limit_lines:
            relayed = _relayed(relayed, limit_lines)
        headers = encode_headers(relayed | _route_headers(routed, exchange))
        if exchange.privacy is not None:
            stream = exchange.privacy.seal_stream(stream)
            headers += encode_headers(PRIVATE_ANSWER)
        if self.metrics is not None:
            self.metrics.stream_opened(exchange)

        billed = stream.usage

        def finish(outcome: StreamOutcome) -> None:
            nonlocal billed
            if outcome is StreamOutcome.DISCONNECTED:
                # A cut stream is billed for what the client got, not what the upstream made.
                billed = stream.delivered_usage()
            ended = _OUTCOMES[outcome]
            self.accounting.finish(exchange, key, ticket, routed, billed, ended, True)

        outcome = await relay(
            exchange, writer, stream, headers, limit_lines, self.config.ping_interval, finish
        )
        if outcome is StreamOutcome.COMPLETED:
            self.router.record_stream(routed, stream.usage)
            if self.scenarios is not None:
                self.scenarios.remember(route_request.body, stream.usage)
        elif outcome is StreamOutcome.FAILED:
            self.router.record_failure(routed)
        exchange.log_fields["tokens"] = _tokens(billed)

    async def _read_json(self, exchange: Exchange) -> tuple[Any, int]:
        body = await exchange.read_body(self.config.max_body_bytes)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
        # Decrypted in memory only, after the body limit and before validation and routing.
        if exchange.privacy is not None:
            data = exchange.privacy.open_request(data)
        check_nesting(data)
        return data, len(body)

    def _route_request(
        self,
        exchange: Exchange,
        data: dict[str, Any],
        model_name: str,
        key: ApiKey | None,
        choice: Choice | None = None,
    ) -> RouteRequest:
        exchange.log_fields["model"] = model_name
        if choice is None and key is not None and key.models and not key.allows(model_name):
            raise PermissionDenied(f"this key may not use the model {model_name!r}")
        model = self.router.model(model_name) if choice is None else choice.model
        if model.name != model_name and choice is None:  # an alias: the log names its model
            exchange.log_fields["model"] = model.name
            exchange.log_fields["alias"] = model_name
        settings = self._settings(data, key)
        headers = {k: exchange.headers[k] for k in CLIENT_API_HEADERS if k in exchange.headers}
        beta = b"beta=true" in exchange.query and exchange.query_params().get("beta") == "true"
        # A scenario that counted the input hands its count on: nothing counts it again.
        counted = choice.input_tokens if choice is not None else None
        count = InputCount(data, {"o200k_base": counted}) if counted is not None else None
        return RouteRequest(
            model=model,
            body=data,
            headers=headers,
            settings=settings,
            beta=beta,
            input_count=count,
        )

    async def _scenario_request(
        self, exchange: Exchange, data: dict[str, Any], model_name: str, key: ApiKey | None
    ) -> RouteRequest:
        """The request with the model the first matching scenario chose (the access log says)."""
        assert self.scenarios is not None
        exchange.log_fields["model"] = model_name
        allows = key.allows if key is not None and key.models else None
        if allows is not None and not allows(model_name):
            raise PermissionDenied(f"this key may not use the model {model_name!r}")
        name = key.name if key is not None else None
        settings = self._settings(data, key)
        choice = await self.scenarios.choose(data, exchange.headers, name, settings, allows)
        if choice.skipped:
            exchange.log_fields["scenario_skipped"] = " | ".join(choice.skipped)
        if choice.scenario is None:
            return self._route_request(exchange, data, model_name, key, choice)
        exchange.log_fields["scenario"] = choice.scenario
        exchange.log_fields["requested_model"] = model_name
        return self._route_request(exchange, data, choice.model.name, key, choice)

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
        exchange.served = routed
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


def _relayed(upstream: dict[str, str], limit_lines: bytes) -> dict[str, str]:
    """The upstream's relayed headers, less those the key's own limit lines replace: the client
    gets one `anthropic-ratelimit-*` header of a name, its key's."""
    names = {name.decode("latin-1") for name, _ in header_pairs(limit_lines)}
    return {name: value for name, value in upstream.items() if name not in names}


def _route_headers(routed: Routed[Any], exchange: Exchange) -> dict[str, str]:
    headers = {
        "x-messagegate-provider": routed.route.provider.name,
        "x-messagegate-upstream-model": routed.route.model,
        "x-messagegate-attempts": str(routed.attempts),
    }
    scenario = exchange.log_fields.get("scenario")
    if scenario is not None:
        headers[SCENARIO_HEADER] = scenario
    return headers


def _tokens(usage: Any) -> str:
    estimated = " (estimated)" if usage.estimated else ""
    return f"in={usage.input_tokens} out={usage.output_tokens}{estimated}"
