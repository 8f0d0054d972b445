"""The client for OpenAI-compatible upstreams: POST {base_url}/chat/completions, translated."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from messagegate.api.usage import Usage
from messagegate.config import Provider
from messagegate.errors import GatewayError, UpstreamProtocolError
from messagegate.providers.base import Completion, EventStream, UpstreamCall
from messagegate.providers.dialer import Dialer
from messagegate.providers.http import (
    Scrubber,
    auth_headers,
    redirect_error,
    relayed_headers,
    upstream_errors,
)
from messagegate.providers.pool import (
    ConnectionPool,
    Endpoint,
    RequestHead,
    UpstreamResponse,
    trace_lines,
)
from messagegate.providers.slots import ConnectionSlots
from messagegate.providers.stream import open_event_stream
from messagegate.translate.openai_errors import classify_openai_error
from messagegate.translate.openai_events import openai_stream
from messagegate.translate.openai_request import OpenAIRequest, to_openai_request
from messagegate.translate.openai_response import to_anthropic_message
from messagegate.translate.token_count import count_request


class OpenAIClient:
    def __init__(
        self, pool: ConnectionPool, provider: Provider, scrubber: Scrubber | None = None
    ) -> None:
        self.pool = pool
        self.provider = provider
        self.scrubber = scrubber or Scrubber.of([provider])
        self.slots = ConnectionSlots.of(provider)
        headers = {"content-type": "application/json", **auth_headers(provider)}
        endpoint = Endpoint.parse(f"{provider.base_url}/chat/completions")
        self.head = RequestHead(endpoint, headers, Dialer.for_provider(provider, pool.resolver))

    def _translate(self, call: UpstreamCall, *, stream: bool) -> OpenAIRequest:
        body = dict(call.body)
        body["stream"] = stream
        return to_openai_request(
            body,
            upstream_model=call.route.model,
            dialect=self.provider.dialect,
            max_output=call.route.max_output,
        )

    async def complete(self, call: UpstreamCall) -> Completion:
        request = self._translate(call, stream=False)
        with upstream_errors(self.provider):
            response = await self._post(request, trace=trace_lines(call.headers))
            raw = await response.read()
        self._raise_for_status(response, raw)
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(
                f"provider {self.provider.name!r} sent invalid JSON"
            ) from None
        if not isinstance(answer, dict) or not answer.get("choices"):
            raise UpstreamProtocolError(f"provider {self.provider.name!r} sent no choices")
        reported = isinstance(answer.get("usage"), dict)
        # Counting locally costs CPU: only when the upstream reported no usage.
        input_tokens = 0 if reported else self.count_locally(call)
        message = translate_answer(
            answer, self.provider.name, call.client_model, request, input_tokens
        )
        usage = Usage(estimated=not reported)
        usage.update(message["usage"])
        return Completion(body=message, headers=relayed_headers(response.headers), usage=usage)

    async def open_stream(self, call: UpstreamCall) -> EventStream:
        request = self._translate(call, stream=True)
        input_tokens = 0

        def count() -> None:
            nonlocal input_tokens
            input_tokens = self.count_locally(call)

        # The prompt is counted (for message_start) while the upstream works, not before sending.
        with upstream_errors(self.provider):
            response = await self._post(request, count, trace_lines(call.headers))
            if response.status >= 300:
                raw = await response.read()
                self._raise_for_status(response, raw)
        relay = openai_stream(
            request,
            client_model=call.client_model,
            input_tokens=input_tokens,
            provider=self.provider.name,
            max_event=response.max_event,
            encoding=self.provider.token_encoding,
        )
        return await open_event_stream(response, self.provider, relay, self.scrubber)

    async def count_tokens(self, call: UpstreamCall) -> int:
        return self.count_locally(call)

    def count_locally(self, call: UpstreamCall) -> int:
        """The input in this provider's encoding, counted once per request for all its uses."""
        if call.input_count is not None:
            return call.input_count(self.provider.token_encoding)
        return count_request(call.body, self.provider.token_encoding)

    async def _post(
        self,
        request: OpenAIRequest,
        while_waiting: Callable[[], None] | None = None,
        trace: bytes = b"",
    ) -> UpstreamResponse:
        encoded = self.head.encode(orjson.dumps(request.payload), lines=trace)
        timeouts = self.provider.timeouts
        return await self.pool.post(self.head, encoded, timeouts, while_waiting, self.slots)

    def _raise_for_status(self, response: UpstreamResponse, raw: bytes) -> None:
        if 300 <= response.status < 400:
            raise redirect_error(response.status, response.headers, self.provider.name)
        if response.status >= 400:
            error = classify_openai_error(response.status, raw, response.headers.get("retry-after"))
            error.headers.update(relayed_headers(response.headers))
            raise self.scrubber.error(error)


def translate_answer(
    answer: dict[str, Any], provider: str, model: str, request: OpenAIRequest, input_tokens: int
) -> dict[str, Any]:
    """A non-streamed answer as a Message; JSON of the wrong shape is the upstream's fault, a
    GatewayError failed over like any unusable answer, never a crash."""
    try:
        return to_anthropic_message(answer, model=model, request=request, input_tokens=input_tokens)
    except GatewayError:
        raise
    except Exception as exc:
        kind = type(exc).__name__
        raise UpstreamProtocolError(
            f"provider {provider!r} sent an answer the gateway cannot read ({kind})"
        ) from None
