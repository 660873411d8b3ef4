"""Supabase Auth's Send Email Hook at the real notify process: requests signed per Standard
Webhooks (with the ``standardwebhooks`` library, as Supabase signs them), emails checked at the
Brevo stand-in."""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from standardwebhooks import Webhook

from xtyl_devstack.brevo import LocalBrevo
from xtyl_devstack.scrape import sample, scrape
from xtyl_devstack.service_process import RunningService, running_service_async
from xtyl_notify.service import AUTH_EMAIL_SENDS, AUTH_HOOK_DEADLINE_S

pytestmark = pytest.mark.integration

SECRET = "v1,whsec_" + "bm90aWZ5LXRlc3Qtc2VuZC1lbWFpbC1ob29rLXNlY3JldA=="
OTHER_SECRET = "v1,whsec_" + "c29tZW9uZS1lbHNlcy1zZW5kLWVtYWlsLWhvb2stc2VjcmV0"
AUTH_URL = "https://project.supabase.co/auth/v1"
HOOK = "/webhooks/auth/send-email"
INVITE_TEMPLATE = 42


@pytest.fixture(scope="module")
async def hook_notify(
    notify_env: dict[str, str], service_log_dir: Path
) -> AsyncIterator[RunningService]:
    """The notify API with the hook's secret set (and an old one kept, as while rotating), and
    invites sent as a Brevo template."""
    env = {
        **notify_env,
        "SEND_EMAIL_HOOK_SECRET": f"{OTHER_SECRET}|{SECRET}",
        "BREVO_AUTH_TEMPLATES": f"invite={INVITE_TEMPLATE}",
    }
    async with running_service_async(
        "xtyl_notify", env, log_dir=service_log_dir, name="notify-hook", ready_path="/readyz"
    ) as service:
        yield service


def payload(
    action: str, email: str, *, full_name: str = "Ada Lovelace", **email_data: str
) -> dict[str, Any]:
    return {
        "metadata": {"uuid": str(uuid.uuid4()), "name": "send-email", "ip_address": "1.2.3.4"},
        "user": {
            "id": str(uuid.uuid4()),
            "aud": "authenticated",
            "email": email,
            "user_metadata": {"full_name": full_name},
            "identities": [],
        },
        "email_data": {
            "token": "123456",
            "token_hash": "ab" * 28,
            "redirect_to": "https://app.example.com/auth/callback",
            "email_action_type": action,
            "site_url": AUTH_URL,
            "token_new": "",
            "token_hash_new": "",
            **email_data,
        },
    }


def signed(
    body: bytes,
    *,
    secret: str = SECRET,
    msg_id: str | None = None,
    at: datetime | None = None,
) -> dict[str, str]:
    msg_id = msg_id or str(uuid.uuid4())
    at = at or datetime.now(UTC)
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret.removeprefix("v1,")).sign(msg_id, at, body),
    }


