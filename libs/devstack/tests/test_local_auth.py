"""The local Supabase Auth driven by supabase-py (``supabase-auth``, a client nobody here
wrote), against the real embedded Postgres, with the real gateway and notify processes behind
it: sign-up lands in ``auth.users`` (the gateway's trigger fills ``public.users``), its tokens
open ``/v1/me``, and recovery emails go Auth → Send Email Hook → gateway → notify → Brevo."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from supabase_auth import AsyncGoTrueClient
from supabase_auth.errors import AuthApiError, AuthWeakPasswordError

from xtyl_devstack.auth.config import RateLimits, load_config
from xtyl_devstack.auth.server import LocalAuth
from xtyl_devstack.brevo import LocalBrevo
from xtyl_devstack.ports import free_port
from xtyl_devstack.service_process import RunningService, running_service_async
from xtyl_devstack.testing import TEST_INTERNAL_SECRET, TEST_JWT_SECRET

pytestmark = pytest.mark.integration

HOOK_SECRET = "v1,whsec_" + "dGVzdC1zZW5kLWVtYWlsLWhvb2stc2VjcmV0LTAxMjM0NTY3"
SITE_URL = "http://localhost:3000"
REUSE_INTERVAL_S = 1
PASSWORD = "correct horse"


@pytest.fixture(scope="module")
def gateway_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
async def auth(
    request: pytest.FixtureRequest,
    migrated_database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    gateway_port: int,
) -> AsyncIterator[LocalAuth]:
    """Configured by the repository's supabase/config.toml, as `make up` does; the tests'
    changes: a 1 s refresh-token reuse interval and rate limits no test run reaches."""
    path = request.config.rootpath / "supabase" / "config.toml"
    config = load_config(path, {}).for_local(
        site_url=SITE_URL,
        hook_uri=f"http://127.0.0.1:{gateway_port}/webhooks/auth/send-email",
        hook_secret=HOOK_SECRET,
        refresh_token_reuse_interval_s=REUSE_INTERVAL_S,
        rate_limits=RateLimits(
            sign_in_sign_ups=10_000, token_refresh=10_000, token_verifications=10_000
        ),
    )
    async with LocalAuth(
        tmp_path_factory.mktemp("auth-keys"),
        database_url=migrated_database_url,
        config=config,
        jwt_secret=TEST_JWT_SECRET,
    ) as local:
        yield local


@pytest.fixture(scope="module")
async def brevo(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalBrevo]:
    async with LocalBrevo(tmp_path_factory.mktemp("brevo")) as stand_in:
        yield stand_in


@pytest.fixture(scope="module")
def services_env(auth: LocalAuth, migrated_database_url: str, redis_url: str) -> dict[str, str]:
    return {
        "SUPABASE_URL": auth.supabase_url,
        "SUPABASE_JWT_SECRET": TEST_JWT_SECRET,
        "INTERNAL_JWT_SECRET": TEST_INTERNAL_SECRET,
        "DATABASE_URL": migrated_database_url,
        "REDIS_URL": redis_url,
        "EVENTS_STREAM_PREFIX": f"test:auth:{secrets.token_hex(4)}:events",
    }


@pytest.fixture(scope="module")
async def notify(
    services_env: dict[str, str], brevo: LocalBrevo, service_log_dir: Path
) -> AsyncIterator[RunningService]:
    env = {
        **services_env,
        "BREVO_API_URL": brevo.url,
        "BREVO_API_KEY": "test-brevo-key",
        "EMAIL_HASH_PEPPER": "test-email-hash-pepper-0123456789abcdef",
        "PUBLIC_API_URL": "http://127.0.0.1:9",
        "APP_URL": SITE_URL,
        "SEND_EMAIL_HOOK_SECRET": HOOK_SECRET,
    }
    async with running_service_async(
        "xtyl_notify", env, log_dir=service_log_dir, name="notify", ready_path="/readyz"
    ) as service:
        yield service


@pytest.fixture(scope="module")
async def gateway(
    services_env: dict[str, str],
    notify: RunningService,
    gateway_port: int,
    service_log_dir: Path,
) -> AsyncIterator[RunningService]:
    closed = f"http://127.0.0.1:{free_port()}"
    env = {
        **services_env,
        "NOTIFY_URL": notify.url,
        "STORAGE_URL": closed,
        "RAG_URL": closed,
        "RATE_LIMIT_REQUESTS": "100000",
    }
    async with running_service_async(
        "xtyl_gateway", env, log_dir=service_log_dir, name="gateway", port=gateway_port
    ) as service:
        yield service


@pytest.fixture
async def client(auth: LocalAuth) -> AsyncIterator[AsyncGoTrueClient]:
    """supabase-py's Auth client with the anon key, as a frontend holds it."""
    async with AsyncGoTrueClient(
        url=auth.api_url,
        headers={"apikey": auth.anon_key},
        auto_refresh_token=False,
        persist_session=False,
    ) as gotrue:
        yield gotrue


