"""Finished requests' spans queued (bounded: when full, spans are dropped and counted) and sent
in batches to the OTLP/HTTP endpoint, with the specification's retries, between requests.

The event loop takes a batch when it is full or ``OTEL_BSP_SCHEDULE_DELAY`` has passed and
encodes it; one thread of its own POSTs it (blocking I/O, off the loop). A batch the endpoint
refuses, or that cannot be sent within ``OTEL_EXPORTER_OTLP_TIMEOUT``, is dropped and counted.
Shutdown sends what is left, for at most that timeout.
"""

from __future__ import annotations

import asyncio
import enum
import gzip
import http.client
import logging
import random
import ssl
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from itertools import accumulate
from typing import Protocol
from urllib.parse import urlsplit

from messagegate.config.otel_env import OtlpSettings
from messagegate.telemetry.span_record import RequestRecord

log = logging.getLogger("messagegate.error")

# OTLP/HTTP: these statuses are worth another try, after a backoff or the server's Retry-After.
RETRYABLE = frozenset({429, 502, 503, 504})
_BACKOFF_FIRST = 1.0
_BACKOFF_MAX = 32.0
# A collector's answer is a few bytes (a partial-success message at most); more is not read.
_ANSWER_MAX = 64 * 1024
QUEUE_FULL = "queue_full"
EXPORT_FAILED = "export_failed"

Dropped = Callable[[str, int], None]


class Encoder(Protocol):
    content_type: str

    def encode(self, records: Sequence[RequestRecord]) -> bytes: ...


class Phase(enum.Enum):
    """The exporter's life: spans are taken while RUNNING; CLOSED after the last flush."""

    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


NEW, RUNNING, CLOSED = Phase.NEW, Phase.RUNNING, Phase.CLOSED
_NEXT = {NEW: {RUNNING, CLOSED}, RUNNING: {CLOSED}, CLOSED: set()}


class SpanQueue:
    """Finished requests' spans waiting for their batch: at most `limit` spans, the rest dropped
    and counted. A request's spans (its own and its attempts') are queued and taken together."""

    __slots__ = ("batch_size", "counts", "dropped", "limit", "ready", "records", "spans")

    def __init__(self, limit: int, batch_size: int, dropped: Dropped) -> None:
        self.records: list[RequestRecord] = []
        # Each record's spans, and their sum.
        self.counts: list[int] = []
        self.spans = 0
        self.limit = limit
        self.batch_size = batch_size
        self.dropped = dropped
        self.ready: asyncio.Event | None = None

    def add(self, record: RequestRecord, spans: int) -> None:
        queued = self.spans + spans
        if queued > self.limit:
            self.dropped(QUEUE_FULL, spans)
            return
        self.records.append(record)
        self.counts.append(spans)
        self.spans = queued
        if queued >= self.batch_size and self.ready is not None:
            self.ready.set()

    def take(self) -> tuple[list[RequestRecord], int]:
        """The oldest records whose spans fit in a batch (one at least), and their spans."""
        counts = self.counts
        if self.spans <= self.batch_size:
            taken, spans = len(counts), self.spans
        else:
            ends = list(accumulate(counts))
            taken = bisect_right(ends, self.batch_size) or 1
            spans = ends[taken - 1]
        batch = self.records[:taken]
        del self.records[:taken], counts[:taken]
        self.spans -= spans
        return batch, spans

    def clear(self) -> int:
        """Drop what is queued; the spans dropped."""
        spans = self.spans
        self.records.clear()
        self.counts.clear()
        self.spans = 0
        return spans


