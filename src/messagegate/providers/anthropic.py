"""The client for Anthropic-native upstreams: POST {base_url}/v1/messages, relayed faithfully."""

from __future__ import annotations

import orjson

from messagegate.api.headers import CLIENT_API_HEADERS, DEFAULT_VERSION, TRACE_HEADERS, VERSION
from messagegate.api.usage import Usage
from messagegate.config import Provider
from messagegate.errors import UpstreamProtocolError
from messagegate.providers.base import Completion, EventStream, UpstreamCall
from messagegate.providers.dialer import Dialer
from messagegate.providers.http import (
    Scrubber,
    auth_headers,
    redirect_error,
    relayed_headers,
    upstream_errors,
)
from messagegate.providers.pool import ConnectionPool, Endpoint, RequestHead, UpstreamResponse
from messagegate.providers.slots import ConnectionSlots
from messagegate.providers.stream import open_event_stream
from messagegate.translate.anthropic import (
    anthropic_stream,
    classify_anthropic_error,
    to_anthropic_body,
    with_client_model,
)

_FORWARDED_HEADERS = (*CLIENT_API_HEADERS, *TRACE_HEADERS)


class AnthropicClient:
    def __init__(
        self, pool: ConnectionPool, provider: Provider, scrubber: Scrubber | None = None
    ) -> None:
        self.pool = pool
        self.provider = provider
        self.scrubber = scrubber or Scrubber.of([provider])
        self.slots = ConnectionSlots.of(provider)
        messages = Endpoint.parse(f"{provider.base_url}/v1/messages")
        count = Endpoint.parse(f"{provider.base_url}/v1/messages/count_tokens")
        auth = {"content-type": "application/json", **auth_headers(provider)}
        dialer = Dialer.for_provider(provider, pool.resolver)
        self.messages = RequestHead(messages, auth, dialer)
        self.beta_messages = RequestHead(messages.with_query("beta=true"), auth, dialer)
        self.count = RequestHead(count, auth, dialer)
        self.beta_count = RequestHead(count.with_query("beta=true"), auth, dialer)

    async def complete(self, call: UpstreamCall) -> Completion:
        with upstream_errors(self.provider):
            response = await self._post(self.beta_messages if call.beta else self.messages, call)
            raw = await response.read()
        self._raise_for_status(response, raw)
        try:
            body = with_client_model(raw, call.client_model)
        except (orjson.JSONDecodeError, TypeError):
            raise UpstreamProtocolError(
                f"provider {self.provider.name!r} sent invalid JSON"
            ) from None
        usage = Usage()
        if isinstance(body.get("usage"), dict):
            usage.update(body["usage"])
        return Completion(body=body, headers=relayed_headers(response.headers), usage=usage)

    async def open_stream(self, call: UpstreamCall) -> EventStream:
        with upstream_errors(self.provider):
            response = await self._post(self.beta_messages if call.beta else self.messages, call)
            if response.status >= 300:
                raw = await response.read()
                self._raise_for_status(response, raw)
        relay = anthropic_stream(
            call.client_model,
            self.scrubber.text,
            response.max_event,
            self.provider.token_encoding,
        )
        return await open_event_stream(response, self.provider, relay, self.scrubber)

    async def count_tokens(self, call: UpstreamCall) -> int:
        with upstream_errors(self.provider):
            response = await self._post(self.beta_count if call.beta else self.count, call)
            raw = await response.read()
        self._raise_for_status(response, raw)
        try:
            count = orjson.loads(raw).get("input_tokens")
        except (orjson.JSONDecodeError, AttributeError):
            count = None
        if not isinstance(count, int):
            raise UpstreamProtocolError(f"provider {self.provider.name!r} sent no input_tokens")
        return count

    async def _post(self, head: RequestHead, call: UpstreamCall) -> UpstreamResponse:
        headers = {name: call.headers[name] for name in _FORWARDED_HEADERS if name in call.headers}
        headers.setdefault(VERSION, DEFAULT_VERSION)
        payload = orjson.dumps(to_anthropic_body(call.body, call.route.model))
        encoded = head.encode(payload, headers)
        return await self.pool.post(head, encoded, self.provider.timeouts, slots=self.slots)

    def _raise_for_status(self, response: UpstreamResponse, raw: bytes) -> None:
        if 300 <= response.status < 400:
            raise redirect_error(response.status, response.headers, self.provider.name)
        if response.status >= 400:
            error = classify_anthropic_error(
                response.status, raw, response.headers.get("retry-after"), self.provider.name
            )
            error.headers.update(relayed_headers(response.headers))
            raise self.scrubber.error(error)
