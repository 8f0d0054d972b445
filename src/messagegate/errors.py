"""The gateway's one exception tree; each class knows its Anthropic error type and HTTP status.

    GatewayError                      base: status, error_type, message
    ├── InvalidRequest                400 invalid_request_error (bad body, no eligible route)
    │   └── PrivacyRefused            400, with x-messagegate-privacy-error: CODE (privacy mode)
    ├── AuthenticationFailed          401 authentication_error  (no, unknown, revoked, expired key)
    ├── BudgetExhausted               402 billing_error         (the key's budget is spent)
    ├── PermissionDenied              403 permission_error      (model outside the allow-list)
    ├── NotFound                      404 not_found_error       (unknown path, model)
    ├── RequestTooLarge               413 request_too_large
    ├── RateLimited                   429 rate_limit_error      (the key's rpm, tpm or concurrency)
    ├── GatewayOverloaded             529 overloaded_error      (over a limit; shutting down)
    ├── ServiceUnavailable            503 api_error             (the key store is out of reach)
    │   └── LimitsUnavailable         503 api_error             (shared limits store unreachable)
    └── UpstreamError                 an upstream failed or answered with an error
        ├── UpstreamStatusError       the upstream answered with an error status
        ├── UpstreamUnreachable       502 api_error             (connect error, dropped connection)
        ├── UpstreamTimeout           504 timeout_error         (connect, first byte, idle, total)
        ├── UpstreamBusy              529 overloaded_error      (every connection allowed is in use)
        └── UpstreamProtocolError     502 api_error             (an unusable upstream answer)

Only ``server/`` turns a GatewayError into the JSON envelope (``api.envelope``). ``retryable`` says
whether routing may try another route; ``body`` holds an upstream error body to relay as it is;
``denial`` names the gateway's own refusals of a key (``DENIALS``), empty for every other error.
"""

from __future__ import annotations

# What a refusal of a key was for: a fixed set (a metric's label values).
DENIALS = ("auth", "model", "budget", "rpm", "tpm", "concurrency")


class GatewayError(Exception):
    """A failure the client is told about with Anthropic's error envelope."""

    status: int = 500
    error_type: str = "api_error"
    retryable: bool = False
    denial: str = ""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.headers: dict[str, str] = {}
        self.body: bytes | None = None


class InvalidRequest(GatewayError):
    status = 400
    error_type = "invalid_request_error"


class PrivacyRefused(InvalidRequest):
    """A privacy-mode message the gateway cannot accept; `code` tells the proxy what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"privacy mode: {message}")
        self.code = code
        self.headers["x-messagegate-privacy-error"] = code


class AuthenticationFailed(GatewayError):
    status = 401
    error_type = "authentication_error"
    denial = "auth"


class BudgetExhausted(GatewayError):
    """Retrying cannot help before the period resets: `x-should-retry: false` stops SDK retries."""

    status = 402
    error_type = "billing_error"
    denial = "budget"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.headers["x-should-retry"] = "false"


class PermissionDenied(GatewayError):
    status = 403
    error_type = "permission_error"
    denial = "model"  # the gateway refuses only a model outside a key's allow-list


class NotFound(GatewayError):
    status = 404
    error_type = "not_found_error"


class RequestTooLarge(GatewayError):
    status = 413
    error_type = "request_too_large"


class GatewayOverloaded(GatewayError):
    """The gateway itself is at a limit (or shutting down): retry later, maybe elsewhere."""

    status = 529
    error_type = "overloaded_error"


class ServiceUnavailable(GatewayError):
    """Something the gateway needs (its key store, the limits every replica shares) is out of
    reach: retryable, after `retry-after` seconds."""

    status = 503
    error_type = "api_error"
    # Seconds a client is asked to wait before retrying.
    RETRY_AFTER = 5

    def __init__(self, message: str, retry_after: int = RETRY_AFTER) -> None:
        super().__init__(message)
        self.headers["retry-after"] = str(retry_after)
        self.headers["x-should-retry"] = "true"


class LimitsUnavailable(ServiceUnavailable):
    """The store of the limits every replica shares cannot be reached and the operator chose to
    refuse (`on_outage: ... fail_closed`)."""


class RateLimited(GatewayError):
    """One of the key's own limits; `retry-after` is whole seconds, at most 60 (clients such as
    Claude Code give up on a longer wait)."""

    status = 429
    error_type = "rate_limit_error"

    def __init__(
        self, message: str, retry_after: int, headers: dict[str, str], denial: str
    ) -> None:
        super().__init__(message)
        self.denial = denial  # rpm, tpm or concurrency
        self.headers.update(headers)
        self.headers["retry-after"] = str(retry_after)


class UpstreamError(GatewayError):
    """An upstream failed; ``retryable`` says whether another route may be tried."""

    status = 502
    error_type = "api_error"
    retryable = True


class UpstreamStatusError(UpstreamError):
    """The upstream answered with an error status; status and type are the client-facing ones."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        error_type: str,
        upstream_status: int,
        retryable: bool,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.upstream_status = upstream_status
        self.retryable = retryable
        self.retry_after = retry_after
        if retry_after is not None:
            self.headers["retry-after"] = retry_after

    @property
    def rate_limited(self) -> bool:
        return self.upstream_status == 429


class UpstreamUnreachable(UpstreamError):
    status = 502
    error_type = "api_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    error_type = "timeout_error"


class UpstreamBusy(UpstreamError):
    """The provider's `max_connections` are all in use and its wait queue is full or too slow:
    another route may serve, or the client may retry soon."""

    status = 529
    error_type = "overloaded_error"


class UpstreamProtocolError(UpstreamError):
    status = 502
    error_type = "api_error"
