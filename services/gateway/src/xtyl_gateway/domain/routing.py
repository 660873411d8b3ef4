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
    ("/v1/notifications", "notify"),
    ("/webhooks/brevo", "notify"),
)

#: Routes with no user behind them: the service checks its own credential (Brevo's webhook
#: carries a shared secret); the gateway rate-limits them per client address instead.
ANONYMOUS_PREFIXES = frozenset({"/webhooks/brevo"})

#: RFC 9110 §7.6.1 hop-by-hop headers, plus ones a proxy must set itself.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"x-request-id",
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-real-ip",
    }
)

#: Headers that would claim an identity or an internal privilege: a client never sets them.
_IDENTITY_PREFIXES = (b"x-user", b"x-xtyl", b"x-internal", b"x-service", b"x-auth", b"x-supabase")
_IDENTITY_EXACT = frozenset({b"x-forwarded-user", b"x-remote-user", b"remote-user", b"x-owner-id"})


class Route(msgspec.Struct, frozen=True):
    prefix: str
    upstream: str

    @property
    def anonymous(self) -> bool:
        return self.prefix in ANONYMOUS_PREFIXES


def match_route(path: str) -> Route | None:
    for prefix, upstream in ROUTES:
        if path == prefix or path.startswith(prefix + "/"):
            return Route(prefix, upstream)
    return None


def is_forbidden_request_header(name: bytes) -> bool:
    """``name`` is lower-case, as ASGI gives it."""
    return name in HOP_BY_HOP or name in _IDENTITY_EXACT or name.startswith(_IDENTITY_PREFIXES)


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names listed in ``Connection`` are hop-by-hop too (RFC 9110 §7.6.1)."""
    names: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            names.update(token.strip().lower() for token in value.split(b","))
    return frozenset(names)


def upstream_request_headers(
    headers: Iterable[tuple[bytes, bytes]], extra: Iterable[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """Client headers minus hop-by-hop and identity ones, plus what the gateway adds."""
    header_list = list(headers)
    dropped = (
        connection_tokens(header_list) if any(n == b"connection" for n, _ in header_list) else ()
    )
    out = [
        (name, value)
        for name, value in header_list
        if not (is_forbidden_request_header(name) or name in dropped)
    ]
    out.extend(extra)
    return out


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
