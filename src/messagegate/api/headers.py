"""The Messages API's header names the gateway reads, forwards or relays, in one place."""

from __future__ import annotations

VERSION = "anthropic-version"
BETA = "anthropic-beta"
# What an Anthropic client sends that an Anthropic-native upstream must get too.
CLIENT_API_HEADERS = (VERSION, BETA)
# W3C trace context: present in a call only when tracing put it there.
TRACE_HEADERS = ("traceparent", "tracestate")
# The version sent upstream when the client named none.
DEFAULT_VERSION = "2023-06-01"
# Upstream answer headers a client sees: rate limits and when to retry.
RELAYED_PREFIXES = ("anthropic-ratelimit-", "x-ratelimit-", "retry-after")
REQUEST_ID = "request-id"
