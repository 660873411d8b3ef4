"""Verification keys: the key and its one algorithm travel together.

The algorithm always comes from configuration (the HS256 secret) or from the JWK itself
(``kty``/``crv``/``alg``), never from a token header, so a token cannot choose how it is checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import msgspec
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, RSAAlgorithm

from xtyl_common.auth.compact import b64url_decode

HS256: Final = "HS256"
ES256: Final = "ES256"
RS256: Final = "RS256"
ASYMMETRIC_ALGORITHMS: Final = frozenset({ES256, RS256})
MIN_RSA_BITS: Final = 2048

_hs256 = HMACAlgorithm(HMACAlgorithm.SHA256)
_es256 = ECAlgorithm(ECAlgorithm.SHA256, ec.SECP256R1)
_rs256 = RSAAlgorithm(RSAAlgorithm.SHA256)


@dataclass(frozen=True, slots=True)
class HmacKey:
    secret: bytes
    alg: str = HS256

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        return _hs256.verify(signing_input, self.secret, signature)


@dataclass(frozen=True, slots=True)
class EcKey:
    kid: str
    public_key: ec.EllipticCurvePublicKey
    alg: str = ES256

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        # Raw r||s of exactly 64 bytes (RFC 7518 §3.4); PyJWT turns it into DER.
        return len(signature) == 64 and _es256.verify(signing_input, self.public_key, signature)


@dataclass(frozen=True, slots=True)
class RsaKey:
    kid: str
    public_key: rsa.RSAPublicKey
    alg: str = RS256

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        return _rs256.verify(signing_input, self.public_key, signature)


PublicKey = EcKey | RsaKey


class Jwk(msgspec.Struct, frozen=True):
    """The public members of a JWK we read (RFC 7517/7518); anything else is ignored."""

    kty: str
    kid: str | None = None
    alg: str | None = None
    use: str | None = None
    key_ops: list[str] | None = None
    crv: str | None = None
    x: str | None = None
    y: str | None = None
    n: str | None = None
    e: str | None = None


class UnusableKey(ValueError):
    """A JWK we will not verify with; the reason is safe to log."""


def _uint(value: str | None, name: str) -> int:
    if not value:
        raise UnusableKey(f"missing {name}")
    try:
        return int.from_bytes(b64url_decode(value), "big")
    except ValueError:
        raise UnusableKey(f"{name} is not base64url") from None


def public_key_from_jwk(jwk: Jwk) -> PublicKey:
    """Build a verification key, or raise UnusableKey. Symmetric (``oct``) keys are refused:
    a key published in a JWKS is public and must never become an HMAC secret."""
    if not jwk.kid:
        raise UnusableKey("no kid")
    if jwk.use not in (None, "sig"):
        raise UnusableKey(f"use is {jwk.use!r}")
    if jwk.key_ops is not None and "verify" not in jwk.key_ops:
        raise UnusableKey("key_ops has no verify")
    if jwk.kty == "EC":
        if jwk.crv != "P-256" or jwk.alg not in (None, ES256):
            raise UnusableKey(f"EC key with crv {jwk.crv!r} alg {jwk.alg!r}")
        if jwk.x is None or jwk.y is None or len(jwk.x) != 43 or len(jwk.y) != 43:
            raise UnusableKey("P-256 coordinates must be 32 bytes")
        numbers = ec.EllipticCurvePublicNumbers(
            _uint(jwk.x, "x"), _uint(jwk.y, "y"), ec.SECP256R1()
        )
        try:
            return EcKey(kid=jwk.kid, public_key=numbers.public_key())
        except ValueError:
            raise UnusableKey("point is not on P-256") from None
    if jwk.kty == "RSA":
        if jwk.alg not in (None, RS256):
            raise UnusableKey(f"RSA key with alg {jwk.alg!r}")
        n, e = _uint(jwk.n, "n"), _uint(jwk.e, "e")
        if n.bit_length() < MIN_RSA_BITS or e < 3 or e % 2 == 0:
            raise UnusableKey("weak RSA key")
        try:
            return RsaKey(kid=jwk.kid, public_key=rsa.RSAPublicNumbers(e, n).public_key())
        except ValueError:
            raise UnusableKey("invalid RSA key") from None
    raise UnusableKey(f"kty {jwk.kty!r} is not accepted")
