"""Prometheus metrics: the GenAI semantic conventions' histograms and messagegate's own series.

Every label value comes from the config or a fixed set, never from a request as it is: a model
that is not configured is ``other``, an error type outside Anthropic's list is ``_OTHER``, keys
get their own series only when asked and up to a cap. So the number of series is bounded by the
config, whatever clients send. Under ``serve --workers N`` each worker writes its values to files
in one directory (prometheus_client's multiprocess mode) and any worker's scrape sums them all.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol
from urllib.parse import urlsplit

import prometheus_client
from prometheus_client import CollectorRegistry, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from messagegate.api.usage import Usage
from messagegate.catalogue import CONVENTION_HOSTS, CONVENTION_NAMES
from messagegate.config import Config, MetricsSettings, Model, Route
from messagegate.errors import DENIALS, GatewayError, UpstreamStatusError
from messagegate.telemetry import series
from messagegate.telemetry.spend import KeySpend, Rollups

# The classic text format, which every Prometheus since 2.0 reads.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
OTHER = "other"
# Routes and series made for requested names are remembered up to this many (labels stay bounded
# by the config either way; this bounds only the memory of how to name them).
_MADE_LABELS_MAX = 4096
# Requested names remembered with their label: as many as the router keeps names it made.
_MADE_NAMES_MAX = 1024
# The conventions' fallback for an error class the instrumentation does not name.
OTHER_ERROR = "_OTHER"
OPERATION = "chat"
# error.type of a request whose client left before its answer ended.
CLIENT_GONE = "client_disconnected"
MESSAGES_PATH = "/v1/messages"

# The ExplicitBucketBoundaries the GenAI semantic conventions specify for each histogram.
DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
TIME_TO_FIRST_TOKEN_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
TIME_PER_OUTPUT_TOKEN_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
)  # fmt: skip
TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
# The gateway's own time is sub-millisecond when all is well.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)

GEN_AI_LABELS = (
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "gen_ai_response_model",
    "error_type",
)
TOKEN_LABELS = (*GEN_AI_LABELS[:4], "gen_ai_token_type")
ANTHROPIC_ERROR_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "api_error",
        "timeout_error",
        "overloaded_error",
    }
)
ENDPOINTS = frozenset(
    {
        "/",
        "/health",
        "/metrics",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/models",
        "/v1/gateway/routes",
    }
)

# A label value is a str; the created-time series would double the count for nothing.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Answer(Protocol):
    """What routing says about how a request was answered (``routing.Routed``)."""

    @property
    def model(self) -> Model: ...
    @property
    def route(self) -> Route: ...
    @property
    def attempts(self) -> int: ...
    @property
    def started(self) -> float: ...
    @property
    def answered(self) -> float: ...
    @property
    def value(self) -> Any: ...


class Finished(Protocol):
    """What the server knows about a request once it is over (``server.Exchange``)."""

    path: str
    status: int
    log_fields: dict[str, str]
    served: Answer | None
    # When a stream's relay began (``time.perf_counter``); 0.0 for other answers.
    stream_started: float


def provider_name(route: Route) -> str:
    """``gen_ai.provider.name``: the conventions' name of a known provider, else its kind."""
    provider = route.provider
    return _provider_name(provider.name, provider.kind, provider.base_url)


@functools.lru_cache(maxsize=1024)
def _provider_name(name: str, kind: str, base_url: str) -> str:
    host = (urlsplit(base_url).hostname or "").lower()
    for pattern, known in CONVENTION_HOSTS:
        if fnmatch.fnmatchcase(host, pattern):
            return known
    return CONVENTION_NAMES.get(name, kind)


def error_type_of(error: GatewayError) -> str:
    """``error.type`` of an upstream attempt: the upstream's status code, or the failure's class."""
    if isinstance(error, UpstreamStatusError):
        status = error.upstream_status
        return str(status) if 100 <= status <= 599 else OTHER_ERROR
    return type(error).__name__


class _Series:
    """The children one (request model, route) pair observes into when it is answered."""

    __slots__ = (
        "attempt_ok",
        "client_duration",
        "fallback",
        "input_tokens",
        "output_tokens",
        "server_duration",
        "time_per_output_token",
        "time_to_first_token",
    )

    def __init__(self, metrics: GatewayMetrics, requested: str, model: Model, route: Route) -> None:
        provider = provider_name(route)
        server = (OPERATION, provider, requested, route.model)
        client = (OPERATION, provider, route.model, route.model)
        self.server_duration = metrics.server_duration.labels(*server, "")
        self.time_to_first_token = metrics.time_to_first_token.labels(*server)
        self.time_per_output_token = metrics.time_per_output_token.labels(*server)
        self.client_duration = metrics.client_duration.labels(*client, "")
        self.input_tokens = metrics.token_usage.labels(*client, "input")
        self.output_tokens = metrics.token_usage.labels(*client, "output")
        self.attempt_ok = metrics.attempts.labels(route.label, "")
        self.fallback = (
            metrics.fallbacks.labels(requested, model.name) if model.name != requested else None
        )


