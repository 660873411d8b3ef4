"""The streaming reverse proxy to the services behind the gateway.

Bodies stream both ways on the shared aiohttp session: a 1 GB upload passes through in chunks
and never sits in memory. A refused or reset upstream connection is 503 problem details, an
upstream that does not answer in time is 504; once the response has started, a failure can
only cut the stream (the status line is already on the wire).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import structlog
from litestar.types import Receive, Scope, Send
from yarl import URL

from xtyl_common.errors import ClientError, TimedOut, Unavailable
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
        session: aiohttp.ClientSession,
        upstreams: Mapping[str, str],
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
    ) -> None:
        self._session = session
        self._upstreams = {name: url.rstrip("/") for name, url in upstreams.items()}
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout_s, sock_read=read_timeout_s
        )

    async def forward(
        self, scope: Scope, receive: Receive, send: Send, upstream: str, extra: Mapping[str, str]
    ) -> None:
        base = self._upstreams[upstream]
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        query: bytes = scope.get("query_string", b"")
        target = base + raw_path.decode("latin-1")
        if query:
            target += "?" + query.decode("latin-1")
        headers = upstream_request_headers(scope["headers"], extra)
        method: str = scope.get("method", "GET")
        data = await _request_body(headers, receive)
        try:
            async with self._session.request(
                method,
                URL(target, encoded=True),
                headers=headers,
                data=data,
                timeout=self._timeout,
                allow_redirects=False,
                auto_decompress=False,
            ) as resp:
                await send(
                    {
                        "type": "http.response.start",
                        "status": resp.status,
                        "headers": downstream_response_headers(resp.headers.items()),
                    }
                )
                await _relay_body(resp, send, upstream)
        except ClientDisconnectedError:
            raise
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            log.warning("upstream_timeout", upstream=upstream, method=method)
            raise TimedOut(
                f"the {upstream} service did not answer in time", code="upstream_timeout"
            ) from exc
        except aiohttp.ClientError as exc:
            log.warning("upstream_unavailable", upstream=upstream, error=type(exc).__name__)
            raise Unavailable(
                f"the {upstream} service is unavailable", code="upstream_unavailable"
            ) from exc


async def _request_body(
    headers: dict[str, str], receive: Receive
) -> bytes | AsyncIterator[bytes] | None:
    length = headers.get("content-length")
    if length is None:  # no body, or a chunked one: the first message tells
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnectedError()
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            return body or None
        return _stream_rest(body, receive)
    if length.isdigit() and int(length) <= _SMALL_BODY:
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnectedError()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)
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


async def _relay_body(resp: aiohttp.ClientResponse, send: Send, upstream: str) -> None:
    try:
        async for chunk in resp.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except (TimeoutError, aiohttp.ClientError) as exc:
        # The status is already sent: all we can do is cut the stream so the client sees it.
        log.warning("upstream_stream_broken", upstream=upstream, error=type(exc).__name__)
        raise
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def scope_header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def client_host(scope: Scope) -> str | None:
    client: Any = scope.get("client")
    return None if not client else str(client[0])