@pytest.fixture
def email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


async def signed_up(client: AsyncGoTrueClient, email: str, name: str = "Ada Lovelace") -> Any:
    response = await client.sign_up(
        {"email": email, "password": PASSWORD, "options": {"data": {"full_name": name}}}
    )
    assert response.session is not None
    return response.session


async def test_a_seven_character_password_is_weak(
    client: AsyncGoTrueClient, email: str, migrated_database_url: str
) -> None:
    with pytest.raises(AuthWeakPasswordError) as caught:
        await client.sign_up({"email": email, "password": "1234567"})
    assert caught.value.code == "weak_password"
    assert caught.value.status == 422
    assert caught.value.reasons == ["length"]
    assert "at least 8 characters" in caught.value.message
    conn = await asyncpg.connect(migrated_database_url)
    try:
        assert await conn.fetchval("select count(*) from auth.users where email = $1", email) == 0
    finally:
        await conn.close()


async def test_sign_up_gives_a_session_the_gateway_accepts(
    client: AsyncGoTrueClient, email: str, gateway: RunningService, http: aiohttp.ClientSession
) -> None:
    session = await signed_up(client, email, "Ada Lovelace")
    assert session.user.email == email
    assert session.user.user_metadata["full_name"] == "Ada Lovelace"
    assert session.user.email_confirmed_at is not None  # confirmations are off
    headers = {"Authorization": f"Bearer {session.access_token}"}
    async with http.get(gateway.url + "/v1/me", headers=headers) as response:
        assert response.status == 200, await response.text()
        me = await response.json()
    assert me["id"] == session.user.id
    assert me["email"] == email
    assert me["full_name"] == "Ada Lovelace"


async def test_signing_up_twice_is_refused(client: AsyncGoTrueClient, email: str) -> None:
    await signed_up(client, email)
    with pytest.raises(AuthApiError) as caught:
        await client.sign_up({"email": email.upper(), "password": "another password"})
    assert caught.value.code == "user_already_exists"
    assert caught.value.status == 422


@pytest.mark.parametrize(
    ("address", "code"),
    [("not-an-address", "validation_failed"), ("ada@mail.invalid", "email_address_invalid")],
)
async def test_addresses_that_cannot_receive_mail_are_refused(
    client: AsyncGoTrueClient, address: str, code: str
) -> None:
    with pytest.raises(AuthApiError) as caught:
        await client.sign_up({"email": address, "password": PASSWORD})
    assert caught.value.code == code
    assert caught.value.status == 400


async def test_a_wrong_password_is_invalid_credentials(
    client: AsyncGoTrueClient, email: str
) -> None:
    await signed_up(client, email)
    for address, password in ((email, "wrong password"), ("nobody-" + email, PASSWORD)):
        with pytest.raises(AuthApiError) as caught:
            await client.sign_in_with_password({"email": address, "password": password})
        assert caught.value.code == "invalid_credentials"
        assert caught.value.status == 400
    signed_in = await client.sign_in_with_password({"email": email, "password": PASSWORD})
    assert signed_in.session is not None


async def test_refresh_rotates_and_a_reused_token_ends_the_session(
    client: AsyncGoTrueClient, email: str
) -> None:
    first = await signed_up(client, email)
    second = (await client.refresh_session(first.refresh_token)).session
    assert second is not None
    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    # a client that lost the answer may present the old token once more: it gets the same
    again = (await client.refresh_session(first.refresh_token)).session
    assert again is not None
    assert again.refresh_token == second.refresh_token
    third = (await client.refresh_session(second.refresh_token)).session
    assert third is not None
    await asyncio.sleep(REUSE_INTERVAL_S + 0.5)

    with pytest.raises(AuthApiError) as caught:
        await client.refresh_session(first.refresh_token)  # reused after its rotation
    assert caught.value.code == "refresh_token_already_used"
    # the whole session is over: its newest refresh token and its access token with it
    with pytest.raises(AuthApiError) as caught:
        await client.refresh_session(third.refresh_token)
    assert caught.value.code == "refresh_token_not_found"
    with pytest.raises(AuthApiError) as caught:
        await client.get_user(third.access_token)
    assert caught.value.code == "session_not_found"
    # signing in again works
    assert (await client.sign_in_with_password({"email": email, "password": PASSWORD})).session


