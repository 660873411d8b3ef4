"""The streaming reverse proxy to the services behind the gateway.

Bodies stream both ways: a 1 GB upload passes through in chunks and never sits in memory. A
refused or reset upstream connection is 503 problem details, an upstream that does not answer
in time is 504; once the response has started, a failure can only cut the stream (the status
line is already on the wire).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import structlog
from litestar.types import Receive, Scope, Send

from xtyl_common.errors import ClientError, TimedOut, Unavailable
from xtyl_gateway.adapters.h1client import (
    UpstreamPool,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from xtyl_gateway.domain.routing import downstream_response_headers, upstream_request_headers

log = structlog.stdlib.get_logger("xtyl.gateway.proxy")

#: Bodies up to this size are read whole and sent with a Content-Length; larger ones stream.
_SMALL_BODY = 64 * 1024


class ClientDisconnectedError(ClientError):
    status = 499
    default_code = "client_disconnected"
    title = "Client closed the request"


class Proxy:
    def __init__(
        self,
        upstreams: Mapping[str, str],
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
    ) -> None:
        self._pools: dict[str, UpstreamPool] = {}
        self._prefixes: dict[str, bytes] = {}
        for name, url in upstreams.items():
            parts = urlsplit(url)
            if parts.scheme != "http" or not parts.hostname:
                raise ValueError(f"{name} upstream must be an http:// URL inside the cluster")
            self._pools[name] = UpstreamPool(
                parts.hostname,
                parts.port or 80,
                connect_timeout_s=connect_timeout_s,
                read_timeout_s=read_timeout_s,
            )
            self._prefixes[name] = parts.path.rstrip("/").encode()

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close()

    async def forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        upstream: str,
        extra: Iterable[tuple[bytes, bytes]],
    ) -> None:
        pool = self._pools[upstream]
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        query: bytes = scope.get("query_string", b"")
        target = self._prefixes[upstream] + raw_path + (b"?" + query if query else b"")
        headers = upstream_request_headers(scope["headers"], extra)
        method: str = scope.get("method", "GET")
        body = await _request_body(scope, receive)
        try:
            resp = await pool.request(method, target, headers, body)
        except UpstreamTimeoutError as exc:
            log.warning("upstream_timeout", upstream=upstream, method=method)
            raise TimedOut(
                f"the {upstream} service did not answer in time", code="upstream_timeout"
            ) from exc
        except UpstreamUnavailableError as exc:
            log.warning("upstream_unavailable", upstream=upstream, error=str(exc))
            raise Unavailable(
                f"the {upstream} service is unavailable", code="upstream_unavailable"
            ) from exc
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": resp.status,
                    "headers": downstream_response_headers(resp.headers),
                }
            )
            async for chunk in resp.iter_body():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (UpstreamTimeoutError, UpstreamUnavailableError) as exc:
            # The status is already sent: all we can do is cut the stream so the client sees it.
            log.warning("upstream_stream_broken", upstream=upstream, error=str(exc))
            raise
        finally:
            resp.release()


async def _request_body(scope: Scope, receive: Receive) -> bytes | AsyncIterator[bytes] | None:
    length: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"content-length":
            length = value
            break
    if length is None or (length.isdigit() and int(length) <= _SMALL_BODY):
        # no body, a small one, or a chunked one whose first message tells
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnectedError()
            chunk: bytes = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if not message.get("more_body", False):
                body = b"".join(chunks)
                return body if body or length is not None else None
            if length is None and size > _SMALL_BODY:
                return _stream_rest(b"".join(chunks), receive)
    return _stream_rest(b"", receive)


async def _stream_rest(first: bytes, receive: Receive) -> AsyncIterator[bytes]:
    if first:
        yield first
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnectedError()
        chunk: bytes = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def scope_header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def client_host(scope: Scope) -> str | None:
    client: Any = scope.get("client")
    return None if not client else str(client[0])
