"""The ASGI side of a proxied exchange: the request read off the scope, the body read from
``receive`` as it arrives, the answer written to ``send``.

granian answers a client's ``Expect: 100-continue`` itself when the body is first read, so
nothing here (and nothing upstream) ever sends an interim response: a client gets exactly one
final response.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from litestar.types import Receive, Scope, Send

from xtyl_common.errors import ClientDisconnected, ClientError, RequestTimeout, XtylError
from xtyl_gateway.domain.exchange import IncomingRequest


def scope_header(scope: Scope, name: bytes) -> str | None:
    """The first header ``name`` (lower-case) of the request, if any."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def client_host(scope: Scope) -> str | None:
    client: Any = scope.get("client")
    return None if not client else str(client[0])


def incoming_request(scope: Scope) -> IncomingRequest:
    # raw_path: as sent (Litestar's scope["path"] is decoded and, in a mount, cut short)
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    return IncomingRequest(
        method=scope.get("method", "GET"),
        path=raw_path.decode("latin-1"),
        query=query.decode("latin-1"),
        headers=scope["headers"],
        authorization=scope_header(scope, b"authorization"),
        client_host=client_host(scope),
        scheme=str(scope.get("scheme", "http")),
    )


class AsgiRequestBody:
    """The client's request body, read from ASGI ``receive`` as it arrives.

    Any failure is kept in :attr:`error`: aiohttp reads the body in a task of its own and
    wraps what that task raises, so the upstream client asks the body what went wrong first.
    """

    def __init__(self, receive: Receive, *, idle_timeout_s: float, chunked: bool) -> None:
        self._receive = receive
        self._idle_timeout_s = idle_timeout_s
        self._chunked = chunked
        self.complete = False
        self.error: XtylError | None = None
        self._head = b""  # what read_small() took before finding the body too large
        # aiohttp reads the body in its writer task; after an early answer that task is
        # cancelled and drain() takes over: never two receive() calls at once
        self._reading = asyncio.Lock()

    async def _next(self) -> bytes:
        try:
            async with asyncio.timeout(self._idle_timeout_s), self._reading:
                message = await self._receive()
        except TimeoutError:
            raise self._fail(
                RequestTimeout(
                    f"no request body bytes arrived for {self._idle_timeout_s:g} s",
                    code="request_timeout",
                )
            ) from None
        if message["type"] == "http.disconnect":
            # granian reports a broken chunked framing and a closed connection alike; a
            # client that is still there reads the 400, one that left never will.
            if self._chunked:
                raise self._fail(
                    ClientError(
                        "the chunked request body is malformed or ended early",
                        code="malformed_body",
                    )
                )
            raise self._fail(ClientDisconnected("the client closed the connection mid-body"))
        if not message.get("more_body", False):
            self.complete = True
        chunk: bytes = message.get("body", b"")
        return chunk

    def _fail(self, error: XtylError) -> XtylError:
        self.error = error
        return error

    async def read_small(self, limit: int) -> bytes | None:
        """The whole body when it ends within ``limit`` bytes, else ``None`` (stream it)."""
        chunks: list[bytes] = []
        size = 0
        while not self.complete:
            chunk = await self._next()
            chunks.append(chunk)
            size += len(chunk)
            if size > limit and not self.complete:
                self._head = b"".join(chunks)
                return None
        return b"".join(chunks)

    async def drain(self, *, max_bytes: int, timeout_s: float) -> None:
        """Read and drop what is left of the body, within bounds; never raises."""
        dropped = 0
        try:
            async with asyncio.timeout(timeout_s):
                while not self.complete and dropped <= max_bytes:
                    dropped += len(await self._next())
        except (TimeoutError, XtylError):
            pass

    async def stream(self) -> AsyncIterator[bytes]:
        if self._head:
            yield self._head
            self._head = b""
        while not self.complete:
            chunk = await self._next()
            if chunk:
                yield chunk


class AsgiConnection:
    """The client's side of one proxied exchange over ASGI (a :class:`ClientConnection`)."""

    __slots__ = ("_receive", "_send")

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send

    def body(self, *, chunked: bool, idle_timeout_s: float) -> AsgiRequestBody:
        return AsgiRequestBody(self._receive, idle_timeout_s=idle_timeout_s, chunked=chunked)

    async def start_response(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def send_body(self, chunk: bytes) -> None:
        await self._send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def end_response(self) -> None:
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})
