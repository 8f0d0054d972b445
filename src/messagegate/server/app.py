"""The ASGI application: lifespan, dispatch by path, the error envelope, one access line each."""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import time
from collections.abc import Callable

from messagegate.config import ApiKey, BreakerPolicy, Config, FailoverPolicy
from messagegate.errors import GatewayError, NotFound
from messagegate.ledger.journal import Journal
from messagegate.ledger.shipper import Shipper
from messagegate.limits.limiter import Limiter
from messagegate.limits.periods import Periods
from messagegate.providers.pool import ConnectionPool
from messagegate.providers.registry import create_clients
from messagegate.routing.health import HealthBoard
from messagegate.routing.router import Router
from messagegate.server.accounting import Accounting, seed_budgets
from messagegate.server.admin import PREFIX as ADMIN_PREFIX
from messagegate.server.admin import AdminEndpoint
from messagegate.server.auth import KeyChecker, KeyRefresh
from messagegate.server.coalescing import turn_flusher
from messagegate.server.exchange import ClientDisconnected, Exchange, Receive, Scope, Send
from messagegate.server.messages import MessagesEndpoint
from messagegate.server.models import get_model, list_models
from messagegate.store.base import Store
from messagegate.store.keys import KeyAdmin
from messagegate.store.location import journal_directory, open_store, serving_database
from messagegate.translate.token_count import active_encoding

access_log = logging.getLogger("messagegate.access")
error_log = logging.getLogger("messagegate.error")

_ROOT_BODY = b'{"service":"messagegate"}'


class GatewayApp:
    """Raw ASGI: no middleware stack between the socket and the handlers."""

    def __init__(
        self,
        config: Config,
        *,
        failover: FailoverPolicy | None = None,
        breaker: BreakerPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.wall_clock = wall_clock
        self.keys = KeyChecker(config.keys, wall_clock)
        self.limiter = Limiter(wall_clock, Periods(config.budget_timezone))
        self.board = HealthBoard(breaker or config.breaker, clock)
        self.failover = failover or config.failover
        self.rng = rng
        self.pool: ConnectionPool | None = None
        self.router: Router | None = None
        self.messages: MessagesEndpoint | None = None
        self.store: Store | None = None
        self.journal: Journal | None = None
        self.shipper: Shipper | None = None
        self.key_refresh: KeyRefresh | None = None
        self.admin: AdminEndpoint | None = None

    @property
    def ready(self) -> bool:
        return self.messages is not None

    async def startup(self) -> None:
        # Load the token vocabularies now, not on the first request that needs them.
        for encoding in {"o200k_base", *(p.token_encoding for p in self.config.providers.values())}:
            active_encoding(encoding)
        # A task woken by an upstream's answer writes to its client in the same loop turn.
        self.pool = ConnectionPool(on_wake=turn_flusher(asyncio.get_running_loop()).follow)
        clients = create_clients(self.pool, self.config.providers.values())
        self.router = Router(self.config, clients, self.board, self.failover, self.rng)
        await self._open_store()
        accounting = Accounting(self.limiter, self.journal, self.wall_clock, self.board.clock)
        self.messages = MessagesEndpoint(self.config, self.router, accounting)
        # What exists now lives as long as the process: keep the collector from rescanning it.
        gc.collect()
        gc.freeze()

    async def _open_store(self) -> None:
        location = serving_database(self.config)
        if location is None:
            return
        self.store = store = await open_store(location)
        self.key_refresh = refresh = KeyRefresh(store, self.keys)
        await refresh.start()
        self.journal = Journal(journal_directory(location))
        self.shipper = Shipper(self.journal, store)
        await self.shipper.ship_once()  # what a process before this one left journalled
        await seed_budgets(self.limiter, store, self.keys)
        self.shipper.start()
        if self.config.admin_key is not None:
            reserved = frozenset(k.name for k in self.config.keys)
            admin = KeyAdmin(store, reserved=reserved)
            self.admin = AdminEndpoint(self.config.admin_key, admin, store, refresh.reload)

    async def shutdown(self) -> None:
        self.messages = None
        if self.key_refresh is not None:
            await self.key_refresh.stop()
        if self.shipper is not None:
            await self.shipper.stop()
        if self.journal is not None:
            self.journal.close()
        if self.store is not None:
            await self.store.close()
            self.store = None
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        exchange = Exchange(scope, receive, send)
        started = time.perf_counter()
        try:
            await self._dispatch(exchange)
        except GatewayError as error:
            exchange.log_fields["error"] = error.error_type
            if exchange.status == 0:
                await exchange.respond_error(error)
        except ClientDisconnected:
            exchange.status = 499
        except Exception:
            error_log.exception("unhandled error in %s %s", exchange.method, exchange.path)
            if exchange.status == 0:
                await exchange.respond_error(GatewayError("internal gateway error"))
        finally:
            _log_access(exchange, time.perf_counter() - started)

    async def _dispatch(self, exchange: Exchange) -> None:
        path, method = exchange.path, exchange.method
        if path in ("/", "") and method in ("GET", "HEAD"):
            await exchange.respond(200, _ROOT_BODY)
        elif path == "/health" and method == "GET":
            await self._health(exchange)
        elif path.startswith(ADMIN_PREFIX):
            await self._admin(exchange)
        elif path.startswith("/v1/"):
            await self._api(exchange, self.keys.check(exchange.headers))
        else:
            raise NotFound(f"no endpoint {method} {path}")

    async def _api(self, exchange: Exchange, key: ApiKey | None) -> None:
        messages = self.messages
        if messages is None:
            raise GatewayError("the gateway is not ready")
        path, method = exchange.path, exchange.method
        if key is not None:
            exchange.log_fields["key"] = key.name
        if path == "/v1/messages" and method == "POST":
            await messages.create(exchange, key)
        elif path == "/v1/messages/count_tokens" and method == "POST":
            await messages.count_tokens(exchange, key)
        elif path == "/v1/models" and method == "GET":
            await exchange.respond_json(list_models(self.config, exchange.query_params()))
        elif path.startswith("/v1/models/") and method == "GET":
            model_id = path.removeprefix("/v1/models/")
            await exchange.respond_json(get_model(messages.router.names, model_id))
        elif path == "/v1/gateway/routes" and method == "GET":
            await exchange.respond_json({"data": messages.router.snapshot()})
        else:
            raise NotFound(f"no endpoint {method} {path}")

    async def _admin(self, exchange: Exchange) -> None:
        if self.admin is None:
            raise NotFound("the admin API is off: set admin_key in the config")
        await self.admin.handle(exchange)

    async def _health(self, exchange: Exchange) -> None:
        if self.ready:
            await exchange.respond_json({"status": "ok"})
        else:
            await exchange.respond(503, b'{"status":"starting"}')


def _log_access(exchange: Exchange, seconds: float) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    fields = " ".join(f"{k}={v}" for k, v in exchange.log_fields.items())
    access_log.info(
        "%s %s %d %.1fms %s %s",
        exchange.method,
        exchange.path,
        exchange.status,
        seconds * 1000,
        exchange.request_id,
        fields,
    )