class GatewayMetrics:
    """The gateway's metrics; the server calls `finished` once per request, routing
    `attempt_failed` per failed upstream attempt and `route_failed` per route given up on."""

    def __init__(
        self,
        config: Config,
        clock: Callable[[], float],
        shared_directory: str | None = None,
    ) -> None:
        self.settings: MetricsSettings = config.metrics
        self.clock = clock
        self.shared_directory = shared_directory
        self.registry = CollectorRegistry(auto_describe=False)
        # One process: plain values; workers: prometheus_client's, shared through files.
        self._define(self.registry, prometheus_client if shared_directory else series)
        self._models = {name: name for name in (*config.models, *config.aliases)}
        self._patterns = config.patterns
        self._providers = frozenset(config.providers) if config.explicit_provider_models else ()
        self._configured_labels = {r.label for m in config.models.values() for r in m.routes}
        self._made_routes: dict[str, Route] = {}
        self._made_models: dict[str, str] = {}
        self._series: dict[tuple[str, str, str], _Series] = {}
        self._children: dict[tuple[Any, ...], Any] = {}
        self._key_labels: dict[str, str] = {}
        self._open_routes: set[str] = set()
        # Every kind from the start: a rate over a series that appears at its first denial
        # misses that denial.
        self._denials = {kind: self.denials.labels(kind) for kind in DENIALS}
        self._spend: KeySpend | None = None

    def _define(self, registry: CollectorRegistry, kinds: Any) -> None:
        self.server_duration = kinds.Histogram(
            "gen_ai_server_request_duration", "Generative AI server request duration such as "
            "time-to-last byte or last output token.", GEN_AI_LABELS, unit="seconds",
            buckets=DURATION_BUCKETS, registry=registry,
        )  # fmt: skip
        self.time_to_first_token = kinds.Histogram(
            "gen_ai_server_time_to_first_token", "Time to generate first token for successful "
            "responses.", GEN_AI_LABELS[:4], unit="seconds",
            buckets=TIME_TO_FIRST_TOKEN_BUCKETS, registry=registry,
        )  # fmt: skip
        self.time_per_output_token = kinds.Histogram(
            "gen_ai_server_time_per_output_token", "Time per output token generated after the "
            "first token for successful responses.", GEN_AI_LABELS[:4], unit="seconds",
            buckets=TIME_PER_OUTPUT_TOKEN_BUCKETS, registry=registry,
        )  # fmt: skip
        self.client_duration = kinds.Histogram(
            "gen_ai_client_operation_duration", "GenAI operation duration (one upstream "
            "attempt).", GEN_AI_LABELS, unit="seconds", buckets=DURATION_BUCKETS,
            registry=registry,
        )  # fmt: skip
        self.token_usage = kinds.Histogram(
            "gen_ai_client_token_usage", "Number of input and output tokens used (one upstream "
            "attempt; Anthropic input includes cache reads and writes).", TOKEN_LABELS,
            buckets=TOKEN_BUCKETS, registry=registry,
        )  # fmt: skip
        self.requests = kinds.Counter(
            "messagegate_requests", "Requests answered, by endpoint, status and error type.",
            ("endpoint", "status", "error_type"), registry=registry,
        )  # fmt: skip
        self.attempts = kinds.Counter(
            "messagegate_upstream_attempts", "Upstream attempts by route and error type "
            "(empty: it answered).", ("route", "error_type"), registry=registry,
        )  # fmt: skip
        self.failovers = kinds.Counter(
            "messagegate_failovers", "Routes given up on for a request after failures, by route.",
            ("route",), registry=registry,
        )  # fmt: skip
        self.fallbacks = kinds.Counter(
            "messagegate_model_fallbacks", "Requests answered by a fallback model.",
            ("requested_model", "model"), registry=registry,
        )  # fmt: skip
        self.breaker_open = kinds.Gauge(
            "messagegate_route_breaker_open", "1 while a route's circuit breaker is open or its "
            "probe pending (the worst worker's).", ("route",), registry=registry,
            multiprocess_mode="livemax",
        )  # fmt: skip
        self.open_streams = kinds.Gauge(
            "messagegate_open_streams", "Event streams being relayed to clients now.",
            registry=registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.client_aborts = kinds.Counter(
            "messagegate_client_aborts", "Requests whose client left before the answer ended.",
            ("endpoint",), registry=registry,
        )  # fmt: skip
        self.overhead = kinds.Histogram(
            "messagegate_gateway_overhead", "Time of a request answered at the first attempt "
            "not spent waiting for the upstream's answer.", unit="seconds",
            buckets=OVERHEAD_BUCKETS, registry=registry,
        )  # fmt: skip
        self.key_requests = kinds.Counter(
            "messagegate_key_requests", "Requests by gateway key name (metrics.key_labels).",
            ("key",), registry=registry,
        )  # fmt: skip
        self.key_tokens = kinds.Counter(
            "messagegate_key_tokens", "Tokens billed by gateway key name (metrics.key_labels).",
            ("key", "gen_ai_token_type"), registry=registry,
        )  # fmt: skip
        self.spans_dropped = kinds.Counter(
            "messagegate_trace_spans_dropped", "Spans not exported, by reason: queue_full (the "
            "OTEL_BSP_MAX_QUEUE_SIZE queue was full), export_failed (the endpoint refused the "
            "batch or did not answer in time).", ("reason",), registry=registry,
        )  # fmt: skip
        self.denials = kinds.Counter(
            "messagegate_limit_denials", "Requests refused for their key, by kind: auth, model "
            "(allow-list), budget, rpm, tpm, concurrency.", ("kind",), registry=registry,
        )  # fmt: skip

    # -- what the server and routing report --------------------------------------------------

    def finished(self, request: Finished, started: float, ended: float) -> None:
        """One request is over: `started` and `ended` are ``time.perf_counter`` readings."""
        fields = request.log_fields
        error = fields.get("error") or fields.get("stream_error")
        error_type = "" if error is None else _bounded_error(error)
        path = request.path
        endpoint = path if path in ENDPOINTS else OTHER
        status = request.status
        if status == 499 or "disconnected" in fields:
            error_type = error_type or CLIENT_GONE
            self._child(self.client_aborts, (endpoint,)).inc()
        self._child(self.requests, (endpoint, status, error_type)).inc()
        if self.settings.key_labels and "key" in fields:
            self._child(self.key_requests, (self._key(fields["key"]),)).inc()
        if path != MESSAGES_PATH:
            return
        answer = request.served
        if answer is None:
            requested = self._model(fields.get("model", ""))
            labels = (OPERATION, OTHER, requested, OTHER, error_type)
            self._child(self.server_duration, labels).observe(ended - started)
            return
        self._answered(request, answer, fields, error_type, started, ended)

    def _answered(
        self,
        request: Finished,
        answer: Answer,
        fields: Mapping[str, str],
        error_type: str,
        started: float,
        ended: float,
    ) -> None:
        route = self._route(answer.route)
        requested = self._model(fields.get("model", ""))
        label = route.label
        model = answer.model
        answered = model.name if model.name in self._models else self._model(model.name)
        key = (requested, label, answered)
        series = self._series.get(key)
        if series is None:
            named = model if answered == model.name else Model(answered, model.routes)
            series = self._series[key] = _Series(self, requested, named, route)
        upstream_seconds = self.clock() - answer.started
        if error_type:
            # The answer started, then failed: a stream's late error.
            self._failed_answer(route, requested, error_type, ended - started, upstream_seconds)
        else:
            series.server_duration.observe(ended - started)
            series.client_duration.observe(upstream_seconds)
            series.attempt_ok.inc()
        if series.fallback is not None:
            series.fallback.inc()
        if label in self._open_routes:
            self._open_routes.discard(label)
            self.breaker_open.labels(label).set(0)
        usage: Usage = answer.value.usage
        input_tokens = (
            usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens
        )
        series.input_tokens.observe(input_tokens)
        series.output_tokens.observe(usage.output_tokens)
        if self.settings.key_labels and "key" in fields:
            key_label = self._key(fields["key"])
            self._child(self.key_tokens, (key_label, "input")).inc(input_tokens)
            self._child(self.key_tokens, (key_label, "output")).inc(usage.output_tokens)
        streamed = request.stream_started
        if streamed:
            self.open_streams.dec()
        first = (streamed or ended) - started
        if answer.attempts == 1:
            self.overhead.observe(max(0.0, first - (answer.answered - answer.started)))
        if streamed and not error_type:
            series.time_to_first_token.observe(first)
            if usage.output_tokens > 1:
                rest = ended - streamed
                series.time_per_output_token.observe(rest / (usage.output_tokens - 1))

    def _failed_answer(
        self, route: Route, requested: str, error_type: str, seconds: float, upstream: float
    ) -> None:
        provider = provider_name(route)
        labels = (OPERATION, provider, requested, route.model, error_type)
        self._child(self.server_duration, labels).observe(seconds)
        labels = (OPERATION, provider, route.model, route.model, error_type)
        self._child(self.client_duration, labels).observe(upstream)
        self._child(self.attempts, (route.label, error_type)).inc()

    def denied(self, kind: str) -> None:
        """A request was refused for its key (`kind` is one of ``errors.DENIALS``)."""
        self._denials[kind].inc()

    def refused(self, path: str, error: GatewayError) -> None:
        """A request refused outside the API server (the metrics listener's): counted as the
        server's `finished` and `denied` count the API's."""
        if error.denial:
            self.denied(error.denial)
        endpoint = path if path in ENDPOINTS else OTHER
        self._child(self.requests, (endpoint, error.status, error.error_type)).inc()

    def spans_not_exported(self, reason: str, count: int) -> None:
        """Traces: `count` spans were dropped (`reason`: queue_full or export_failed)."""
        self._child(self.spans_dropped, (reason,)).inc(count)

    def stream_opened(self, request: Finished) -> None:
        """A stream's relay begins now (its time to first token ends here)."""
        request.stream_started = time.perf_counter()
        self.open_streams.inc()

    def attempt_failed(self, route: Route, seconds: float, error: GatewayError) -> None:
        """One upstream attempt failed (it may be retried)."""
        route = self._route(route)
        error_type = error_type_of(error)
        provider = provider_name(route)
        labels = (OPERATION, provider, route.model, route.model, error_type)
        self._child(self.client_duration, labels).observe(seconds)
        self._child(self.attempts, (route.label, error_type)).inc()

    def route_failed(self, route: Route, breaker_open: bool) -> None:
        """A request gave up on `route`; its breaker may have opened."""
        route = self._route(route)
        self._child(self.failovers, (route.label,)).inc()
        if breaker_open and route.label not in self._open_routes:
            self._open_routes.add(route.label)
            self.breaker_open.labels(route.label).set(1)

    def _model(self, name: str) -> str:
        """A requested model's label: its configured name or alias, else the pattern or
        `provider/*` that serves it, else `other`."""
        label = self._models.get(name) or self._made_models.get(name)
        if label is not None:
            return label
        provider, slash, rest = name.partition("/")
        if slash and rest and provider in self._providers:
            label = f"{provider}/*"
        else:
            label = next((p.name for p in self._patterns if p.matches(name)), OTHER)
        # Remembered so that a pattern is matched once per name, not per request.
        if len(self._made_models) < _MADE_NAMES_MAX:
            self._made_models[name] = label
        return label

    def _route(self, route: Route) -> Route:
        """The route as labels name it: one made for a requested name (a pattern's, or a
        `provider/model`) is named by its pattern or `provider/*`, so clients add no series."""
        if route.label in self._configured_labels:
            return route
        named = self._made_routes.get(route.label)
        if named is None:
            pattern = next((p.name for p in self._patterns if p.matches(route.model)), "*")
            named = replace(route, model=pattern)
            if len(self._made_routes) < _MADE_LABELS_MAX:
                self._made_routes[route.label] = named
        return named

    # -- the scrape ----------------------------------------------------------------------------

    def read_spend(self, rollups: Rollups) -> None:
        """Serve each key's spend from the ledger's rollups (with ``key_labels`` only)."""
        if not self.settings.key_labels:
            return
        self._spend = KeySpend(rollups, self._key, self.clock)
        if self.shared_directory is None:
            self.registry.register(self._spend)

    async def scrape(self) -> bytes:
        """`render`, after reading the ledger's spend if it is more than a few seconds old."""
        if self._spend is not None:
            await self._spend.refresh()
        return self.render()

    def render(self) -> bytes:
        """The text exposition of every series (every worker's, in multiprocess mode)."""
        if self.shared_directory is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(registry, self.shared_directory)  # type: ignore[no-untyped-call]
        if self._spend is not None:
            # Read from the database, not the workers' files: counted once, not per worker.
            registry.register(self._spend)
        return generate_latest(registry)

    def close(self) -> None:
        """The worker stops: its live gauges no longer count."""
        if self.shared_directory is not None:
            mark_process_dead(os.getpid(), self.shared_directory)  # type: ignore[no-untyped-call]

    def _child(self, metric: Any, labels: tuple[Any, ...]) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _key(self, name: str) -> str:
        label = self._key_labels.get(name)
        if label is None:
            full = len(self._key_labels) >= self.settings.max_key_series
            label = self._key_labels[name] = OTHER if full else name
        return label


def _bounded_error(error_type: str) -> str:
    return error_type if error_type in ANTHROPIC_ERROR_TYPES else OTHER_ERROR
