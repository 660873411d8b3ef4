"""One error tree for every service, mapped once to RFC 9457 problem details.

    XtylError                      500 internal_error (never leaks details)
    ├── ClientError                4xx: the caller can fix the request
    │   ├── InvalidInput           422 invalid_input
    │   │   └── InvalidText        422 invalid_text (NUL, lone surrogates: text Postgres refuses)
    │   ├── Unauthorized           401 unauthorized (codes: token_expired, token_invalid, ...)
    │   ├── Forbidden              403 forbidden
    │   ├── NotFound               404 not_found
    │   ├── RequestTimeout         408 request_timeout (the request body stalled)
    │   ├── Conflict               409 conflict
    │   ├── PayloadTooLarge        413 payload_too_large
    │   ├── UnsupportedMediaType   415 unsupported_media_type
    │   ├── RateLimited            429 rate_limited (carries retry_after)
    │   └── ClientDisconnected     499 client_disconnected (for logs: nobody reads it)
    └── DependencyError            5xx: something we depend on failed (may carry retry_after_s)
        ├── Unavailable            503 dependency_unavailable
        └── TimedOut               504 dependency_timeout

Every error has a stable machine-readable ``code`` (the problem's ``code`` member and the last
segment of its ``type`` URI), a short human ``title`` and an optional ``detail``. Subclasses pick
their status and default code; callers may give a more precise code, e.g.
``Unauthorized("token has expired", code="token_expired")``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

PROBLEM_TYPE_BASE = "https://errors.xtyl.dev/"
PROBLEM_CONTENT_TYPE = "application/problem+json"


class XtylError(Exception):
    """Root of every error a service raises on purpose."""

    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal server error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.code = code or self.default_code
        self.extra: dict[str, Any] = dict(extra or {})
        self.headers: dict[str, str] = dict(headers or {})
        #: Work to run once the problem response has been sent, in the same request (e.g. read
        #: and drop the rest of an upload the answer refused, so the client reads the answer
        #: instead of a reset connection).
        self.after_response: Callable[[], Awaitable[None]] | None = None

    def to_problem(self, *, instance: str | None = None) -> dict[str, Any]:
        """The RFC 9457 body. Extension members never override the standard ones."""
        body: dict[str, Any] = {**self.extra}
        body.update(
            {
                "type": PROBLEM_TYPE_BASE + self.code,
                "title": self.title,
                "status": self.status,
                "code": self.code,
            }
        )
        if self.detail is not None:
            body["detail"] = self.detail
        if instance is not None:
            body["instance"] = instance
        return body


class ClientError(XtylError):
    status = 400
    default_code = "bad_request"
    title = "Bad request"


class InvalidInput(ClientError):
    status = 422
    default_code = "invalid_input"
    title = "Invalid input"


class InvalidText(InvalidInput):
    """Text Postgres cannot store: a NUL character, a lone UTF-16 surrogate, bytes that are not
    UTF-8 (see :mod:`xtyl_common.text`)."""

    default_code = "invalid_text"
    title = "Invalid text"


class Unauthorized(ClientError):
    status = 401
    default_code = "unauthorized"
    title = "Unauthorized"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        merged = {"WWW-Authenticate": 'Bearer error="invalid_token"', **(headers or {})}
        super().__init__(detail, code=code, extra=extra, headers=merged)


class Forbidden(ClientError):
    status = 403
    default_code = "forbidden"
    title = "Forbidden"


class NotFound(ClientError):
    status = 404
    default_code = "not_found"
    title = "Not found"


class MethodNotAllowed(ClientError):
    status = 405
    default_code = "method_not_allowed"
    title = "Method not allowed"


class RequestTimeout(ClientError):
    status = 408
    default_code = "request_timeout"
    title = "Request timeout"


class Conflict(ClientError):
    status = 409
    default_code = "conflict"
    title = "Conflict"


class PayloadTooLarge(ClientError):
    status = 413
    default_code = "payload_too_large"
    title = "Payload too large"


class UnsupportedMediaType(ClientError):
    status = 415
    default_code = "unsupported_media_type"
    title = "Unsupported media type"


class RateLimited(ClientError):
    status = 429
    default_code = "rate_limited"
    title = "Too many requests"

    def __init__(
        self, retry_after_s: int, detail: str | None = None, *, code: str | None = None
    ) -> None:
        retry_after_s = max(1, retry_after_s)
        super().__init__(
            detail or f"rate limit exceeded, retry in {retry_after_s} s",
            code=code,
            extra={"retry_after": retry_after_s},
            headers={"Retry-After": str(retry_after_s)},
        )
        self.retry_after_s = retry_after_s


class ClientDisconnected(ClientError):
    """The client went away mid-request: the status only reaches the access log."""

    status = 499
    default_code = "client_disconnected"
    title = "Client closed the request"


class DependencyError(XtylError):
    """Something we depend on failed; worth trying again later. ``retry_after_s``: how long
    the dependency asked us to wait (``Retry-After``, a rate-limit reset), when it said."""

    status = 502
    default_code = "dependency_error"
    title = "A dependency failed"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(detail, code=code, extra=extra, headers=headers)
        self.retry_after_s = retry_after_s


class Unavailable(DependencyError):
    status = 503
    default_code = "dependency_unavailable"
    title = "Service unavailable"


class TimedOut(DependencyError):
    status = 504
    default_code = "dependency_timeout"
    title = "Dependency timed out"