class OtlpExporter:
    def __init__(
        self,
        settings: OtlpSettings,
        queue: SpanQueue,
        encoder: Encoder,
        sender: Sender | None = None,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.encoder = encoder
        self.sender = sender or Sender(settings)
        self.phase = NEW
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="messagegate-otlp")
        self._task: asyncio.Task[None] | None = None

    def _become(self, phase: Phase) -> None:
        if phase not in _NEXT[self.phase]:
            raise RuntimeError(f"exporter cannot go from {self.phase.value} to {phase.value}")
        self.phase = phase

    def start(self) -> None:
        self._become(RUNNING)
        self.queue.ready = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        ready = self.queue.ready
        assert ready is not None
        while True:
            try:
                async with asyncio.timeout(self.settings.schedule_delay):
                    await ready.wait()
            except TimeoutError:
                pass
            ready.clear()
            while self.queue.records:
                await self._export(time.monotonic() + self._timeout())
                if self.queue.spans < self.queue.batch_size:
                    break

    def _timeout(self) -> float:
        return min(self.settings.timeout, self.settings.export_timeout)

    async def _export(self, deadline: float) -> None:
        batch, spans = self.queue.take()
        loop = asyncio.get_running_loop()
        try:
            body = self.encoder.encode(batch)
            sent = await loop.run_in_executor(self._thread, self.sender.send, body, deadline)
        except Exception:
            # A bug here must cost a batch, not every span after it.
            log.exception("OTLP export failed; spans dropped")
            sent = False
        if not sent:
            self.queue.dropped(EXPORT_FAILED, spans)

    async def close(self) -> None:
        """Send what is queued, for at most the export timeout; what is left then is dropped."""
        if self.phase is CLOSED:
            return
        self._become(CLOSED)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        deadline = time.monotonic() + self._timeout()
        while self.queue.records and time.monotonic() < deadline:
            await self._export(deadline)
        if self.queue.records:
            self.queue.dropped(EXPORT_FAILED, self.queue.clear())
        self._thread.shutdown(wait=False)
        self.sender.close()


class Sender:
    """POSTs bodies to the traces endpoint on one kept-alive connection (its thread's own)."""

    def __init__(
        self,
        settings: OtlpSettings,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        url = urlsplit(settings.endpoint)
        self.https = url.scheme == "https"
        self.host = url.hostname or ""
        self.port = url.port or (443 if self.https else 80)
        self.path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self.gzip = settings.compression == "gzip"
        self.headers = dict(settings.headers)
        content_type = "application/json" if settings.protocol == "http/json" else None
        self.headers["content-type"] = content_type or "application/x-protobuf"
        if self.gzip:
            self.headers["content-encoding"] = "gzip"
        self.context = (
            ssl.create_default_context(cafile=settings.certificate) if self.https else None
        )
        self.sleep = sleep
        self.clock = clock
        self.connection: http.client.HTTPConnection | None = None
        self.failing = False

    def send(self, body: bytes, deadline: float) -> bool:
        """True once the endpoint accepted `body`; False when it refused or time ran out."""
        if self.gzip:
            body = gzip.compress(body, compresslevel=5)
        attempt = 0
        while True:
            status, retry_after = self._post(body, deadline)
            if 200 <= status < 300:
                if self.failing:
                    log.warning("OTLP export to %s works again", self.host)
                self.failing = False
                return True
            wait = _backoff(attempt, retry_after) if status in RETRYABLE or status == 0 else None
            if wait is None or self.clock() + wait >= deadline:
                self._failed(status)
                return False
            self.sleep(wait)
            attempt += 1

    def _post(self, body: bytes, deadline: float) -> tuple[int, str | None]:
        """The status (0: no answer) and Retry-After of one POST."""
        remaining = deadline - self.clock()
        if remaining <= 0:
            return 0, None
        try:
            connection = self._connection(remaining)
            connection.request("POST", self.path, body, self.headers)
            response = connection.getresponse()
            response.read(_ANSWER_MAX)
            if not response.isclosed():
                self.close()  # an answer longer than any collector's: not worth reading
            return response.status, response.getheader("retry-after")
        except (OSError, http.client.HTTPException):
            self.close()
            return 0, None

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.connection is None:
            if self.https:
                self.connection = http.client.HTTPSConnection(
                    self.host, self.port, timeout=timeout, context=self.context
                )
            else:
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        else:
            self.connection.timeout = timeout
            if self.connection.sock is not None:
                self.connection.sock.settimeout(timeout)
        return self.connection

    def _failed(self, status: int) -> None:
        if not self.failing:
            reason = f"status {status}" if status else "no answer"
            log.warning("OTLP export to %s failed (%s); spans dropped", self.host, reason)
        self.failing = True

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def _backoff(attempt: int, retry_after: str | None) -> float:
    """The server's Retry-After (seconds or an HTTP date), else exponential with jitter."""
    if retry_after is not None:
        retry_after = retry_after.strip()
        if retry_after.isdigit():
            return float(retry_after)
        try:
            return max(0.0, parsedate_to_datetime(retry_after).timestamp() - time.time())
        except (TypeError, ValueError):
            pass
    wait = min(_BACKOFF_FIRST * 2.0**attempt, _BACKOFF_MAX)
    return wait * random.uniform(0.5, 1.0)
