"""The devstack's local issuer and the verifier together, over real HTTP on 127.0.0.1:
what `make up` gives a developer is what production verification accepts."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from xtyl_common.auth import AuthConfig, TokenVerifier
from xtyl_devstack.issuer import KEY_FILE, LocalIssuer, mint_access_token

pytestmark = pytest.mark.integration

INTERNAL_SECRET = "internal-service-secret-0123456789abcdefgh"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_token_endpoint_issues_tokens_the_verifier_accepts(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    user_id = uuid.uuid4()
    async with LocalIssuer(tmp_path) as issuer:
        config = AuthConfig(supabase_url=issuer.supabase_url, internal_secret=INTERNAL_SECRET)
        verifier = TokenVerifier(config, session)
        async with session.post(
            issuer.url + "/auth/v1/local/token", json={"sub": str(user_id), "email": "a@b.example"}
        ) as response:
            assert response.status == 200
            body = await response.json()

        user = await verifier.verify_user_token(body["access_token"])

        assert (user.user_id, user.email, user.aal) == (user_id, "a@b.example", "aal1")
        assert body["token_type"] == "bearer"
        assert body["expires_at"] == user.expires_at
        assert issuer.unexpected_requests == []
        await verifier.close()


@pytest.mark.parametrize(
    "payload",
    [{}, {"sub": "not-a-uuid"}, {"sub": str(uuid.uuid4()), "role": "service_role"}, []],
)
async def test_token_endpoint_refuses_bad_bodies(
    tmp_path: Path, session: aiohttp.ClientSession, payload: object
) -> None:
    async with (
        LocalIssuer(tmp_path) as issuer,
        session.post(issuer.url + "/auth/v1/local/token", json=payload) as response,
    ):
        assert response.status == 422
        assert (await response.json())["code"] == "invalid_input"


async def test_the_key_is_created_once_and_reused(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    async with LocalIssuer(tmp_path) as first:
        old_key = first.signing_key
    async with LocalIssuer(tmp_path) as second:
        config = AuthConfig(supabase_url=second.supabase_url, internal_secret=INTERNAL_SECRET)
        token = mint_access_token(
            old_key.private_key,
            old_key.kid,
            supabase_url=second.supabase_url,
            user_id=uuid.uuid4(),
            email=None,
        )
        async with session.get(second.jwks_url, headers={"Accept": "application/json"}) as response:
            jwks = await response.json()

        assert (await TokenVerifier(config, session).verify_user_token(token)).email is None
        assert [k["kid"] for k in jwks["keys"]] == [old_key.kid]
        assert all("d" not in k for k in jwks["keys"])  # the public key only
        assert (tmp_path / KEY_FILE).stat().st_mode & 0o077 == 0


def test_the_issuer_refuses_to_listen_beyond_loopback(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        LocalIssuer(tmp_path, host="0.0.0.0")  # noqa: S104 - the point of the test
