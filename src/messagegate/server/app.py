"""The ASGI application: lifespan, dispatch by path, the error envelope, one access line each."""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from messagegate.config import ApiKey, BreakerPolicy, Config, FailoverPolicy, metrics_directory
from messagegate.errors import GatewayError, GatewayOverloaded, NotFound
from messagegate.ledger.journal import Journal
from messagegate.ledger.shipper import Shipper
from messagegate.limits.limiter import Limiter
from messagegate.limits.periods import Periods
from messagegate.privacy.gateway import MAX_REGISTRATION_BYTES, PrivacyGate
from messagegate.providers.pool import ConnectionPool
from messagegate.providers.registry import create_clients
from messagegate.routing.health import HealthBoard
from messagegate.routing.router import Router
from messagegate.server.accounting import Accounting, seed_budgets
from messagegate.server.admin import PREFIX as ADMIN_PREFIX
from messagegate.server.admin import AdminEndpoint
from messagegate.server.auth import KeyChecker, KeyRefresh
from messagegate.server.client_limits import CLIENT_POLICY, BodyBudget, ClientPolicy
from messagegate.server.coalescing import turn_flusher
from messagegate.server.exchange import ClientDisconnected, Exchange, Receive, Scope, Send
from messagegate.server.messages import SCENARIO_HEADER, MessagesEndpoint
from messagegate.server.metrics_listener import MetricsListener
from messagegate.server.models import get_model, list_models
from messagegate.server.streaming import SHUTTING_DOWN
from messagegate.store.base import Store
from messagegate.store.keys import KeyAdmin
from messagegate.store.location import journal_directory, open_store, serving_database
from messagegate.telemetry import metrics as telemetry
from messagegate.telemetry.json_logs import AccessFields, printable
from messagegate.translate.token_count import active_encoding

