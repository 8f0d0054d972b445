"""The client for Anthropic-native upstreams: POST {base_url}/v1/messages, relayed faithfully."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from messagegate.api.usage import Usage
from messagegate.config import Provider
from messagegate.errors import UpstreamProtocolError
from messagegate.providers.base import Completion, EventStream, UpstreamCall
from messagegate.providers.http import (
    completion_timeout,
    relayed_headers,
    stream_timeout,
    upstream_errors,
)
from messagegate.providers.stream import open_event_stream
from messagegate.translate.anthropic import (
    AnthropicEventRelay,
    classify_anthropic_error,
    to_anthropic_body,
    with_client_model,
)

_FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")
_DEFAULT_VERSION = "2023-06-01"


class AnthropicClient:
    def __init__(self, session: aiohttp.ClientSession, provider: Provider) -> None:
        self.session = session
        self.provider = provider
        self.messages_url = f"{provider.base_url}/v1/messages"
        self.count_url = f"{provider.base_url}/v1/messages/count_tokens"
        self.auth_headers = _auth_headers(provider)
        self.completion_timeout = completion_timeout(provider.timeouts)
        self.stream_timeout = stream_timeout(provider.timeouts)

    async def complete(self, call: UpstreamCall) -> Completion:
        with upstream_errors(self.provider):
            async with self._post(self.messages_url, call, self.completion_timeout) as response:
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
            response = await self._post(self.messages_url, call, self.stream_timeout)
            if response.status >= 400:
                raw = await response.read()
                response.release()
                self._raise_for_status(response, raw)
        return await open_event_stream(
            response, self.provider, AnthropicEventRelay(call.client_model)
        )

    async def count_tokens(self, call: UpstreamCall) -> int:
        with upstream_errors(self.provider):
            async with self._post(self.count_url, call, self.completion_timeout) as response:
                raw = await response.read()
                self._raise_for_status(response, raw)
        try:
            count = orjson.loads(raw).get("input_tokens")
        except (orjson.JSONDecodeError, AttributeError):
            count = None
        if not isinstance(count, int):
            raise UpstreamProtocolError(f"provider {self.provider.name!r} sent no input_tokens")
        return count

    def _post(self, url: str, call: UpstreamCall, timeout: aiohttp.ClientTimeout) -> Any:
        headers = dict(self.auth_headers)
        for name in _FORWARDED_HEADERS:
            value = call.headers.get(name)
            if value is not None:
                headers[name] = value
        headers.setdefault("anthropic-version", _DEFAULT_VERSION)
        if call.beta:
            url += "?beta=true"
        payload = orjson.dumps(to_anthropic_body(call.body, call.route.model))
        return self.session.post(url, data=payload, headers=headers, timeout=timeout)

    def _raise_for_status(self, response: aiohttp.ClientResponse, raw: bytes) -> None:
        if response.status >= 400:
            error = classify_anthropic_error(
                response.status, raw, response.headers.get("retry-after"), self.provider.name
            )
            error.headers.update(relayed_headers(response.headers))
            raise error


def _auth_headers(provider: Provider) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if provider.api_key is not None:
        if provider.auth == "bearer":
            headers["authorization"] = f"Bearer {provider.api_key}"
        else:
            headers["x-api-key"] = str(provider.api_key)
    return headers
