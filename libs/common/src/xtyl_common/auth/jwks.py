"""The project's public signing keys, fetched from the one JWKS URL in configuration.

- Keys are fresh for ``ttl_s``; after that the next lookup refetches.
- An unknown ``kid`` refetches at most once per ``cooldown_s``; every caller that misses while a
  fetch is running waits for that same fetch (one in flight, shared, shielded from the
  cancellation of any single request).
- While no key is usable at all (the endpoint was down at start-up, or for longer than
  ``max_stale_s``), a failed fetch is retried sooner: ``retry_initial_s`` after it failed,
  doubling up to ``retry_max_s``, so asymmetric tokens work again within seconds of the
  endpoint coming back, not a whole cooldown later. Once keys are known, the cooldown applies.
- When the endpoint fails, the last good keys keep working for up to ``max_stale_s``, and a
  kid that is not among them is simply unknown: a 401, never a 500.
- Given ``metrics`` (the gateway's), each fetch is counted, ``ok`` or ``failed``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
import msgspec
import structlog

from xtyl_common.auth.keys import Jwk, PublicKey, public_key_from_jwk
from xtyl_common.auth.metrics import TokenMetrics

MAX_JWKS_BYTES = 64 * 1024

log = structlog.get_logger("xtyl_common.auth")


class _JwkSet(msgspec.Struct, frozen=True):
    keys: list[msgspec.Raw]


_set_decoder = msgspec.json.Decoder(_JwkSet)
_jwk_decoder = msgspec.json.Decoder(Jwk)


class JwksUnavailableError(Exception):
    """The JWKS endpoint did not answer with a usable key set."""


def parse_jwks(body: bytes) -> dict[str, PublicKey]:
    """Every usable key by kid; unusable entries are skipped (and logged), not fatal."""
    try:
        document = _set_decoder.decode(body)
    except ValueError as exc:  # msgspec.MsgspecError, or UnicodeDecodeError
        raise JwksUnavailableError(f"not a JWK set: {exc}") from None
    keys: dict[str, PublicKey] = {}
    for raw in document.keys:
        try:
            key = public_key_from_jwk(_jwk_decoder.decode(raw))
        except ValueError as exc:  # msgspec errors, UnicodeDecodeError, UnusableKey
            log.warning("jwk_skipped", reason=str(exc))
            continue
        keys[key.kid] = key
    return keys


class JwksCache:
    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        *,
        ttl_s: float,
        cooldown_s: float,
        timeout_s: float,
        max_stale_s: float,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
        metrics: TokenMetrics | None = None,
    ) -> None:
        self._url = url
        self._metrics = metrics
        self._session = session
        self._ttl_s = ttl_s
        self._cooldown_s = cooldown_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_stale_s = max_stale_s
        self._monotonic = monotonic
        self._keys: dict[str, PublicKey] = {}
        self._fetched_at: float | None = None  # last success
        self._attempted_at: float | None = None  # last attempt, success or not
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._retry_s = 0.0  # backoff after the last failure while no key is usable; 0: none
        self._retry_at = 0.0
        self._inflight: asyncio.Task[None] | None = None
        self.fetches = 0

    async def get(self, kid: str) -> PublicKey | None:
        """The key for ``kid``, fetching the set when it is stale or the kid is new."""
        now = self._monotonic()
        fresh = self._fetched_at is not None and now - self._fetched_at < self._ttl_s
        if fresh and kid in self._keys:
            return self._keys[kid]
        if self._may_fetch(now):
            await self._refresh()
        return self._usable().get(kid)

    async def refresh(self) -> bool:
        """Fetch now (start-up warm-up); True when a key set is usable afterwards."""
        await self._refresh()
        return bool(self._usable())

    async def close(self) -> None:
        task, self._inflight = self._inflight, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _usable(self) -> dict[str, PublicKey]:
        if self._fetched_at is None or self._monotonic() - self._fetched_at > self._max_stale_s:
            return {}
        return self._keys

    def _may_fetch(self, now: float) -> bool:
        if self._inflight is not None or self._attempted_at is None:
            return True
        if self._retry_s and not self._usable():  # no key at all: short backoff, not cooldown
            return now >= self._retry_at
        return now - self._attempted_at >= self._cooldown_s

    async def _refresh(self) -> None:
        task = self._inflight
        if task is None:
            self._attempted_at = self._monotonic()
            task = self._inflight = asyncio.create_task(self._fetch(), name="jwks_fetch")
        await asyncio.shield(task)

    async def _fetch(self) -> None:
        try:
            self.fetches += 1
            keys = await self._download()
        except Exception as exc:  # a failed fetch must never fail a request
            self._retry_s = min(
                self._retry_max_s, self._retry_s * 2 if self._retry_s else self._retry_initial_s
            )
            self._retry_at = self._monotonic() + self._retry_s
            log.warning("jwks_fetch_failed", url=self._url, error=type(exc).__name__)
            if self._metrics is not None:
                self._metrics.jwks_fetch(ok=False)
        else:
            self._keys = keys
            self._fetched_at = self._monotonic()
            self._retry_s = 0.0
            log.info("jwks_fetched", url=self._url, kids=sorted(keys))
            if self._metrics is not None:
                self._metrics.jwks_fetch(ok=True)
        finally:
            self._inflight = None

    async def _download(self) -> dict[str, PublicKey]:
        async with self._session.get(
            self._url,
            timeout=self._timeout,
            allow_redirects=False,
            headers={"Accept": "application/json"},
        ) as response:
            if response.status != 200:
                raise JwksUnavailableError(f"status {response.status}")
            if (response.content_length or 0) > MAX_JWKS_BYTES:
                raise JwksUnavailableError("JWKS too large")
            body = bytearray()
            async for chunk in response.content.iter_chunked(16 * 1024):
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise JwksUnavailableError("JWKS too large")
        return parse_jwks(bytes(body))
