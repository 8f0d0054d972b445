"""The admin API under ``/v1/gateway/admin/``: the key verbs over HTTP, for the `admin_key` only."""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from messagegate.config import Secret
from messagegate.config.keyspec import parse_duration
from messagegate.errors import AuthenticationFailed, InvalidRequest, NotFound, ServiceUnavailable
from messagegate.ledger.report import since_day, with_usd
from messagegate.server.exchange import Exchange
from messagegate.store.base import (
    KeyExists,
    LedgerStore,
    StoreError,
    StoreUnavailable,
    UnknownKey,
)
from messagegate.store.keys import KeyAdmin, describe

PREFIX = "/v1/gateway/admin/"
# Admin bodies are a few settings; nothing larger is legitimate.
MAX_ADMIN_BODY = 64 * 1024
DEFAULT_GRACE = "1h"


class AdminEndpoint:
    def __init__(
        self,
        admin_key: Secret,
        keys: KeyAdmin,
        ledger: LedgerStore,
        changed: Callable[[], Awaitable[None]],
    ) -> None:
        self._secret = admin_key.encode()
        self.keys = keys
        self.ledger = ledger
        # Called after every change, so that this gateway's own snapshot sees it at once.
        self.changed = changed

    async def handle(self, exchange: Exchange) -> None:
        self._authenticate(exchange)
        parts = exchange.path.removeprefix(PREFIX).strip("/").split("/")
        try:
            status, payload = await self._route(exchange, exchange.method, parts)
        except UnknownKey as exc:
            raise NotFound(str(exc)) from None
        except StoreUnavailable as exc:
            raise ServiceUnavailable(str(exc)) from None
        except (KeyExists, StoreError, ValueError) as exc:
            raise InvalidRequest(str(exc)) from None
        await exchange.respond(status, orjson.dumps(payload))

    def _authenticate(self, exchange: Exchange) -> None:
        presented = exchange.headers.get("x-api-key") or _bearer(exchange.headers)
        if presented is None or not hmac.compare_digest(presented.encode(), self._secret):
            raise AuthenticationFailed("the admin API needs the admin key")

    async def _route(self, exchange: Exchange, method: str, parts: list[str]) -> tuple[int, Any]:
        now = time.time()
        match method, parts:
            case "GET", ["keys"]:
                return 200, {"data": [describe(k, now) for k in await self.keys.list()]}
            case "POST", ["keys"]:
                body = await _body(exchange)
                name = body.pop("name", None)
                if not isinstance(name, str):
                    raise InvalidRequest("name: a key name is required")
                secret, key = await self.keys.create(name, body)
                await self.changed()
                return 201, {"key": secret, **describe(key, now)}
            case "GET", ["keys", name]:
                return 200, describe(await self.keys.show(name), now)
            case "PATCH", ["keys", name]:
                key = await self.keys.update(name, await _body(exchange))
                await self.changed()
                return 200, describe(key, now)
            case "POST", ["keys", name, "revoke"]:
                key = await self.keys.revoke(name)
                await self.changed()
                return 200, describe(key, now)
            case "GET", ["usage"]:
                return 200, {"data": await self._usage(exchange.query_params(), now)}
            case "POST", ["keys", name, "rotate"]:
                grace = (await _body(exchange)).get("grace", DEFAULT_GRACE)
                secret, key = await self.keys.rotate(name, parse_duration(str(grace)))
                await self.changed()
                return 200, {"key": secret, **describe(key, now)}
        raise NotFound(f"no endpoint {method} {exchange.path}")

    async def _usage(self, params: dict[str, str], now: float) -> list[dict[str, Any]]:
        rows = await self.ledger.usage(
            params.get("by", "key"), since_day(params.get("since", "7d"), now)
        )
        return [with_usd(row) for row in rows]


async def _body(exchange: Exchange) -> dict[str, Any]:
    raw = await exchange.read_body(MAX_ADMIN_BODY)
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    return data


def _bearer(headers: dict[str, str]) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
