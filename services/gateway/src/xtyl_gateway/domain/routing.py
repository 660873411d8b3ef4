"""Which upstream serves a public path, and which headers cross the gateway. Pure logic."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

#: Public path prefixes and the upstream that serves them. A prefix matches itself and its
#: sub-paths (``/v1/files`` and ``/v1/files/…``), never ``/v1/filesystem``.
ROUTES: tuple[tuple[str, str], ...] = (
    ("/v1/files", "storage"),
    ("/v1/documents", "rag"),
    ("/v1/search", "rag"),
    ("/v1/answer", "rag"),
    # RFC 8058 one-click unsubscribe: the link in a mail works without signing in (notify
    # checks the link's signature). Listed before /v1/notifications, whose routes need a user.
    ("/v1/notifications/unsubscribe", "notify"),
    ("/v1/notifications", "notify"),
    ("/webhooks/brevo", "notify"),
    ("/webhooks/auth", "notify"),
)

#: The caller's profile (``public.users``), served by the gateway itself; its rate-limit
#: bucket has this name, as a proxied route's has its prefix.
ME_PATH = "/v1/me"
#: ``GET /v1/me/export`` counts against a bucket of its own (``RATE_LIMIT_ROUTES``).
EXPORT_PATH = "/v1/me/export"

#: Routes with no user behind them: the service checks its own credential (Brevo's webhook
#: carries a shared secret, Supabase Auth's Send Email Hook a Standard Webhooks signature);
#: the gateway rate-limits them per client address instead.
ANONYMOUS_PREFIXES = frozenset(
    {"/webhooks/brevo", "/webhooks/auth", "/v1/notifications/unsubscribe"}
)


class Route(msgspec.Struct, frozen=True):
    prefix: str
    upstream: str

    @property
    def anonymous(self) -> bool:
        return self.prefix in ANONYMOUS_PREFIXES


def is_under(path: str, prefix: str) -> bool:
    """``path`` is ``prefix`` or below it (``/v1/files/x``, never ``/v1/filesystem``)."""
    return path == prefix or path.startswith(prefix + "/")


def match_route(path: str) -> Route | None:
    for prefix, upstream in ROUTES:
        if is_under(path, prefix):
            return Route(prefix, upstream)
    return None


#: The request headers a client's request carries through to a service; every other header is
#: dropped. An allow-list, so a header invented tomorrow (``X-Original-URL``, ``X-Rewrite-URL``,
#: ``X-HTTP-Method-Override``, ``True-Client-IP``, ``Expect``, any identity claim) never
#: reaches a service. The gateway adds ``X-Request-ID`` and ``X-Forwarded-For``/``-Proto``;
#: the body's framing (``Content-Length`` or chunked) is set for the bytes actually sent.
FORWARDED_REQUEST_HEADERS = frozenset(
    {
        b"accept",
        b"accept-language",
        b"authorization",
        b"cache-control",
        b"content-disposition",
        b"content-language",
        b"content-type",
        b"idempotency-key",
        b"if-match",
        b"if-modified-since",
        b"if-none-match",
        b"if-range",
        b"if-unmodified-since",
        b"last-event-id",
        b"range",
        b"user-agent",
        # Standard Webhooks signatures (Supabase's Send Email Hook)
        b"webhook-id",
        b"webhook-signature",
        b"webhook-timestamp",
    }
)


class BadRequestFraming(ValueError):
    """The request's framing headers are not something the gateway forwards."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class ForwardedRequest(msgspec.Struct, frozen=True):
    """What crosses to the service: headers (as aiohttp takes them) and the body's framing."""

    headers: list[tuple[str, str]]
    #: the client's Content-Length, or None
    length: int | None
    #: the body arrives chunked (no Content-Length)
    chunked: bool


def upstream_request_headers(
    headers: Iterable[tuple[bytes, bytes]], extra: Iterable[tuple[bytes, bytes]]
) -> ForwardedRequest:
    """The allowed client headers plus what the gateway adds, and the body's framing.

    Raises :class:`BadRequestFraming` for a transfer coding other than plain ``chunked``
    (``gzip, chunked`` would reach the service still compressed), both a length and a
    transfer coding (the classic smuggling pair: which one frames the body?), or a compressed
    request body.
    """
    out: list[tuple[str, str]] = []
    length: int | None = None
    chunked = False
    for name, value in headers:
        if name == b"transfer-encoding":
            if value.strip().lower() != b"chunked":
                raise BadRequestFraming(
                    "only the chunked transfer coding is accepted", "unsupported_transfer_coding"
                )
            chunked = True
        elif name == b"content-encoding":
            if value.strip().lower() not in (b"", b"identity"):
                raise BadRequestFraming(
                    "request bodies are accepted uncompressed only",
                    "unsupported_content_encoding",
                )
        elif name == b"content-length":
            # the server refuses malformed and repeated lengths first; never trust it alone
            if not value.isdigit() or length is not None:
                raise BadRequestFraming("one plain Content-Length, please", "bad_request")
            length = int(value)
        elif name in FORWARDED_REQUEST_HEADERS:
            out.append((name.decode("latin-1"), value.decode("latin-1")))
    if chunked and length is not None:
        raise BadRequestFraming(
            "a request has a Content-Length or a Transfer-Encoding, never both",
            "conflicting_framing",
        )
    out.extend((name.decode("latin-1"), value.decode("latin-1")) for name, value in extra)
    return ForwardedRequest(out, length, chunked)


#: Path segments no route of ours has, that a service's router might read as a way elsewhere.
_SUSPECT_SEGMENTS = frozenset({".", "..", "%2e", "%2e%2e", ".%2e", "%2e."})


def is_suspect_path(raw_path: str) -> bool:
    """Dot segments (plain or percent-encoded), encoded slashes or backslashes: never ours."""
    lowered = raw_path.lower()
    if "%2f" in lowered or "%5c" in lowered or "\\" in lowered or "%00" in lowered:
        return True
    return any(segment in _SUSPECT_SEGMENTS for segment in lowered.split("/"))


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names listed in ``Connection`` are hop-by-hop too (RFC 9110 §7.6.1)."""
    names: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            names.update(token.strip().lower() for token in value.split(b","))
    return frozenset(names)


RESPONSE_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"server",
        b"date",
        b"x-request-id",
    }
)


def downstream_response_headers(
    headers: Iterable[tuple[bytes, bytes]],
) -> list[tuple[bytes, bytes]]:
    """The service's response headers, lower-cased for ASGI, minus hop-by-hop ones."""
    lowered = [(name.lower(), value) for name, value in headers]
    dropped = connection_tokens(lowered)
    return [
        (name, value)
        for name, value in lowered
        if name not in RESPONSE_HOP_BY_HOP and name not in dropped
    ]
