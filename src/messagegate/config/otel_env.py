"""The standard ``OTEL_*`` variables a trace exporter reads, parsed once into frozen settings.

Only the OTLP/HTTP exporter is built in (``http/protobuf``, the default, and ``http/json``);
``grpc`` is refused with a message naming the variable, since it needs a gRPC stack the
gateway does not carry and every collector also listens for OTLP/HTTP (port 4318).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

DEFAULT_ENDPOINT = "http://localhost:4318"
TRACES_PATH = "/v1/traces"
Sampler = Literal[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
]
Protocol = Literal["http/protobuf", "http/json"]
Compression = Literal["none", "gzip"]
SAMPLERS: dict[str, Sampler] = {
    "always_on": "always_on",
    "always_off": "always_off",
    "traceidratio": "traceidratio",
    "parentbased_always_on": "parentbased_always_on",
    "parentbased_always_off": "parentbased_always_off",
    "parentbased_traceidratio": "parentbased_traceidratio",
}
_PROTOCOLS: dict[str, Protocol] = {"http/protobuf": "http/protobuf", "http/json": "http/json"}
_COMPRESSIONS: dict[str, Compression] = {"none": "none", "gzip": "gzip"}
# OTEL_BSP_* bounds: a value outside them is a mistake, not a wish.
_MAX_QUEUE = 1_000_000
_MAX_MILLISECONDS = 3_600_000


class OtelVariableError(ValueError):
    """An ``OTEL_*`` variable is invalid; the message names it."""


@dataclass(frozen=True, slots=True)
class OtlpSettings:
    """Where and how spans go, and which requests are sampled."""

    endpoint: str = DEFAULT_ENDPOINT + TRACES_PATH
    protocol: Protocol = "http/protobuf"
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 10.0
    compression: Compression = "none"
    certificate: str | None = None
    resource: tuple[tuple[str, str], ...] = (("service.name", "messagegate"),)
    sampler: Sampler = "parentbased_always_on"
    ratio: float = 1.0
    max_queue_size: int = 2048
    max_export_batch_size: int = 512
    schedule_delay: float = 5.0
    export_timeout: float = 30.0

    def __repr__(self) -> str:
        # Exporter headers usually carry a vendor's API key.
        names = ", ".join(name for name, _ in self.headers)
        where = f"endpoint={self.endpoint!r}, protocol={self.protocol!r}"
        return f"OtlpSettings({where}, headers=[{names}])"


def parse_otlp(environ: Mapping[str, str]) -> OtlpSettings:
    """The settings the environment gives, the specification's defaults for the rest."""
    reader = _Variables(environ)
    queue = reader.integer("OTEL_BSP_MAX_QUEUE_SIZE", 2048, 1, _MAX_QUEUE)
    batch = reader.integer("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, 1, _MAX_QUEUE)
    if batch > queue:
        raise OtelVariableError(
            f"OTEL_BSP_MAX_EXPORT_BATCH_SIZE: {batch} exceeds OTEL_BSP_MAX_QUEUE_SIZE ({queue})"
        )
    sampler, ratio = reader.sampler()
    return OtlpSettings(
        endpoint=reader.endpoint(),
        protocol=reader.protocol(),
        headers=reader.pairs("HEADERS"),
        timeout=reader.milliseconds(reader.pick("TIMEOUT"), 10_000) / 1000,
        compression=reader.compression(),
        certificate=reader.value(reader.pick("CERTIFICATE")),
        resource=reader.resource(),
        sampler=sampler,
        ratio=ratio,
        max_queue_size=queue,
        max_export_batch_size=batch,
        schedule_delay=reader.milliseconds("OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000,
        export_timeout=reader.milliseconds("OTEL_BSP_EXPORT_TIMEOUT", 30_000) / 1000,
    )


class _Variables:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def value(self, name: str) -> str | None:
        return self.environ.get(name, "").strip() or None

    def pick(self, suffix: str) -> str:
        """The traces-only variable if it is set, else the one for every signal."""
        specific = f"OTEL_EXPORTER_OTLP_TRACES_{suffix}"
        return specific if self.value(specific) is not None else f"OTEL_EXPORTER_OTLP_{suffix}"

    def endpoint(self) -> str:
        name = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        url = self.value(name)
        if url is None:
            # The signal-wide endpoint is a base: the signal's path is appended to it.
            name = "OTEL_EXPORTER_OTLP_ENDPOINT"
            base = self.value(name) or DEFAULT_ENDPOINT
            url = base.rstrip("/") + TRACES_PATH
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OtelVariableError(f"{name}: expected an http:// or https:// URL, got {url!r}")
        return url

    def protocol(self) -> Protocol:
        name = self.pick("PROTOCOL")
        protocol = self.value(name) or "http/protobuf"
        if protocol in _PROTOCOLS:
            return _PROTOCOLS[protocol]
        if protocol == "grpc":
            raise OtelVariableError(
                f"{name}: grpc is not built in; use http/protobuf (collectors listen on 4318)"
            )
        raise OtelVariableError(f"{name}: expected http/protobuf or http/json, got {protocol!r}")

    def compression(self) -> Compression:
        name = self.pick("COMPRESSION")
        compression = self.value(name) or "none"
        if compression in _COMPRESSIONS:
            return _COMPRESSIONS[compression]
        raise OtelVariableError(f"{name}: expected gzip or none, got {compression!r}")

    def pairs(self, suffix: str) -> tuple[tuple[str, str], ...]:
        name = self.pick(suffix)
        return _pairs(name, self.value(name), lower_keys=True)

    def resource(self) -> tuple[tuple[str, str], ...]:
        attributes = dict(
            _pairs("OTEL_RESOURCE_ATTRIBUTES", self.value("OTEL_RESOURCE_ATTRIBUTES"))
        )
        service = self.value("OTEL_SERVICE_NAME")
        attributes["service.name"] = service or attributes.get("service.name", "messagegate")
        return tuple(attributes.items())

    def sampler(self) -> tuple[Sampler, float]:
        name = self.value("OTEL_TRACES_SAMPLER") or "parentbased_always_on"
        known = SAMPLERS.get(name)
        if known is None:
            choices = ", ".join(SAMPLERS)
            raise OtelVariableError(f"OTEL_TRACES_SAMPLER: expected one of {choices}, got {name!r}")
        argument = self.value("OTEL_TRACES_SAMPLER_ARG")
        if not known.endswith("traceidratio") or argument is None:
            return known, 1.0
        try:
            ratio = float(argument)
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            raise OtelVariableError(
                f"OTEL_TRACES_SAMPLER_ARG: expected a ratio from 0 to 1, got {argument!r}"
            )
        return known, ratio

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        text = self.value(name)
        if text is None:
            return default
        try:
            number = int(text)
        except ValueError:
            number = low - 1
        if not low <= number <= high:
            raise OtelVariableError(f"{name}: expected a whole number {low}-{high}, got {text!r}")
        return number

    def milliseconds(self, name: str, default: int) -> int:
        return self.integer(name, default, 1, _MAX_MILLISECONDS)


def _pairs(name: str, text: str | None, *, lower_keys: bool = False) -> tuple[tuple[str, str], ...]:
    """``key1=value1,key2=value2`` with percent-encoded values (the W3C baggage form)."""
    if text is None:
        return ()
    pairs = []
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise OtelVariableError(f"{name}: expected key=value pairs, got {item.strip()!r}")
        pairs.append((key.lower() if lower_keys else key, unquote(value.strip())))
    return tuple(pairs)
