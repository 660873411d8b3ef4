"""Internal HTTP on aiohttp: one shared session per process, explicit timeouts, request ids,
bounded retries with jitter for idempotent methods only.

Why aiohttp and not httpx: httpx's connection pool collapses under concurrency
(encode/httpx#3215); measured here, a proxy on ``httpx.AsyncClient`` reached 0.03x the direct
request rate, the same proxy on aiohttp 0.26x.

Errors map onto the error tree: a refused or reset connection is :class:`Unavailable` (503), a
timeout is :class:`TimedOut` (504). Retries live here and nowhere else (one layer).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from typing import Any

import aiohttp
import msgspec
import structlog

from xtyl_common.context import REQUEST_ID_HEADER, current_request_id
from xtyl_common.errors import TimedOut, Unavailable

log = structlog.stdlib.get_logger("xtyl.http.client")

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({502, 503, 504})


class HttpConfig(msgspec.Struct, frozen=True, kw_only=True):
    connect_timeout_s: float = 3.0
    #: whole request, headers and body; streaming callers pass their own.
    total_timeout_s: float = 30.0
    #: longest wait between two reads of a body.
    read_timeout_s: float = 30.0
    max_connections: int = 200
    max_connections_per_host: int = 100
    retries: int = 2
    backoff_base_s: float = 0.05
    backoff_max_s: float = 1.0


def create_session(config: HttpConfig | None = None) -> aiohttp.ClientSession:
    """The process's one shared session; open it in the lifespan, close it on the way out."""
    config = config or HttpConfig()
    connector = aiohttp.TCPConnector(
        limit=config.max_connections,
        limit_per_host=config.max_connections_per_host,
        ttl_dns_cache=300,
        enable_cleanup_closed=True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(
            total=config.total_timeout_s,
            connect=config.connect_timeout_s,
            sock_read=config.read_timeout_s,
        ),
        auto_decompress=False,
        raise_for_status=False,
        skip_auto_headers=("User-Agent",),
    )


def request_headers(headers: Mapping[str, str] | None = None) -> dict[str, str]:
    """``headers`` plus the current request id, for any internal call."""
    merged = dict(headers or {})
    request_id = current_request_id()
    if request_id is not None and REQUEST_ID_HEADER not in merged:
        merged[REQUEST_ID_HEADER] = request_id
    return merged


def backoff_delay(attempt: int, config: HttpConfig) -> float:
    """Full jitter: uniform in [0, min(max, base * 2**attempt)]."""
    return random.uniform(0, min(config.backoff_max_s, config.backoff_base_s * 2**attempt))  # noqa: S311


class Response(msgspec.Struct, frozen=True):
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


class InternalClient:
    """Buffered request/response calls between our services (small JSON bodies)."""

    def __init__(self, session: aiohttp.ClientSession, config: HttpConfig | None = None) -> None:
        self.session = session
        self.config = config or HttpConfig()

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        data: bytes | None = None,
        timeout_s: float | None = None,
        retry: bool | None = None,
    ) -> Response:
        method = method.upper()
        may_retry = (method in IDEMPOTENT_METHODS) if retry is None else retry
        attempts = 1 + (self.config.retries if may_retry else 0)
        body = msgspec.json.encode(json) if json is not None else data
        sent_headers = request_headers(headers)
        if json is not None:
            sent_headers.setdefault("Content-Type", "application/json")
        timeout = aiohttp.ClientTimeout(total=timeout_s) if timeout_s is not None else None
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                async with self.session.request(
                    method, url, headers=sent_headers, data=body, timeout=timeout
                ) as resp:
                    payload = await resp.read()
                    if resp.status in RETRY_STATUSES and not last:
                        log.info("http_retry", method=method, url=url, status=resp.status)
                    else:
                        return Response(resp.status, dict(resp.headers), payload)
            except TimeoutError as exc:
                if last:
                    raise TimedOut(f"{method} {url} timed out") from exc
                log.info("http_retry", method=method, url=url, error="timeout")
            except aiohttp.ClientError as exc:
                if last:
                    raise Unavailable(f"{method} {url} failed: {type(exc).__name__}") from exc
                log.info("http_retry", method=method, url=url, error=type(exc).__name__)
            await asyncio.sleep(backoff_delay(attempt, self.config))
        raise AssertionError("unreachable")  # pragma: no cover