async def test_sign_out_revokes_the_refresh_token(
    client: AsyncGoTrueClient, auth: LocalAuth, email: str
) -> None:
    session = await signed_up(client, email)
    await client.sign_out()
    with pytest.raises(AuthApiError) as caught:
        await client.refresh_session(session.refresh_token)
    assert caught.value.code == "refresh_token_not_found"

    # scope "others": this device stays signed in, the other one is signed out
    async with AsyncGoTrueClient(
        url=auth.api_url,
        headers={"apikey": auth.anon_key},
        auto_refresh_token=False,
        persist_session=False,
    ) as other_device:
        other = await other_device.sign_in_with_password({"email": email, "password": PASSWORD})
        assert other.session is not None
        mine = await client.sign_in_with_password({"email": email, "password": PASSWORD})
        assert mine.session is not None
        await client.sign_out({"scope": "others"})
        with pytest.raises(AuthApiError) as caught:
            await other_device.refresh_session(other.session.refresh_token)
        assert caught.value.code == "refresh_token_not_found"
        assert (await client.refresh_session(mine.session.refresh_token)).session is not None


async def test_requests_without_the_api_key_are_refused(
    auth: LocalAuth, http: aiohttp.ClientSession
) -> None:
    body = {"email": "someone@example.com", "password": PASSWORD}
    async with http.post(auth.api_url + "/signup", json=body) as response:
        assert response.status == 401
        assert (await response.json())["message"] == "No API key found in request"
    async with http.post(
        auth.api_url + "/signup", json=body, headers={"apikey": "not-a-key"}
    ) as response:
        assert response.status == 401
        assert (await response.json())["message"] == "Invalid API key"


async def test_admin_routes_take_the_service_role_key_only(
    auth: LocalAuth, client: AsyncGoTrueClient, email: str
) -> None:
    with pytest.raises(AuthApiError) as caught:
        await client.admin.list_users()
    assert caught.value.code in ("no_authorization", "not_admin")
    async with AsyncGoTrueClient(
        url=auth.api_url,
        headers={
            "apikey": auth.service_role_key,
            "Authorization": f"Bearer {auth.service_role_key}",
        },
        auto_refresh_token=False,
        persist_session=False,
    ) as admin_client:
        created = await admin_client.admin.create_user(
            {
                "email": email,
                "password": PASSWORD,
                "email_confirm": True,
                "user_metadata": {"full_name": "Grace Hopper"},
            }
        )
        assert created.user.email == email
        found = await admin_client.admin.get_user_by_id(created.user.id)
        assert found.user.user_metadata["full_name"] == "Grace Hopper"
        listed = await admin_client.admin.list_users()
        assert created.user.id in {user.id for user in listed}
        await admin_client.admin.delete_user(created.user.id)
    with pytest.raises(AuthApiError) as caught:
        await client.sign_in_with_password({"email": email, "password": PASSWORD})
    assert caught.value.code == "invalid_credentials"


async def test_sign_ins_past_the_rate_limit_are_refused(
    auth: LocalAuth, client: AsyncGoTrueClient, email: str
) -> None:
    await signed_up(client, email)
    saved = auth.config
    auth.config = dataclasses.replace(saved, rate_limits=RateLimits(sign_in_sign_ups=2))
    auth.limiter = type(auth.limiter)()
    try:
        for _ in range(2):
            await client.sign_in_with_password({"email": email, "password": PASSWORD})
        with pytest.raises(AuthApiError) as caught:
            await client.sign_in_with_password({"email": email, "password": PASSWORD})
        assert caught.value.code == "over_request_rate_limit"
        assert caught.value.status == 429
    finally:
        auth.config = saved


def _code_in(email: dict[str, Any]) -> str:
    found = re.search(r"\b(\d{6})\b", email["textContent"])
    assert found is not None, email["textContent"]
    return found.group(1)


