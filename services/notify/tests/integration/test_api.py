"""The notify API as a real process: the caller's email log, Brevo's webhook, health."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from xtyl_devstack.brevo import LocalBrevo
from xtyl_devstack.issuer import LocalIssuer
from xtyl_devstack.scrape import sample, scrape
from xtyl_devstack.service_process import RunningService, running_service_async

from .conftest import (
    WEBHOOK_SECRET,
    Bus,
    address_hash,
    document_indexed,
    user_created,
    wait_for_status,
)

pytestmark = pytest.mark.integration


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_health(notify_api: RunningService, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{notify_api.url}/readyz") as resp:
        assert resp.status == 200
        assert (await resp.json())["checks"] == {"postgres": "up", "redis": "up"}
    async with http.get(f"{notify_api.url}/livez") as resp:
        assert resp.status == 200


async def test_list_shows_only_the_callers_emails_newest_first(
    notify_api: RunningService,
    http: aiohttp.ClientSession,
    issuer: LocalIssuer,
    bus: Bus,
    brevo: LocalBrevo,
    db: asyncpg.Pool,
) -> None:
    alice, bob = user_created(full_name="Alice"), user_created(full_name="Bob")
    assert alice.payload.email is not None
    assert bob.payload.email is not None
    indexed = document_indexed(alice.payload.user_id)
    await bus.publish(alice)
    await bus.publish(bob)
    await brevo.wait_for_emails(alice.payload.email)
    await bus.publish(indexed)
    await brevo.wait_for_emails(alice.payload.email, 2)
    await brevo.wait_for_emails(bob.payload.email)
    await wait_for_status(db, f"user.created:{alice.payload.user_id}", "sent")
    await wait_for_status(db, f"document.indexed:{indexed.payload.document_id}", "sent")

    token = issuer.mint(user_id=alice.payload.user_id, email=alice.payload.email)
    url = f"{notify_api.url}/v1/notifications"
    async with http.get(url, headers=bearer(token)) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    assert [item["kind"] for item in body["items"]] == ["document_ready", "welcome"]
    assert {item["to_address"] for item in body["items"]} == {alice.payload.email}
    assert all(item["status"] == "sent" for item in body["items"])
    assert body["next_cursor"] is None
    assert set(body["items"][0]) == {
        "id",
        "kind",
        "to_address",
        "subject",
        "status",
        "created_at",
        "updated_at",
        "sent_at",
    }

    async with http.get(url, params={"limit": "1"}, headers=bearer(token)) as resp:
        first = await resp.json()
    assert [item["kind"] for item in first["items"]] == ["document_ready"]
    async with http.get(
        url, params={"limit": "1", "cursor": first["next_cursor"]}, headers=bearer(token)
    ) as resp:
        second = await resp.json()
    assert [item["kind"] for item in second["items"]] == ["welcome"]
    assert second["next_cursor"] is None

    stranger = issuer.mint(user_id=uuid.uuid4(), email="nobody@example.com")
    async with http.get(url, headers=bearer(stranger)) as resp:
        assert (await resp.json())["items"] == []


@pytest.mark.parametrize(
    ("params", "headers", "status", "code"),
    [
        ({}, {}, 401, None),
        ({"limit": "101"}, None, 422, "invalid_input"),
        ({"limit": "0"}, None, 422, "invalid_input"),
        ({"cursor": "not-a-cursor"}, None, 422, "invalid_cursor"),
    ],
)
async def test_list_refuses_bad_requests(
    notify_api: RunningService,
    http: aiohttp.ClientSession,
    issuer: LocalIssuer,
    params: dict[str, str],
    headers: dict[str, str] | None,
    status: int,
    code: str | None,
) -> None:
    if headers is None:
        headers = bearer(issuer.mint(user_id=uuid.uuid4(), email="a@example.com"))
    async with http.get(
        f"{notify_api.url}/v1/notifications", params=params, headers=headers
    ) as resp:
        assert resp.content_type == "application/problem+json"
        problem = await resp.json()
    assert problem["status"] == status, problem
    if code is not None:
        assert problem["code"] == code


def hard_bounce(address: str) -> dict[str, object]:
    return {
        "event": "hard_bounce",
        "email": address,
        "id": 123,
        "date": "2026-01-01 10:00:00",
        "message-id": "<1.2@smtp-relay.mailin.fr>",
        "ts_event": 1767261600,
        "subject": "Welcome to xtyl",
        "tags": ["welcome"],
        "reason": "550 5.1.1 no such user",
    }


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-secret-wrong-secret"}, {"Authorization": "Basic !!"}],
)
async def test_webhook_without_the_secret_is_refused(
    notify_api: RunningService,
    http: aiohttp.ClientSession,
    db: asyncpg.Pool,
    headers: dict[str, str],
) -> None:
    address = f"{uuid.uuid4().hex[:10]}@example.com"
    async with http.post(
        f"{notify_api.url}/webhooks/brevo", json=hard_bounce(address), headers=headers
    ) as resp:
        assert resp.status == 401
        assert (await resp.json())["code"] == "webhook_unauthorized"
    assert (
        await db.fetchval(
            "select count(*) from xtyl_notify.suppressions where address = any($1)",
            [address, address_hash(address)],
        )
        == 0
    )


async def test_webhook_suppresses_and_the_address_gets_no_more_email(
    notify_api: RunningService,
    http: aiohttp.ClientSession,
    db: asyncpg.Pool,
    bus: Bus,
    brevo: LocalBrevo,
) -> None:
    bounced = f"Bounced.{uuid.uuid4().hex[:8]}@Example.com"
    spam = f"{uuid.uuid4().hex[:10]}@example.com"
    unsubscribed = f"{uuid.uuid4().hex[:10]}@example.com"
    batch = [
        hard_bounce(bounced),
        {"event": "spam", "email": spam},
        {"event": "delivered", "email": unsubscribed},
        {"event": "unsubscribed", "email": unsubscribed},
    ]
    basic = base64.b64encode(f"brevo:{WEBHOOK_SECRET}".encode()).decode()
    async with http.post(
        f"{notify_api.url}/webhooks/brevo", json=batch, headers={"Authorization": f"Basic {basic}"}
    ) as resp:
        assert resp.status == 200, await resp.text()
        assert await resp.json() == {"received": 4, "suppressed": 3}
    async with http.post(
        f"{notify_api.url}/webhooks/brevo",
        params={"token": WEBHOOK_SECRET},
        json=hard_bounce(bounced),
    ) as resp:
        assert resp.status == 200
        assert await resp.json() == {"received": 1, "suppressed": 0}
    rows = await db.fetch(
        "select address, reason from xtyl_notify.suppressions where address = any($1)",
        [address_hash(a) for a in (bounced, spam, unsubscribed)] + [bounced.lower()],
    )
    # kept as the address's hash (keyed with EMAIL_HASH_PEPPER), never the address
    assert {r["address"]: r["reason"] for r in rows} == {
        address_hash(bounced): "hard_bounce",
        address_hash(spam): "spam",
        address_hash(unsubscribed): "unsubscribed",
    }
    assert address_hash(bounced) == address_hash(bounced.lower())

    event = user_created(email=bounced)
    await bus.publish(event)
    row = await wait_for_status(db, f"user.created:{event.payload.user_id}", "suppressed")
    await bus.drained("users")
    assert brevo.requests_to(bounced) == []
    assert row["last_error"] == "suppressed: hard_bounce"


async def test_webhook_suppressions_are_counted_by_reason_once_per_address(
    notify_api: RunningService, http: aiohttp.ClientSession
) -> None:
    bounced, complained = (f"{uuid.uuid4().hex[:12]}@example.com" for _ in range(2))
    batch = [hard_bounce(bounced), {"event": "spam", "email": complained}, hard_bounce(bounced)]
    before = await scrape(http, notify_api.url)
    for _ in range(2):  # Brevo sending the same events again suppresses nothing more
        async with http.post(
            f"{notify_api.url}/webhooks/brevo", json=batch, headers=bearer(WEBHOOK_SECRET)
        ) as resp:
            assert resp.status == 200, await resp.text()
    after = await scrape(http, notify_api.url)

    def moved(reason: str) -> float:
        name = "xtyl_notify_suppressions_total"
        return sample(after, name, reason=reason) - sample(before, name, reason=reason)

    assert (moved("hard_bounce"), moved("spam"), moved("unsubscribed")) == (1, 1, 0)
    webhook = {"service": "notify", "route": "/webhooks/brevo", "status": "200"}
    name = "xtyl_http_requests_total"
    assert sample(after, name, **webhook) - sample(before, name, **webhook) == 2


async def test_webhook_with_a_malformed_body_is_422(
    notify_api: RunningService, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        f"{notify_api.url}/webhooks/brevo",
        data=b'{"email": "a@example.com"}',
        headers={**bearer(WEBHOOK_SECRET), "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 422
        assert (await resp.json())["code"] == "invalid_webhook"


async def test_webhook_is_404_when_no_secret_is_configured(
    notify_env: dict[str, str],
    service_log_dir: Path,
    http: aiohttp.ClientSession,
    issuer: LocalIssuer,
) -> None:
    env = {k: v for k, v in notify_env.items() if k != "BREVO_WEBHOOK_SECRET"}
    async with (
        running_service_async(
            "xtyl_notify", env, log_dir=service_log_dir, name="notify-no-webhook"
        ) as service,
        http.post(
            f"{service.url}/webhooks/brevo",
            json=hard_bounce("a@example.com"),
            headers=bearer(WEBHOOK_SECRET),
        ) as resp,
    ):
        assert resp.status == 404
