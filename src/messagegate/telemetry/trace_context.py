"""W3C trace context (``traceparent``, ``tracestate``) and the ``OTEL_TRACES_SAMPLER`` samplers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from messagegate.config.otel_env import Sampler as SamplerName

_HEX = frozenset("0123456789abcdef")
# tracestate: at most 32 members of at most 256 characters each (W3C), so 8,191 characters.
_TRACESTATE_MAX = 8191
_LOW_64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A client's well-formed trace context (ids in lowercase hex, as the header has them)."""

    trace_id: str
    span_id: str
    sampled: bool
    trace_state: str


def parse_traceparent(header: str, headers: Mapping[str, str]) -> TraceParent | None:
    """`header` as W3C Trace Context reads it (with the request's ``tracestate``), or None."""
    header = header.strip()
    version = header[:2]
    if len(header) < 55 or version == "ff" or not _HEX.issuperset(version):
        return None
    # Version 00 is exactly 55 characters; a later version may append fields after a dash.
    if (version == "00" and len(header) != 55) or (len(header) > 55 and header[55] != "-"):
        return None
    if header[2] != "-" or header[35] != "-" or header[52] != "-":
        return None
    trace_hex, span_hex, flags_hex = header[3:35], header[36:52], header[53:55]
    if not _HEX.issuperset(trace_hex + span_hex + flags_hex):
        return None
    if not trace_hex.strip("0") or not span_hex.strip("0"):
        return None
    state = headers.get("tracestate", "").strip()
    if len(state) > _TRACESTATE_MAX:
        state = ""
    return TraceParent(trace_hex, span_hex, bool(int(flags_hex, 16) & 1), state)


class Sampler:
    """The sampling decision of `OTEL_TRACES_SAMPLER` (with its ratio argument)."""

    __slots__ = ("always", "bound", "name", "parent_based")

    def __init__(self, name: SamplerName, ratio: float) -> None:
        self.parent_based = name.startswith("parentbased_")
        self.name = name.removeprefix("parentbased_")
        # TraceIdRatioBased: sampled when the trace id's low 64 bits are below ratio * 2^64.
        if self.name == "always_on":
            ratio = 1.0
        elif self.name == "always_off":
            ratio = 0.0
        self.bound = round(ratio * (_LOW_64 + 1))
        # Every request without a parent is sampled: no need to ask.
        self.always = self.bound > _LOW_64

    def root(self, trace_id: str) -> bool:
        """A request without a parent (its trace id in hex): the root sampler decides."""
        return int(trace_id[16:32], 16) < self.bound

    def child(self, trace_id: str, parent_sampled: bool) -> bool:
        """A request whose client sent its trace context."""
        if self.parent_based:
            return parent_sampled
        return self.root(trace_id)