async def test_password_recovery_through_notify(
    client: AsyncGoTrueClient,
    auth: LocalAuth,
    email: str,
    gateway: RunningService,
    brevo: LocalBrevo,
) -> None:
    await signed_up(client, email)
    await client.sign_out()
    await client.reset_password_for_email(email, {"redirect_to": SITE_URL + "/auth/callback"})

    [sent] = await brevo.wait_for_emails(email)
    assert sent["subject"] == "Reset your xtyl password"
    code = _code_in(sent)
    link = re.search(r"(http://127\.0\.0\.1:\d+/auth/v1/verify\?[^\s\"<]+)", sent["textContent"])
    assert link is not None
    assert link.group(1).startswith(auth.api_url)
    assert "type=recovery" in link.group(1)

    # asking again at once is refused (max_frequency), and sends nothing
    with pytest.raises(AuthApiError) as caught:
        await client.reset_password_for_email(email)
    assert caught.value.code == "over_email_send_rate_limit"

    verified = await client.verify_otp({"email": email, "token": code, "type": "recovery"})
    assert verified.session is not None
    assert verified.user is not None
    assert verified.user.email == email
    await client.update_user({"password": "a brand new password"})
    await client.sign_out()

    with pytest.raises(AuthApiError) as caught:
        await client.sign_in_with_password({"email": email, "password": PASSWORD})
    assert caught.value.code == "invalid_credentials"
    renewed = await client.sign_in_with_password(
        {"email": email, "password": "a brand new password"}
    )
    assert renewed.session is not None
    # the code is spent
    with pytest.raises(AuthApiError) as caught:
        await client.verify_otp({"email": email, "token": code, "type": "recovery"})
    assert caught.value.code == "otp_expired"
    assert len(brevo.emails_to(email)) == 1


async def test_an_email_change_is_confirmed_from_both_addresses(
    client: AsyncGoTrueClient,
    email: str,
    gateway: RunningService,
    brevo: LocalBrevo,
    http: aiohttp.ClientSession,
) -> None:
    session = await signed_up(client, email)
    new_email = "new-" + email
    changed = await client.update_user({"email": new_email})
    assert changed.user.email == email  # not yet: both addresses confirm first
    assert changed.user.new_email == new_email

    [to_current] = await brevo.wait_for_emails(email)
    [to_new] = await brevo.wait_for_emails(new_email)
    assert to_current["subject"] == to_new["subject"] == "Confirm your new email address"
    pending = await client.verify_otp(
        {"email": email, "token": _code_in(to_current), "type": "email_change"}
    )
    assert pending.session is None
    done = await client.verify_otp(
        {"email": new_email, "token": _code_in(to_new), "type": "email_change"}
    )
    assert done.user is not None
    assert done.user.email == new_email

    headers = {"Authorization": f"Bearer {session.access_token}"}
    async with http.get(gateway.url + "/v1/me", headers=headers) as response:
        assert response.status == 200
        assert (await response.json())["email"] == new_email  # the update trigger followed
    renewed = await client.sign_in_with_password({"email": new_email, "password": PASSWORD})
    assert renewed.session is not None


async def test_an_emailed_link_opened_in_a_browser_signs_in_at_the_redirect(
    auth: LocalAuth, client: AsyncGoTrueClient, email: str, http: aiohttp.ClientSession
) -> None:
    await signed_up(client, email)
    admin = {"apikey": auth.service_role_key, "Authorization": f"Bearer {auth.service_role_key}"}
    async with http.post(
        auth.api_url + "/admin/generate_link",
        json={"type": "recovery", "email": email, "redirect_to": SITE_URL + "/auth/callback"},
        headers=admin,
    ) as response:
        assert response.status == 200
        link = (await response.json())["action_link"]
    async with http.get(link, allow_redirects=False) as response:  # no apikey: a browser
        assert response.status == 303
        location = response.headers["Location"]
    target, _, fragment = location.partition("#")
    assert target == SITE_URL + "/auth/callback"
    assert "type=recovery" in fragment
    access_token = re.search(r"access_token=([^&]+)", fragment)
    assert access_token is not None
    user = await client.get_user(access_token.group(1))
    assert user is not None
    assert user.user.email == email

    async with http.get(link, allow_redirects=False) as response:  # spent
        assert response.status == 303
        assert "error_code=otp_expired" in response.headers["Location"]
