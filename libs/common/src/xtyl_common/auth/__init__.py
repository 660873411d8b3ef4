"""Token verification for every xtyl service.

    config = AuthConfig(supabase_url=..., jwt_secret=..., internal_secret=...)
    verifier = TokenVerifier(config, session)          # once, in the app's lifespan
    user = await verifier.verify_user_token(bearer_token(request.headers.get("Authorization")))
    token = issue_service_token(config.internal_secret, service="rag-worker")
    service = await verifier.verify_service_token(token)

Supabase access tokens are accepted when signed with the legacy HS256 secret (``jwt_secret``)
or with an ES256/RS256 key from ``<supabase_url>/auth/v1/.well-known/jwks.json``. Every refusal
is ``xtyl_common.errors.Unauthorized`` (401) with a stable ``code``:

    missing_token            no Authorization header
    malformed_authorization  not "Bearer <token>"
    token_too_large          longer than max_token_bytes (checked before any decoding)
    malformed_token          not three base64url segments, header not a JSON object, no alg
    forbidden_header         jku, x5u, jwk, x5c, crit or b64 in the header
    alg_none                 alg "none", any case
    missing_signature        empty signature
    unsupported_algorithm    not HS256/ES256/RS256, HS256 with no secret configured,
                             ES256/RS256 with no supabase_url, a service token not HS256
    missing_kid              ES256/RS256 without kid
    unknown_key              kid not in the JWKS (also while the JWKS endpoint is down)
    algorithm_mismatch       header alg differs from the algorithm of the key its kid names
    invalid_signature        signature does not verify
    anon_key                 Supabase's anon (or publishable) key sent as a user token
    service_role_key         Supabase's service-role (or secret) key sent as a user token
    invalid_claims           payload not a JSON object or a claim of the wrong type
    missing_claim            exp, iat, aud, role or sub absent
    token_expired            exp in the past (beyond leeway)
    token_not_yet_valid      nbf or iat in the future (beyond leeway)
    invalid_lifetime         exp not after iat; a service token living over 300 s
    invalid_audience         aud is not "authenticated" (user) / "xtyl-internal" (service)
    invalid_issuer           iss is not exactly <supabase_url>/auth/v1 / "xtyl-internal"
    invalid_role             role is not "authenticated"
    invalid_subject          sub is not a UUID (user) / "service:<name>" (service)
"""

from xtyl_common.auth import codes
from xtyl_common.auth.bearer import bearer_token
from xtyl_common.auth.config import AuthConfig
from xtyl_common.auth.principals import ServicePrincipal, UserPrincipal
from xtyl_common.auth.service_tokens import issue_service_token
from xtyl_common.auth.verifier import TokenVerifier, VerifierStats

__all__ = [
    "AuthConfig",
    "ServicePrincipal",
    "TokenVerifier",
    "UserPrincipal",
    "VerifierStats",
    "bearer_token",
    "codes",
    "issue_service_token",
]