if TYPE_CHECKING:
    from messagegate.limits.shared import SharedLimiter
    from messagegate.telemetry.traces import Tracing

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
        self.shared_limiter: SharedLimiter | None = None
        self.client_policy = ClientPolicy(config.limits, time.monotonic)
        self.body_budget = BodyBudget(config.limits.max_inflight_body_bytes)
        self.board = HealthBoard(breaker or config.breaker, clock)
        self.failover = failover or config.failover
        self.rng = rng
        self.pool: ConnectionPool | None = None
        self.router: Router | None = None
        self.messages: MessagesEndpoint | None = None
        self.privacy: PrivacyGate | None = None
        self.metrics = (
            telemetry.GatewayMetrics(config, clock, metrics_directory())
            if config.metrics.enabled
            else None
        )
        self.metrics_listener: MetricsListener | None = None
        self.tracing: Tracing | None = None
        if config.otel.enabled:
            # The `otel` extra is imported only when traces are asked for.
            from messagegate.telemetry.traces import Tracing

            dropped = None if self.metrics is None else self.metrics.spans_not_exported
            self.tracing = Tracing(config.otel, dropped)
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
        limits = self.config.limits
        self.pool = ConnectionPool(
            on_wake=turn_flusher(asyncio.get_running_loop()).follow,
            max_answer=limits.max_upstream_answer_bytes,
            max_event=limits.max_upstream_event_bytes,
        )
        clients = create_clients(self.pool, self.config.providers.values())
        if self.tracing is not None:
            self.tracing.start()
        self.router = Router(
            self.config, clients, self.board, self.failover, self.rng, self.metrics, self.tracing
        )
        if self.config.redis is not None:
            # redis-py is imported only when `redis:` is set.
            from messagegate.limits.shared import SharedLimiter

            # Replicas agree on Redis's clock; a test's injected clock is taken as it is.
            self.shared_limiter = SharedLimiter(
                self.config.redis,
                self.config.on_outage,
                self.limiter,
                server_time=self.wall_clock is time.time,
            )
            await self.shared_limiter.start()
        await self._open_store()
        accounting = Accounting(
            self.limiter, self.journal, self.wall_clock, self.board.clock, self.shared_limiter
        )
        self.messages = MessagesEndpoint(self.config, self.router, accounting, self.metrics)
        listen = self.config.metrics.listen
        if self.metrics is not None and listen is not None:
            content_type = telemetry.CONTENT_TYPE
            self.metrics_listener = MetricsListener(
                self.metrics.scrape, content_type, self._scraper, self.metrics.refused
            )
            await self.metrics_listener.start(*listen)
        if self.config.privacy.mode != "off":
            self.privacy = PrivacyGate(self.config.privacy)
        # What exists now lives as long as the process: keep the collector from rescanning it.
        gc.collect()
        gc.freeze()

    async def _open_store(self) -> None:
        location = serving_database(self.config)
        if location is None:
            return
        self.store = store = await open_store(location)
        if self.metrics is not None:
            self.metrics.read_spend(store)
        self.key_refresh = refresh = KeyRefresh(store, self.keys, on_outage=self.config.on_outage)
        await refresh.start()
        self.journal = Journal(journal_directory(location, self.config.default_database))
        self.shipper = Shipper(self.journal, store)
        await self.shipper.ship_once()  # what a process before this one left journalled
        await seed_budgets(self.limiter, store, self.keys, self.shared_limiter)
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
        if self.shared_limiter is not None:
            await self.shared_limiter.close()
            self.shared_limiter = None
        if self.journal is not None:
            self.journal.close()
        if self.store is not None:
            await self.store.close()
            self.store = None
        if self.pool is not None:
            self.pool.close()
            self.pool = None
        if self.metrics_listener is not None:
            self.metrics_listener.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.tracing is not None:
            await self.tracing.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
                # uvicorn hands the lifespan state to every connection's protocol.
                if "state" in scope:
                    scope["state"][CLIENT_POLICY] = self.client_policy
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        exchange = Exchange(scope, receive, send, self.body_budget)
        started = time.perf_counter()
        tracing = self.tracing
        traced = None if tracing is None else tracing.start_request(exchange)
        try:
            await self._dispatch(exchange)
        except GatewayError as error:
            exchange.log_fields["error"] = error.error_type
            if error.denial and self.metrics is not None:
                self.metrics.denied(error.denial)
            if "scenario" in exchange.log_fields:
                error.headers[SCENARIO_HEADER] = exchange.log_fields["scenario"]
            if exchange.status == 0:
                private = exchange.privacy
                await exchange.respond_error(
                    error if private is None else private.readable_error(error)
                )
        except ClientDisconnected:
            exchange.status = 499
        except asyncio.CancelledError:
            # Only the server cancels a request's task: its shutdown grace ended. The client
            # gets an answer it can retry, and the log no traceback.
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            exchange.log_fields["error"] = "shutdown"
            if exchange.status == 0:
                await exchange.respond_error(GatewayOverloaded(SHUTTING_DOWN))
        except Exception:
            error_log.exception("unhandled error in %s %s", exchange.method, exchange.path)
            if exchange.status == 0:
                await exchange.respond_error(GatewayError("internal gateway error"))
        finally:
            if exchange.held:
                self.body_budget.held -= exchange.held
            ended = time.perf_counter()
            _log_access(exchange, ended - started)
            if self.metrics is not None:
                self.metrics.finished(exchange, started, ended)
            if tracing is not None and traced is not None:
                tracing.finish_request(exchange, traced)

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
        elif path == "/metrics" and method == "GET" and self.metrics_served_here:
            await self._metrics(exchange)
        else:
            raise NotFound(f"no endpoint {method} {path}")

    async def _api(self, exchange: Exchange, key: ApiKey | None) -> None:
        messages = self.messages
        if messages is None:
            raise GatewayError("the gateway is not ready")
        path, method = exchange.path, exchange.method
        if key is not None:
            exchange.log_fields["key"] = key.name
        if self.privacy is not None and path.startswith("/v1/messages"):
            exchange.privacy = self.privacy.begin(exchange.headers)
        if path == "/v1/messages" and method == "POST":
            await messages.create(exchange, key)
        elif path == "/v1/messages/count_tokens" and method == "POST":
            await messages.count_tokens(exchange, key)
        elif path.startswith("/v1/privacy/") and self.privacy is not None:
            await self._privacy(exchange, self.privacy)
        elif path == "/v1/models" and method == "GET":
            await exchange.respond_json(list_models(messages.router.names, exchange.query_params()))
        elif path.startswith("/v1/models/") and method == "GET":
            model_id = path.removeprefix("/v1/models/")
            await exchange.respond_json(get_model(messages.router.names, model_id))
        elif path == "/v1/gateway/routes" and method == "GET":
            await exchange.respond_json({"data": messages.router.snapshot()})
        else:
            raise NotFound(f"no endpoint {method} {path}")

    async def _privacy(self, exchange: Exchange, privacy: PrivacyGate) -> None:
        if exchange.path == "/v1/privacy/key" and exchange.method == "GET":
            await exchange.respond_json(privacy.key_document())
        elif exchange.path == "/v1/privacy/secrets" and exchange.method == "POST":
            body = await exchange.read_body(MAX_REGISTRATION_BYTES)
            await exchange.respond_json(privacy.register(body))
        else:
            raise NotFound(f"no endpoint {exchange.method} {exchange.path}")

    @property
    def metrics_served_here(self) -> bool:
        return self.metrics is not None and self.config.metrics.listen is None

    def _scraper(self, headers: Mapping[str, str]) -> None:
        """May these headers read /metrics? AuthenticationFailed if not."""
        if self.config.metrics.auth == "key":
            self.keys.check(headers)

    async def _metrics(self, exchange: Exchange) -> None:
        assert self.metrics is not None
        self._scraper(exchange.headers)
        body = await self.metrics.scrape()
        content_type = (b"content-type", telemetry.CONTENT_TYPE.encode())
        await exchange.start(200, [content_type, (b"content-length", b"%d" % len(body))])
        await exchange.send({"type": "http.response.body", "body": body})

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
    access_log.info(
        "%s %s %d %.1fms %s %s",
        exchange.method,
        printable(exchange.path),
        exchange.status,
        seconds * 1000,
        exchange.request_id,
        AccessFields(exchange),
    )
