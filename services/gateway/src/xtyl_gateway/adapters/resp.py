"""A minimal pipelining Redis client for the gateway's hot path (one EVALSHA per request).

redis-py's asyncio client spends ~100 µs of CPU per command on pooling, health checks and
retry wrappers; at thousands of requests per second that was the largest single cost of the
gateway. This client keeps ONE connection, writes each command as soon as it is asked
(concurrent requests pipeline naturally) and matches replies to callers in order, parsed by
hiredis. Anything unexpected (a timeout, a lost connection) closes the connection and fails
every waiting caller, so a late reply can never be handed to the wrong one; the next command
reconnects.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis

from xtyl_common.errors import TimedOut, Unavailable


class RedisReplyError(Exception):
    """Redis answered with an error (``-ERR …``, ``-NOSCRIPT …``)."""


def encode_command(*args: bytes | str | int) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave like one
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self.fail(exc)
                return
            if reply is False:
                return
            if not self.waiting:  # a reply nobody asked for: the stream cannot be trusted
                self.fail(ConnectionError("unexpected reply from Redis"))
                return
            future = self.waiting.popleft()
            if future.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(RedisReplyError(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(exc or ConnectionError("Redis closed the connection"))

    def fail(self, exc: BaseException) -> None:
        self.closed = True
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(ConnectionError(str(exc)))
        if self.transport is not None:
            self.transport.close()


class PipelinedRedis:
    def __init__(self, url: str, *, timeout_s: float = 1.0, connect_timeout_s: float = 2.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r}")
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 6379
        self._ssl = ssl.create_default_context() if parts.scheme == "rediss" else None
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        path = parts.path.lstrip("/")
        self._db = int(path) if path else 0
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def execute(self, *args: bytes | str | int) -> Any:
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        protocol.waiting.append(future)
        assert protocol.transport is not None
        protocol.transport.write(encode_command(*args))
        try:
            async with asyncio.timeout(self._timeout_s):
                return await future
        except TimeoutError:
            protocol.fail(TimeoutError("Redis did not answer in time"))
            raise TimedOut("Redis did not answer in time", code="redis_timeout") from None
        except ConnectionError as exc:
            raise Unavailable(f"Redis connection failed: {exc}", code="redis_unavailable") from None

    async def _connect(self) -> _Protocol:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._protocol is not None and not self._protocol.closed:
                return self._protocol
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(self._connect_timeout_s):
                    _, protocol = await loop.create_connection(
                        _Protocol, self._host, self._port, ssl=self._ssl
                    )
            except (OSError, TimeoutError) as exc:
                raise Unavailable(
                    f"cannot connect to Redis: {exc}", code="redis_unavailable"
                ) from None
            self._protocol = protocol
            if self._password is not None:
                auth = (self._username, self._password) if self._username else (self._password,)
                await self.execute("AUTH", *auth)
            if self._db:
                await self.execute("SELECT", self._db)
            return protocol

    async def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None
