"""Verification of Supabase access tokens and xtyl service tokens.

One ``TokenVerifier`` per process, built in the app's lifespan with the shared aiohttp session.
Every refusal is ``Unauthorized`` with a stable code from ``xtyl_common.auth.codes``; nothing
else escapes, whatever the token holds. Given ``metrics`` (the gateway's), every check, cache
lookup and JWKS fetch is counted (:mod:`xtyl_common.auth.metrics`).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable

import aiohttp
import msgspec
import structlog

from xtyl_common.auth import codes
from xtyl_common.auth.cache import VerifiedTokenCache, token_digest
from xtyl_common.auth.claims import (
    decode_claims,
    refuse_api_keys,
    service_principal,
    user_principal,
)
from xtyl_common.auth.codes import rejected
from xtyl_common.auth.compact import CompactToken, parse_compact
from xtyl_common.auth.config import AuthConfig
from xtyl_common.auth.jwks import JwksCache
from xtyl_common.auth.keys import ASYMMETRIC_ALGORITHMS, HS256, HmacKey, PublicKey
from xtyl_common.auth.metrics import TokenMetrics
from xtyl_common.auth.principals import ServicePrincipal, UserPrincipal
from xtyl_common.errors import Unauthorized

log = structlog.get_logger("xtyl_common.auth")

SERVICE_CACHE_SIZE = 1_000
# Supabase's new-style API keys are not JWTs; name them instead of calling them malformed.
_PUBLISHABLE_KEY_PREFIX = "sb_publishable_"
_SECRET_KEY_PREFIX = "sb_secret_"  # noqa: S105 - a prefix, not a secret


class VerifierStats(msgspec.Struct, frozen=True):
    verified: int
    cache_hits: int
    rejected: int
    jwks_fetches: int


class TokenVerifier:
    """Checks tokens against ``config``; ``metrics``: count what it does (the gateway's
    verifier, see :mod:`xtyl_common.auth.metrics`); ``clock`` (wall time) and ``monotonic`` are
    for tests."""

    def __init__(
        self,
        config: AuthConfig,
        session: aiohttp.ClientSession | None = None,
        *,
        metrics: TokenMetrics | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self._hmac = HmacKey(config.jwt_secret.encode()) if config.jwt_secret else None
        self._internal = HmacKey(config.internal_secret.encode())
        self._jwks: JwksCache | None = None
        if config.jwks_url is not None:
            if session is None:
                raise ValueError("auth: supabase_url is set, so TokenVerifier needs a session")
            self._jwks = JwksCache(
                config.jwks_url,
                session,
                ttl_s=config.jwks_ttl_s,
                cooldown_s=config.jwks_refetch_cooldown_s,
                timeout_s=config.jwks_timeout_s,
                max_stale_s=config.jwks_max_stale_s,
                monotonic=monotonic,
                metrics=metrics,
            )
        self._users = VerifiedTokenCache[UserPrincipal](config.verified_cache_size)
        self._services = VerifiedTokenCache[ServicePrincipal](
            min(config.verified_cache_size, SERVICE_CACHE_SIZE)
        )
        self._verified = 0
        self._cache_hits = 0
        self._rejected = 0

    @property
    def stats(self) -> VerifierStats:
        return VerifierStats(
            verified=self._verified,
            cache_hits=self._cache_hits,
            rejected=self._rejected,
            jwks_fetches=0 if self._jwks is None else self._jwks.fetches,
        )

    async def warm_up(self) -> bool:
        """Fetch the JWKS ahead of the first request; False (logged) if it is unavailable.

        Not fatal: HS256 tokens and later fetches still work.
        """
        return True if self._jwks is None else await self._jwks.refresh()

    async def close(self) -> None:
        if self._jwks is not None:
            await self._jwks.close()

    async def verify_user_token(self, token: str) -> UserPrincipal:
        """The Supabase user behind ``token``, or ``Unauthorized`` with a stable code."""
        if len(token) > self._config.max_token_bytes:  # before hashing or decoding anything
            error = rejected(codes.TOKEN_TOO_LARGE, "token is too large")
            raise self._refuse(error, "user", None)
        digest = token_digest(token)
        cached = self._users.get(digest, now=self._clock())
        self._count_lookup(hit=cached is not None)
        if cached is not None:
            self._cache_hits += 1
            return cached
        parsed: CompactToken | None = None
        try:
            parsed = self._parse_user(token)
            principal = await self._verify_user(token, parsed)
        except Unauthorized as exc:
            raise self._refuse(exc, "user", parsed) from None
        except Exception as exc:  # a token must never turn into a 500
            log.warning("token_verification_error", kind="user", error=type(exc).__name__)
            error = rejected(codes.MALFORMED_TOKEN, "token is malformed")
            raise self._refuse(error, "user", parsed) from None
        self._users.put(digest, principal, deadline=self._deadline(principal.expires_at))
        self._accept(parsed)
        return principal

    async def verify_service_token(self, token: str) -> ServicePrincipal:
        """The internal service behind ``token``, or ``Unauthorized`` with a stable code."""
        if len(token) > self._config.max_token_bytes:
            error = rejected(codes.TOKEN_TOO_LARGE, "token is too large")
            raise self._refuse(error, "service", None)
        digest = token_digest(token)
        cached = self._services.get(digest, now=self._clock())
        self._count_lookup(hit=cached is not None)
        if cached is not None:
            self._cache_hits += 1
            return cached
        parsed: CompactToken | None = None
        try:
            parsed = parse_compact(token, max_bytes=self._config.max_token_bytes)
            principal = self._verify_service(parsed)
        except Unauthorized as exc:
            raise self._refuse(exc, "service", parsed) from None
        except Exception as exc:  # a token must never turn into a 500
            log.warning("token_verification_error", kind="service", error=type(exc).__name__)
            error = rejected(codes.MALFORMED_TOKEN, "token is malformed")
            raise self._refuse(error, "service", parsed) from None
        self._services.put(digest, principal, deadline=self._deadline(principal.expires_at))
        self._accept(parsed)
        return principal

    def _parse_user(self, token: str) -> CompactToken:
        self._refuse_api_key_strings(token)
        return parse_compact(token, max_bytes=self._config.max_token_bytes)

    async def _verify_user(self, token: str, parsed: CompactToken) -> UserPrincipal:
        claims = decode_claims(parsed.payload)
        # Refused whatever their signature: say what they are, even when we hold no key for them.
        refuse_api_keys(claims)
        key = await self._user_key(parsed)
        if not key.verify(parsed.signing_input, parsed.signature):
            raise rejected(codes.INVALID_SIGNATURE, "token signature does not verify")
        return user_principal(
            claims,
            token=token,
            now=self._clock(),
            leeway_s=self._config.leeway_s,
            issuer=self._config.issuer,
        )

    def _verify_service(self, parsed: CompactToken) -> ServicePrincipal:
        if parsed.alg != HS256:
            raise rejected(codes.UNSUPPORTED_ALGORITHM, "service tokens are HS256")
        if not self._internal.verify(parsed.signing_input, parsed.signature):
            raise rejected(codes.INVALID_SIGNATURE, "token signature does not verify")
        return service_principal(
            decode_claims(parsed.payload), now=self._clock(), leeway_s=self._config.leeway_s
        )

    async def _user_key(self, parsed: CompactToken) -> HmacKey | PublicKey:
        if parsed.alg == HS256:
            # Legacy tokens may carry a kid; it never selects anything but the configured secret.
            if self._hmac is None:
                raise rejected(codes.UNSUPPORTED_ALGORITHM, "HS256 tokens are not accepted")
            return self._hmac
        if parsed.alg not in ASYMMETRIC_ALGORITHMS or self._jwks is None:
            raise rejected(codes.UNSUPPORTED_ALGORITHM, "token algorithm is not accepted")
        if parsed.kid is None:
            raise rejected(codes.MISSING_KID, "token has no kid")
        key = await self._jwks.get(parsed.kid)
        if key is None:
            raise rejected(codes.UNKNOWN_KEY, "token is signed with an unknown key")
        if key.alg != parsed.alg:
            raise rejected(codes.ALGORITHM_MISMATCH, "token alg does not match its key")
        return key

    def _refuse_api_key_strings(self, token: str) -> None:
        config = self._config
        if token.startswith(_PUBLISHABLE_KEY_PREFIX) or _same(token, config.anon_key):
            raise rejected(codes.ANON_KEY, "the anon key is not a user access token; sign in first")
        if token.startswith(_SECRET_KEY_PREFIX) or _same(token, config.service_role_key):
            raise rejected(codes.SERVICE_ROLE_KEY, "the service-role key is not accepted here")

    def _deadline(self, expires_at: int) -> float:
        # Served from cache until the token expires (same leeway as a fresh check), and never
        # longer than the JWKS TTL, so a revoked key stops working for cached tokens too.
        return min(expires_at + self._config.leeway_s, self._clock() + self._config.jwks_ttl_s)

    def _accept(self, parsed: CompactToken) -> None:
        self._verified += 1
        if self._metrics is not None:
            self._metrics.verified(parsed.alg)

    def _refuse(self, exc: Unauthorized, kind: str, parsed: CompactToken | None) -> Unauthorized:
        self._rejected += 1
        log.info("token_rejected", kind=kind, code=exc.code)
        if self._metrics is not None:
            self._metrics.refused(exc.code, None if parsed is None else parsed.alg)
        return exc

    def _count_lookup(self, *, hit: bool) -> None:
        if self._metrics is not None:
            self._metrics.cache_lookup(hit=hit)


def _same(token: str, key: str | None) -> bool:
    return key is not None and hmac.compare_digest(token.encode(), key.encode())
