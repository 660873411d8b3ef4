"""A lean HTTP/1.1 client for the gateway → service hop, parsed by httptools (llhttp).

Why not aiohttp here: measured on this machine, ``aiohttp.ClientSession.request`` was a third
of the gateway's CPU per proxied request (header multidicts, tracing hooks, cookie handling,
timeouts objects: ~150 µs). The proxy needs much less: keep-alive connections to a handful of
internal services, bodies streamed both ways with flow control, a connect timeout and a read
timeout. aiohttp stays the client for everything else (xtyl_common.http).

Semantics:
* one pool per upstream origin, LIFO idle connections, a cap on open connections;
* request bodies: ``bytes`` (sent with Content-Length) or an async iterator (sent chunked
  unless the caller gives a Content-Length), written with the transport's flow control;
* responses: status and headers, then the body as an async iterator with read backpressure;
  the connection goes back to the pool only after a complete, keep-alive response;
* a request that fails on a reused idle connection before any response byte (the server
  closed it meanwhile) is retried once on a fresh one when its body can be replayed;
* connect failures raise :class:`UpstreamUnavailableError`, silences longer than the read
  timeout :class:`UpstreamTimeoutError`; both leave the connection closed.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from typing import cast

import httptools

_MAX_BUFFERED = 1 << 20  # pause reading the socket past this much unconsumed body


class UpstreamUnavailableError(ConnectionError):
    """The service refused, reset or closed the connection."""


class UpstreamTimeoutError(TimeoutError):
    """The service was silent for longer than the read timeout."""


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reused = False
        self.early_answer = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._paused_reading = False
        self.received_any = False
        self.head_complete = False
        self.message_complete = False
        self.status = 0
        self.keep_alive = False
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: collections.deque[bytes] = collections.deque()
        self.buffered = 0

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave like one
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamUnavailableError(f"malformed response: {exc}"))
            return
        if self.buffered > _MAX_BUFFERED and not self._paused_reading and self.transport:
            self.transport.pause_reading()
            self._paused_reading = True
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.message_complete:
            self._fail(UpstreamUnavailableError(str(exc) if exc else "connection closed"))
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(UpstreamUnavailableError("connection closed"))

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- httptools callbacks ----------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        # llhttp forgets the message's keep-alive once it completes: read it now
        self.keep_alive = self.parser.should_keep_alive()
        self.head_complete = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)

    def on_message_complete(self) -> None:
        self.message_complete = True

    # -- used by the pool -------------------------------------------------------------------
    def reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.received_any = self.head_complete = self.message_complete = False
        self.early_answer = False
        self.status = 0
        self.keep_alive = False
        self.headers = []
        self.body.clear()
        self.buffered = 0
        self._error = None

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self, timeout_s: float) -> None:
        """Wait for more data (or an error)."""
        if self._error is not None:
            raise self._error
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout_s):
                await self._waiter
        except TimeoutError:
            self._fail(UpstreamTimeoutError("no data from the service in time"))
            raise UpstreamTimeoutError("no data from the service in time") from None
        finally:
            self._waiter = None
        if self._error is not None and not self.body and not self.message_complete:
            raise self._error

    def take_body(self) -> bytes:
        chunk = b"".join(self.body) if len(self.body) > 1 else self.body.popleft()
        self.body.clear()
        self.buffered = 0
        if self._paused_reading and self.transport is not None and not self.closed:
            self.transport.resume_reading()
            self._paused_reading = False
        return chunk

    async def write(self, data: bytes) -> None:
        assert self.transport is not None
        if self.closed:
            raise self._error or UpstreamUnavailableError("connection closed")
        self.transport.write(data)
        if self._drain is not None and not self._drain.done():
            await self._drain


class UpstreamResponse:
    def __init__(self, pool: UpstreamPool, conn: _Connection, *, head_only: bool) -> None:
        self._pool = pool
        self._conn = conn
        self._head_only = head_only
        self._released = False
        self.status = conn.status
        self.headers = conn.headers

    async def iter_body(self) -> AsyncIterator[bytes]:
        conn = self._conn
        try:
            if self._head_only:
                return
            while True:
                if conn.body:
                    yield conn.take_body()
                    continue
                if conn.message_complete:
                    return
                await conn.wait(self._pool.read_timeout_s)
        finally:
            self.release()

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        conn = self._conn
        reusable = (
            conn.message_complete
            and not self._head_only
            and not conn.early_answer
            and not conn.closed
            and conn.keep_alive
        )
        self._pool.put_back(conn, reusable=reusable)


class UpstreamPool:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        max_connections: int = 512,
        max_idle: int = 128,
    ) -> None:
        self.host = host
        self.port = port
        self.host_header = f"{host}:{port}".encode()
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._max_idle = max_idle

    async def request(
        self,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes | AsyncIterator[bytes] | None,
    ) -> UpstreamResponse:
        await self._slots.acquire()
        try:
            conn = self._idle.pop() if self._idle else None
            if conn is not None and conn.closed:
                conn = None
            if conn is None:
                conn = await self._connect()
            try:
                return await self._exchange(conn, method, target, headers, body)
            except UpstreamUnavailableError:
                replayable = not isinstance(body, AsyncIterator)
                if not (conn.reused and not conn.received_any and replayable):
                    raise
                conn = await self._connect()  # the idle connection had gone stale
                return await self._exchange(conn, method, target, headers, body)
        except BaseException:
            self._slots.release()
            raise

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, conn = await loop.create_connection(_Connection, self.host, self.port)
        except TimeoutError:
            raise UpstreamTimeoutError("connecting to the service timed out") from None
        except OSError as exc:
            raise UpstreamUnavailableError(str(exc)) from None
        return conn

    async def _exchange(
        self,
        conn: _Connection,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes | AsyncIterator[bytes] | None,
    ) -> UpstreamResponse:
        conn.reset()
        head = [b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (method.encode(), target, self.host_header)]
        has_length = False
        for name, value in headers:
            head.append(b"%s: %s\r\n" % (name, value))
            has_length = has_length or name == b"content-length"
        chunked = False
        if isinstance(body, bytes):
            if not has_length:
                head.append(b"content-length: %d\r\n" % len(body))
        elif body is not None and not has_length:
            head.append(b"transfer-encoding: chunked\r\n")
            chunked = True
        head.append(b"\r\n")
        if isinstance(body, bytes):
            await conn.write(b"".join(head) + body)
        else:
            await conn.write(b"".join(head))
            if body is not None:
                await self._send_stream(conn, body, chunked=chunked)
        while not conn.head_complete:
            await conn.wait(self.read_timeout_s)
        return UpstreamResponse(self, conn, head_only=method == "HEAD")

    async def _send_stream(
        self, conn: _Connection, body: AsyncIterator[bytes], *, chunked: bool
    ) -> None:
        """Stream the body; stop early when the service has already answered (e.g. 413)."""
        try:
            async for chunk in body:
                if conn.head_complete:  # an early answer: the rest of the body is not wanted
                    conn.early_answer = True
                    return
                if chunked:
                    if chunk:
                        await conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                else:
                    await conn.write(chunk)
            if chunked:
                await conn.write(b"0\r\n\r\n")
        except UpstreamUnavailableError:
            if not conn.head_complete:
                raise
            conn.early_answer = True  # it answered, then closed: relay the answer

    def put_back(self, conn: _Connection, *, reusable: bool) -> None:
        self._slots.release()
        if reusable and len(self._idle) < self._max_idle:
            conn.reused = True
            self._idle.append(conn)
        elif conn.transport is not None:
            conn.transport.close()

    async def close(self) -> None:
        for conn in self._idle:
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()
