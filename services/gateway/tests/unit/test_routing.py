"""Which upstream a path goes to, and which headers cross the gateway."""

from __future__ import annotations

import pytest

from xtyl_gateway.domain.routing import (
    downstream_response_headers,
    match_route,
    upstream_request_headers,
)


@pytest.mark.parametrize(
    ("path", "upstream"),
    [
        ("/v1/files", "storage"),
        ("/v1/files/3f1c/content", "storage"),
        ("/v1/documents", "rag"),
        ("/v1/documents/abc", "rag"),
        ("/v1/search", "rag"),
        ("/v1/answer", "rag"),
        ("/v1/notifications", "notify"),
        ("/v1/notifications/x", "notify"),
        ("/v1/filesystem", None),
        ("/v1/searches", None),
        ("/v1/me", None),
        ("/webhooks/brevo", "notify"),
        ("/webhooks/other", None),
        ("/files", None),
    ],
)
def test_routes(path: str, upstream: str | None) -> None:
    route = match_route(path)
    assert (route.upstream if route else None) == upstream


def test_identity_and_hop_by_hop_headers_are_dropped() -> None:
    headers = [
        (b"authorization", b"Bearer abc"),
        (b"content-type", b"application/json"),
        (b"x-user-id", b"someone-else"),
        (b"x-xtyl-service", b"storage"),
        (b"x-internal-token", b"t"),
        (b"x-forwarded-user", b"admin"),
        (b"x-owner-id", b"123"),
        (b"x-supabase-role", b"service_role"),
        (b"connection", b"keep-alive, x-custom-hop"),
        (b"x-custom-hop", b"1"),
        (b"transfer-encoding", b"chunked"),
        (b"host", b"evil"),
        (b"x-request-id", b"client-chosen"),
        (b"x-forwarded-for", b"1.2.3.4"),
        (b"accept", b"a"),
        (b"accept", b"b"),
    ]
    out = upstream_request_headers(
        headers, [(b"x-request-id", b"rid"), (b"x-forwarded-for", b"9.9.9.9")]
    )
    assert out == [
        (b"authorization", b"Bearer abc"),
        (b"content-type", b"application/json"),
        (b"accept", b"a"),
        (b"accept", b"b"),
        (b"x-request-id", b"rid"),
        (b"x-forwarded-for", b"9.9.9.9"),
    ]


def test_response_hop_by_hop_headers_are_dropped() -> None:
    out = downstream_response_headers(
        [
            (b"Content-Type", b"text/plain"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Connection", b"close, X-Hop"),
            (b"X-Hop", b"1"),
            (b"Set-Cookie", b"a=1"),
            (b"Set-Cookie", b"b=2"),
            (b"Server", b"upstream"),
        ]
    )
    assert out == [
        (b"content-type", b"text/plain"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
    ]
