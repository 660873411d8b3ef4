"""What token verification counts (docs/metrics.md, "Gateway"): checks by outcome and
algorithm, lookups in the verified-token cache, fetches of the JWKS.

The verifier and the JWKS client are shared by every service, but only the gateway counts
(it passes ``metrics=TokenMetrics()`` to its :class:`~xtyl_common.auth.TokenVerifier`): the
services behind it check the same tokens again, and counting there too would count each
request twice under the gateway's names.

Labels are small fixed sets: every refusal code (:mod:`xtyl_common.auth.codes`) maps to one of
:data:`OUTCOMES`, and ``alg`` is one of :data:`ALGS` whatever a token's header says.
"""

from __future__ import annotations

from typing import Final, Literal

from prometheus_client import Counter

from xtyl_common.auth import codes
from xtyl_common.auth.keys import ES256, HS256, RS256

Outcome = Literal["valid", "expired", "malformed", "unknown_key", "invalid"]
#: ``valid``; ``expired`` (past exp); ``malformed`` (not a well-formed token: too large, not
#: three base64url segments, claims of the wrong type or missing); ``unknown_key`` (a kid the
#: JWKS does not have: a key rotation, or the JWKS endpoint down); ``invalid`` (every other
#: refusal: bad signature, alg none or not accepted, an API key, audience, issuer, role,
#: subject, not yet valid...).
OUTCOMES: Final[tuple[Outcome, ...]] = ("valid", "expired", "malformed", "unknown_key", "invalid")
#: The algorithms tokens are accepted with, ``none`` (alg "none", any case) and ``other`` (any
#: other alg, or none read: the token was refused before its header was).
ALGS: Final = (HS256, ES256, RS256, "none", "other")

_OUTCOME_OF_CODE: Final[dict[str, Outcome]] = {
    codes.TOKEN_EXPIRED: "expired",
    codes.TOKEN_TOO_LARGE: "malformed",
    codes.MALFORMED_TOKEN: "malformed",
    codes.MISSING_SIGNATURE: "malformed",
    codes.INVALID_CLAIMS: "malformed",
    codes.MISSING_CLAIM: "malformed",
    codes.UNKNOWN_KEY: "unknown_key",
}
_ACCEPTED_ALGS: Final = frozenset({HS256, ES256, RS256})

TOKEN_VERIFICATIONS = Counter(
    "xtyl_gateway_token_verifications",
    "Access-token checks (not served from the verified-token cache), by outcome and algorithm.",
    ["outcome", "alg"],
)
TOKEN_CACHE_REQUESTS = Counter(
    "xtyl_gateway_token_cache_requests",
    "Lookups in the verified-token cache: hit or miss.",
    ["result"],
)
JWKS_FETCHES = Counter(
    "xtyl_gateway_jwks_fetches",
    "Fetches of the project's JWKS: ok, or failed (the cached keys stay in use).",
    ["outcome"],
)


def outcome_of(code: str) -> Outcome:
    """The ``outcome`` label of a refusal with ``code``."""
    return _OUTCOME_OF_CODE.get(code, "invalid")


def alg_label(alg: str | None) -> str:
    """The ``alg`` label of a token whose header says ``alg`` (None: not read)."""
    if alg in _ACCEPTED_ALGS:
        return alg
    if alg is not None and alg.lower() == "none":
        return "none"
    return "other"


class TokenMetrics:
    """The counters one verifier moves; every label set exists (at 0) once this is built."""

    def __init__(self) -> None:
        self._verifications = {
            (outcome, alg): TOKEN_VERIFICATIONS.labels(outcome, alg)
            for outcome in OUTCOMES
            for alg in ALGS
        }
        self._hit = TOKEN_CACHE_REQUESTS.labels("hit")
        self._miss = TOKEN_CACHE_REQUESTS.labels("miss")
        self._fetched = JWKS_FETCHES.labels("ok")
        self._fetch_failed = JWKS_FETCHES.labels("failed")

    def verified(self, alg: str | None) -> None:
        self._verifications["valid", alg_label(alg)].inc()

    def refused(self, code: str, alg: str | None) -> None:
        """A refusal with ``code`` of a token whose header said ``alg`` (None: not read; an
        alg "none" token is refused before its header is returned, by its code)."""
        label = "none" if code == codes.ALG_NONE else alg_label(alg)
        self._verifications[outcome_of(code), label].inc()

    def cache_lookup(self, *, hit: bool) -> None:
        (self._hit if hit else self._miss).inc()

    def jwks_fetch(self, *, ok: bool) -> None:
        (self._fetched if ok else self._fetch_failed).inc()
