"""Which upstream a path goes to, and which headers cross the gateway."""

from __future__ import annotations

import pytest

from xtyl_gateway.domain.routing import (
    BadRequestFraming,
    downstream_response_headers,
    is_suspect_path,
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
        ("/webhooks/auth/send-email", "notify"),
        ("/webhooks/authx", None),
        ("/webhooks/other", None),
        ("/files", None),
    ],
)
def test_routes(path: str, upstream: str | None) -> None:
    route = match_route(path)
    assert (route.upstream if route else None) == upstream


def test_only_allowed_request_headers_cross() -> None:
    headers = [
        (b"authorization", b"Bearer abc"),
        (b"content-type", b"application/json"),
        (b"content-length", b"12"),
        (b"x-user-id", b"someone-else"),
        (b"x-xtyl-service", b"storage"),
        (b"x-internal-token", b"t"),
        (b"x-forwarded-user", b"admin"),
        (b"x-owner-id", b"123"),
        (b"x-supabase-role", b"service_role"),
        (b"connection", b"keep-alive, x-custom-hop"),
        (b"x-custom-hop", b"1"),
        (b"host", b"evil"),
        (b"x-request-id", b"client-chosen"),
        (b"x-forwarded-for", b"1.2.3.4"),
        (b"expect", b"100-continue"),
        (b"x-original-url", b"/internal/files"),
        (b"x-rewrite-url", b"/internal/files"),
        (b"x-http-method-override", b"DELETE"),
        (b"x-forwarded-port", b"443"),
        (b"x-forwarded-prefix", b"/internal"),
        (b"x-client-ip", b"10.0.0.1"),
        (b"true-client-ip", b"10.0.0.1"),
        (b"cf-connecting-ip", b"10.0.0.1"),
        (b"accept", b"a"),
        (b"accept", b"b"),
        (b"idempotency-key", b"k1"),
    ]
    out = upstream_request_headers(
        headers, [(b"x-request-id", b"rid"), (b"x-forwarded-for", b"9.9.9.9")]
    )
    assert out.headers == [
        ("authorization", "Bearer abc"),
        ("content-type", "application/json"),
        ("accept", "a"),
        ("accept", "b"),
        ("idempotency-key", "k1"),
        ("x-request-id", "rid"),
        ("x-forwarded-for", "9.9.9.9"),
    ]
    assert out.length == 12
    assert not out.chunked


def test_chunked_is_the_only_transfer_coding() -> None:
    assert upstream_request_headers([(b"transfer-encoding", b"chunked")], []).chunked
    for value in (b"gzip, chunked", b"chunked, chunked", b"identity", b"gzip"):
        with pytest.raises(BadRequestFraming) as caught:
            upstream_request_headers([(b"transfer-encoding", value)], [])
        assert caught.value.code == "unsupported_transfer_coding"


def test_a_length_and_a_transfer_coding_together_are_refused() -> None:
    with pytest.raises(BadRequestFraming) as caught:
        upstream_request_headers(
            [(b"content-length", b"5"), (b"transfer-encoding", b"chunked")], []
        )
    assert caught.value.code == "conflicting_framing"
    with pytest.raises(BadRequestFraming):
        upstream_request_headers([(b"content-length", b"5"), (b"content-length", b"5")], [])


def test_compressed_request_bodies_are_refused() -> None:
    with pytest.raises(BadRequestFraming) as caught:
        upstream_request_headers([(b"content-encoding", b"gzip")], [])
    assert caught.value.code == "unsupported_content_encoding"
    assert upstream_request_headers([(b"content-encoding", b"identity")], []).headers == []


@pytest.mark.parametrize(
    ("path", "suspect"),
    [
        ("/v1/files/3f1c/content", False),
        ("/v1/files/a.b.c", False),
        ("/v1/files/../internal/files", True),
        ("/v1/files/./x", True),
        ("/v1/files/%2e%2e/internal", True),
        ("/v1/files/.%2E/internal", True),
        ("/v1/files/..%2finternal", True),
        ("/v1/files/..%5Cinternal", True),
        ("/v1/files/a%00b", True),
    ],
)
def test_suspect_paths(path: str, suspect: bool) -> None:
    assert is_suspect_path(path) is suspect


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


def test_the_one_click_unsubscribe_link_is_anonymous_and_goes_to_notify() -> None:
    route = match_route("/v1/notifications/unsubscribe")
    assert route is not None
    assert route.upstream == "notify"
    assert route.anonymous
    preferences = match_route("/v1/notifications/preferences")
    assert preferences is not None
    assert not preferences.anonymous  # everything else under /v1/notifications takes a user
    assert match_route("/v1/notifications/unsubscribed") == match_route("/v1/notifications/x")