async def call(
    http: aiohttp.ClientSession, notify: RunningService, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with http.post(notify.url + HOOK, data=body, headers=headers) as response:
        return response.status, await response.json(), dict(response.headers)


def address() -> str:
    return f"auth-{secrets.token_hex(6)}@example.com"


@pytest.mark.parametrize(
    ("action", "subject", "link_label"),
    [
        ("signup", "Confirm your xtyl account", "Confirm my email"),
        ("recovery", "Reset your xtyl password", "Choose a new password"),
        ("magiclink", "Your xtyl sign-in link", "Sign in"),
        ("invite", "You have been invited to xtyl", "Accept the invitation"),
        ("reauthentication", "Your xtyl verification code", None),
    ],
)
async def test_each_action_is_sent_with_its_code_and_link(
    hook_notify: RunningService,
    brevo: LocalBrevo,
    http: aiohttp.ClientSession,
    action: str,
    subject: str,
    link_label: str | None,
) -> None:
    to = address()
    body = json.dumps(payload(action, to)).encode()
    status, answer, _ = await call(http, hook_notify, body, signed(body))
    assert (status, answer) == (200, {})
    [sent] = brevo.emails_to(to)
    assert sent["subject"] == subject
    assert sent["to"] == [{"email": to, "name": "Ada Lovelace"}]
    assert "Hi Ada Lovelace," in sent["textContent"]
    assert "123456" in sent["textContent"]
    assert "123456" in sent["htmlContent"]
    link = (
        f"{AUTH_URL}/verify?token={'ab' * 28}&type={action}"
        "&redirect_to=https%3A%2F%2Fapp.example.com%2Fauth%2Fcallback"
    )
    if link_label is None:
        assert "/verify?" not in sent["textContent"]
    else:
        assert f"{link_label}: {link}" in sent["textContent"]
        assert link.replace("&", "&amp;") in sent["htmlContent"]
    if action == "invite":  # configured as a Brevo template: Brevo renders it with the params
        assert sent["templateId"] == INVITE_TEMPLATE
        assert sent["params"] == {
            "token": "123456",
            "token_hash": "ab" * 28,
            "confirmation_url": link,
            "email_action_type": "invite",
            "email": to,
            "new_email": "",
            "full_name": "Ada Lovelace",
            "site_url": AUTH_URL,
            "redirect_to": "https://app.example.com/auth/callback",
        }
    else:
        assert "templateId" not in sent


async def test_a_secure_email_change_writes_to_both_addresses(
    hook_notify: RunningService, brevo: LocalBrevo, http: aiohttp.ClientSession
) -> None:
    current, new = address(), address()
    data = payload(
        "email_change",
        current,
        token_new="654321",
        token_hash="aa" * 28,
        token_hash_new="bb" * 28,
    )
    data["user"]["new_email"] = new
    body = json.dumps(data).encode()
    status, _, _ = await call(http, hook_notify, body, signed(body))
    assert status == 200
    [to_current] = brevo.emails_to(current)
    [to_new] = brevo.emails_to(new)
    # Supabase's pairing: the current address gets `token` with `token_hash_new`
    assert "123456" in to_current["textContent"]
    assert f"token={'bb' * 28}&type=email_change" in to_current["textContent"]
    assert new in to_current["textContent"]
    assert "654321" in to_new["textContent"]
    assert f"token={'aa' * 28}&type=email_change" in to_new["textContent"]


async def test_a_bad_signature_is_refused_and_sends_nothing(
    hook_notify: RunningService, brevo: LocalBrevo, http: aiohttp.ClientSession
) -> None:
    to = address()
    body = json.dumps(payload("recovery", to)).encode()
    forged = {**signed(body), "webhook-signature": "v1," + "A" * 44}
    old = signed(body, at=datetime.now(UTC) - timedelta(minutes=6))
    tampered_body = json.dumps(payload("recovery", "attacker@example.com")).encode()
    for request_body, headers in (
        (body, forged),
        (body, old),
        (body, signed(body, secret="v1,whsec_" + "d3Jvbmctc2VjcmV0LWZvci10aGlzLWhvb2stMTIzNA==")),
        (tampered_body, signed(body)),
        (body, {"Content-Type": "application/json"}),
    ):
        status, answer, _ = await call(http, hook_notify, request_body, headers)
        assert status == 401
        assert answer["code"] == "hook_unauthorized"
        assert answer["error"]["http_code"] == 401
    assert brevo.emails_to(to) == []
    assert brevo.emails_to("attacker@example.com") == []


async def test_the_old_secret_still_verifies_while_rotating(
    hook_notify: RunningService, brevo: LocalBrevo, http: aiohttp.ClientSession
) -> None:
    to = address()
    body = json.dumps(payload("magiclink", to)).encode()
    status, _, _ = await call(http, hook_notify, body, signed(body, secret=OTHER_SECRET))
    assert status == 200
    assert len(brevo.emails_to(to)) == 1


async def test_a_replayed_webhook_id_is_sent_once(
    hook_notify: RunningService,
    brevo: LocalBrevo,
    http: aiohttp.ClientSession,
    db: asyncpg.Pool,
) -> None:
    to = address()
    body = json.dumps(payload("recovery", to)).encode()
    headers = signed(body)
    first = await call(http, hook_notify, body, headers)
    again = await call(http, hook_notify, body, headers)
    assert first[:2] == again[:2] == (200, {})
    assert len(brevo.emails_to(to)) == 1
    rows = await db.fetch("select kind, status from xtyl_notify.emails where to_address = $1", to)
    assert [(r["kind"], r["status"]) for r in rows] == [("auth_recovery", "sent")]


async def test_brevo_failing_once_is_tried_again_within_the_call_and_a_refusal_is_an_error(
    hook_notify: RunningService,
    brevo: LocalBrevo,
    http: aiohttp.ClientSession,
    db: asyncpg.Pool,
) -> None:
    to = address()
    brevo.fail_next(503, to=to)
    body = json.dumps(payload("recovery", to)).encode()
    status, answer, _ = await call(http, hook_notify, body, signed(body))
    assert (status, answer) == (200, {})
    assert brevo.requests_to(to) == [503, 201]
    assert len(brevo.emails_to(to)) == 1
    rows = await db.fetch(
        "select status, attempts from xtyl_notify.emails where to_address = $1", to
    )
    assert [(r["status"], r["attempts"]) for r in rows] == [("sent", 2)]

    refused = address()
    brevo.fail_next(400, to=refused)
    body = json.dumps(payload("signup", refused)).encode()
    status, answer, _ = await call(http, hook_notify, body, signed(body))
    assert status == 500
    assert answer["code"] == "email_failed"
    assert brevo.emails_to(refused) == []


async def test_brevo_down_through_every_try_is_503_before_supabase_s_deadline(
    hook_notify: RunningService,
    brevo: LocalBrevo,
    http: aiohttp.ClientSession,
    db: asyncpg.Pool,
) -> None:
    to = address()
    brevo.fail_next(503, times=AUTH_EMAIL_SENDS.attempts, to=to)
    body = json.dumps(payload("recovery", to)).encode()
    started = time.monotonic()
    status, answer, headers = await call(http, hook_notify, body, signed(body))
    assert time.monotonic() - started < AUTH_HOOK_DEADLINE_S
    assert status == 503
    assert (answer["code"], answer["error"]["http_code"]) == ("email_unavailable", 503)
    # notify was the layer that tried again: Supabase is not asked to (a new webhook-id would
    # be a new email, sent twice if one of these tries reached Brevo after all)
    assert "Retry-After" not in headers
    assert brevo.requests_to(to) == [503] * AUTH_EMAIL_SENDS.attempts
    assert brevo.emails_to(to) == []
    [row] = await db.fetch(
        "select status, last_error from xtyl_notify.emails where to_address = $1", to
    )
    assert row["status"] == "failed"
    assert row["last_error"].startswith(f"gave up after {AUTH_EMAIL_SENDS.attempts} attempts")


async def test_each_email_is_counted_by_kind_and_outcome(
    hook_notify: RunningService, brevo: LocalBrevo, http: aiohttp.ClientSession
) -> None:
    before = await scrape(http, hook_notify.url)
    signup, recovery, magiclink = address(), address(), address()
    brevo.fail_next(503, to=recovery)
    brevo.fail_next(503, times=AUTH_EMAIL_SENDS.attempts, to=magiclink)
    for action, to, answered in (
        ("signup", signup, 200),
        ("recovery", recovery, 200),
        ("magiclink", magiclink, 503),
    ):
        body = json.dumps(payload(action, to)).encode()
        assert (await call(http, hook_notify, body, signed(body)))[0] == answered
    after = await scrape(http, hook_notify.url)

    def moved(kind: str, outcome: str) -> float:
        labels = {"kind": kind, "outcome": outcome}
        return sample(after, "xtyl_notify_emails_total", **labels) - sample(
            before, "xtyl_notify_emails_total", **labels
        )

    assert moved("auth_signup", "sent") == 1
    assert (moved("auth_recovery", "retry"), moved("auth_recovery", "sent")) == (1, 1)
    # every try Brevo could not take, then the email given up when the hook's time ran out
    assert moved("auth_magiclink", "retry") == AUTH_EMAIL_SENDS.attempts
    assert (moved("auth_magiclink", "failed"), moved("auth_magiclink", "sent")) == (1, 0)


async def test_a_suppressed_address_is_answered_but_not_written_to(
    hook_notify: RunningService,
    brevo: LocalBrevo,
    http: aiohttp.ClientSession,
    db: asyncpg.Pool,
) -> None:
    to = address()
    await db.execute(
        "insert into xtyl_notify.suppressions (address, reason) values ($1, 'hard_bounce')", to
    )
    body = json.dumps(payload("recovery", to)).encode()
    status, answer, _ = await call(http, hook_notify, body, signed(body))
    assert (status, answer) == (200, {})
    assert brevo.requests_to(to) == []


async def test_a_body_that_is_not_the_hooks_is_refused(
    hook_notify: RunningService, http: aiohttp.ClientSession
) -> None:
    body = b'{"user": "nobody"}'
    status, answer, _ = await call(http, hook_notify, body, signed(body))
    assert status == 422
    assert answer["code"] == "invalid_hook_payload"
    assert re.search(r"user", answer["detail"])
