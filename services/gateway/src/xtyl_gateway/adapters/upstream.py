"""The client of the services behind the gateway: one proxied exchange each, on aiohttp.

HTTP/1.1 is aiohttp's; what stays ours is the streaming glue. One session per process, no
cookie jar, no decompression, no automatic headers, and bodies streamed both ways as they
arrive (a 1 GB upload never sits in memory). What goes is decided before (the route, the
headers that cross: :mod:`xtyl_gateway.domain.routing`); the client's side of the exchange
(its body, where the answer goes) is a :class:`~xtyl_gateway.domain.exchange.ClientConnection`
that ``routes/`` made.

The rules that keep one user's request from touching another's:

* ``Expect`` never goes upstream (the header policy drops it). The server answers the client's
  ``100 Continue`` itself when the body is first read, and aiohttp skips any interim ``1xx`` a
  service sends, so a client gets exactly one final response.
* A connection whose exchange did not finish cleanly (the request body not wholly sent, or the
  response not wholly read) is closed, never returned to the pool.
* The request body streams with an idle timeout: a client silent for longer is answered 408
  ``request_timeout`` and both connections are released. A client that goes away mid-body ends
  the exchange (499, for the log). A chunked body that breaks off is 400 ``malformed_body``.
* A service's early final answer (413 a few bytes into an oversized upload) reaches the client
  at once, even while the client is idle, and nothing more of the body is sent.
* Each service gets at most ``pool_size`` exchanges at once; waiting longer than ``pool_wait_s``
  for one is 503 ``upstream_busy``. (Each user's share is capped before this, by the service.)
* A refused or reset service is 503 ``upstream_unavailable``, a silent one 504
  ``upstream_timeout``; once the response has started, a failure can only cut the stream.

Each exchange is timed by upstream and status, and each failure that is the service's (not the
client's) counted by reason (:mod:`xtyl_gateway.adapters.metrics`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

import aiohttp
import msgspec
import structlog
from prometheus_client import Histogram
from yarl import URL

from xtyl_common.errors import TimedOut, Unavailable, XtylError
from xtyl_gateway.adapters.metrics import (
    NO_ANSWER,
    UPSTREAM_DURATION,
    UPSTREAM_ERRORS,
    UPSTREAM_FAILURES,
    UpstreamFailure,
)
from xtyl_gateway.domain.exchange import ClientConnection, IncomingRequest, RequestBody
from xtyl_gateway.domain.routing import ForwardedRequest, downstream_response_headers

log = structlog.stdlib.get_logger("xtyl.gateway.proxy")

#: After relaying an early answer, the rest of the client's body is read and dropped, up to
#: this much and this long, so the client reads the answer instead of a reset connection.
EARLY_ANSWER_DRAIN_BYTES = 8 * 1024 * 1024
EARLY_ANSWER_DRAIN_S = 5.0

#: Bodies up to this size are read whole first and sent with a Content-Length, so a slow
#: client never holds an upstream connection for them; larger ones stream.
SMALL_BODY_BYTES = 64 * 1024


def failure_reason(exc: BaseException) -> UpstreamFailure:
    """What broke an exchange with a service (aiohttp's error): its ``reason`` label."""
    if isinstance(exc, aiohttp.ClientConnectorError) and not isinstance(
        exc, aiohttp.ConnectionTimeoutError
    ):
        return "connect"  # refused, unreachable, no such host
    if isinstance(exc, TimeoutError):  # aiohttp's timeouts are TimeoutErrors too
        return "timeout"
    return "reset"  # disconnected, reset, a broken answer


class ProxyConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Limits of the gateway → service hop (from the gateway's settings)."""

    connect_timeout_s: float
    read_timeout_s: float
    pool_size: int
    pool_wait_s: float
    body_idle_timeout_s: float


class UpstreamClient:
    """Exchanges with the services behind the gateway, each at most ``pool_size`` at once.

    Build one per process and :meth:`close` it on shutdown.
    """

    def __init__(self, upstreams: Mapping[str, str], config: ProxyConfig) -> None:
        self._config = config
        self._bases: dict[str, str] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        for name, url in upstreams.items():
            parts = urlsplit(url)
            if parts.scheme != "http" or not parts.hostname:
                raise ValueError(f"{name} upstream must be an http:// URL inside the cluster")
            self._bases[name] = f"http://{parts.netloc}{parts.path.rstrip('/')}"
            self._slots[name] = asyncio.Semaphore(config.pool_size)
        # every (upstream, reason) series exists from the start, so increase() sees the first
        self._errors = {
            (name, reason): UPSTREAM_ERRORS.labels(name, reason)
            for name in upstreams
            for reason in UPSTREAM_FAILURES
        }
        # each (upstream, status) histogram once looked up: labels() costs 2 µs a request
        self._durations: dict[tuple[str, str], Histogram] = {}
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None,  # the wait for a pool slot is ours (pool_wait_s), see forward()
            sock_connect=config.connect_timeout_s,
            sock_read=config.read_timeout_s,
        )
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # created on first use, inside the running loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=0,  # bounded per service by our slots
                    limit_per_host=self._config.pool_size,
                    keepalive_timeout=30,
                    enable_cleanup_closed=True,
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
                timeout=self._timeout,
                raise_for_status=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def forward(
        self,
        upstream: str,
        request: IncomingRequest,
        forwarded: ForwardedRequest,
        client: ClientConnection,
    ) -> None:
        """``request`` to the service ``upstream`` with the ``forwarded`` headers; its answer,
        streamed, to ``client``. A failure is raised as an
        :class:`~xtyl_common.errors.XtylError`; once the answer has started, that can only cut
        it short."""
        target = self._bases[upstream] + request.path
        if request.query:
            target += "?" + request.query
        method = request.method
        length = forwarded.length
        body = client.body(
            chunked=forwarded.chunked, idle_timeout_s=self._config.body_idle_timeout_s
        )
        headers = forwarded.headers
        data: bytes | AsyncIterator[bytes] | None = None
        if length or forwarded.chunked:
            small = None
            if length is None or length <= SMALL_BODY_BYTES:
                small = await body.read_small(SMALL_BODY_BYTES)
            if small is not None:
                data = small  # aiohttp sends its Content-Length
            else:
                data = body.stream()  # chunked, or the client's length (aiohttp stops there)
                if length is not None:
                    headers = [*headers, ("Content-Length", str(length))]
        elif length == 0:
            data = b""
        await self._exchange(upstream, method, target, headers, data, body, client)

    async def _exchange(  # noqa: PLR0917 - one private call site, every argument distinct
        self,
        upstream: str,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        data: bytes | AsyncIterator[bytes] | None,
        body: RequestBody,
        client: ClientConnection,
    ) -> None:
        slots = self._slots[upstream]
        try:
            if slots.locked():  # every slot taken: wait, but not for ever
                async with asyncio.timeout(self._config.pool_wait_s):
                    await slots.acquire()
            else:
                await slots.acquire()
        except TimeoutError:
            self._errors[upstream, "busy"].inc()
            log.warning("upstream_busy", upstream=upstream)
            raise Unavailable(
                f"the {upstream} service is busy, retry shortly",
                code="upstream_busy",
                headers={"Retry-After": "1"},
            ) from None
        response: aiohttp.ClientResponse | None = None
        clean = False
        answered = False
        status = NO_ANSWER
        started = time.perf_counter()
        try:
            try:
                response = await self._client().request(
                    method,
                    URL(target, encoded=True),
                    headers=headers,
                    data=data,
                    allow_redirects=False,
                )
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise self._failure(upstream, method, exc, body) from exc
            answered = True
            status = str(response.status)
            await client.start_response(
                response.status, downstream_response_headers(response.raw_headers)
            )
            try:
                async for chunk in response.content.iter_any():
                    await client.send_body(chunk)
            except (aiohttp.ClientError, TimeoutError) as exc:
                # The status is on the wire already: all we can do is cut the stream.
                log.warning("upstream_stream_broken", upstream=upstream, error=repr(exc))
                raise self._failure(upstream, method, exc, None) from exc
            await client.end_response()
            clean = data is None or isinstance(data, bytes) or body.complete
        finally:
            if response is not None:
                if clean:
                    response.release()
                else:  # an early answer, an aborted client or a broken stream: never pooled
                    response.close()
            slots.release()
            self._duration(upstream, status).observe(time.perf_counter() - started)
        if answered and not body.complete and body.error is None and data is not None:
            # the service answered before the body ended (413, 401 …): the client has that
            # answer; drop what it still sends for a moment, so closing does not reset it
            await body.drain(max_bytes=EARLY_ANSWER_DRAIN_BYTES, timeout_s=EARLY_ANSWER_DRAIN_S)

    def _duration(self, upstream: str, status: str) -> Histogram:
        histogram = self._durations.get((upstream, status))
        if histogram is None:  # at most every status code of every upstream
            histogram = self._durations[upstream, status] = UPSTREAM_DURATION.labels(
                upstream, status
            )
        return histogram

    def _failure(
        self, upstream: str, method: str, exc: BaseException, body: RequestBody | None
    ) -> XtylError:
        if body is not None and body.error is not None:
            return body.error  # the client's doing (gone, silent, a broken body): not counted
        reason = failure_reason(exc)
        self._errors[upstream, reason].inc()
        if reason == "timeout":
            log.warning("upstream_timeout", upstream=upstream, method=method)
            return TimedOut(
                f"the {upstream} service did not answer in time", code="upstream_timeout"
            )
        log.warning("upstream_unavailable", upstream=upstream, error=repr(exc))
        return Unavailable(f"the {upstream} service is unavailable", code="upstream_unavailable")
