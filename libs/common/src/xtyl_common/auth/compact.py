"""Strict parsing of a compact JWS (``header.payload.signature``), before any key is touched.

Everything a token can do wrong in its shape ends here as ``Unauthorized`` with a stable code;
no base64, JSON or type error ever leaves this module.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from typing import Any

import msgspec

from xtyl_common.auth import codes
from xtyl_common.auth.codes import rejected

# Header parameters that would make the token name its own key or key location
# (RFC 7515 §4.1.2-4.1.6), or change how it must be processed (``crit``, ``b64``).
FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "crit", "b64"})

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_header_decoder = msgspec.json.Decoder(dict[str, Any])


@dataclass(frozen=True, slots=True)
class CompactToken:
    """The parts of a well-formed compact JWS; the signature is not verified yet."""

    alg: str
    kid: str | None
    signing_input: bytes
    payload: bytes
    signature: bytes


def b64url_decode(segment: str) -> bytes:
    """Strict base64url without padding (RFC 7515 §2); ValueError on anything else."""
    if len(segment) % 4 == 1 or _B64URL.fullmatch(segment) is None:
        raise ValueError("not base64url")
    padded = segment + "=" * (-len(segment) % 4)
    return binascii.a2b_base64(padded.replace("-", "+").replace("_", "/"), strict_mode=True)


def parse_compact(token: str, *, max_bytes: int) -> CompactToken:
    """Split and decode ``token``; the size cap is checked before anything is decoded."""
    if len(token) > max_bytes:
        raise rejected(codes.TOKEN_TOO_LARGE, f"token is longer than {max_bytes} bytes")
    if not token.isascii():
        raise rejected(codes.MALFORMED_TOKEN, "token is not ASCII")
    segments = token.split(".")
    if len(segments) != 3:
        raise rejected(codes.MALFORMED_TOKEN, "token must have exactly three segments")
    header_b64, payload_b64, signature_b64 = segments
    try:
        header_bytes = b64url_decode(header_b64)
        payload = b64url_decode(payload_b64)
        signature = b64url_decode(signature_b64)
    except (ValueError, binascii.Error):
        raise rejected(codes.MALFORMED_TOKEN, "token segment is not base64url") from None
    try:
        header = _header_decoder.decode(header_bytes)
    except ValueError:  # msgspec.MsgspecError, or UnicodeDecodeError for invalid UTF-8
        raise rejected(codes.MALFORMED_TOKEN, "token header is not a JSON object") from None

    forbidden = FORBIDDEN_HEADERS.intersection(header)
    if forbidden:
        raise rejected(codes.FORBIDDEN_HEADER, f"header parameter {min(forbidden)} is not accepted")
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise rejected(codes.MALFORMED_TOKEN, "token header has no alg")
    if alg.lower() == "none":
        raise rejected(codes.ALG_NONE, "unsigned tokens are not accepted")
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid):
        raise rejected(codes.MALFORMED_TOKEN, "token header kid is not a string")
    if not signature:
        raise rejected(codes.MISSING_SIGNATURE, "token has an empty signature")
    return CompactToken(
        alg=alg,
        kid=kid,
        signing_input=f"{header_b64}.{payload_b64}".encode("ascii"),
        payload=payload,
        signature=signature,
    )
