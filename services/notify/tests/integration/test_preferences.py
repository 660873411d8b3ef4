"""Email preferences and the one-click unsubscribe link, against the real notify process:
what a person (or their mail client's "Unsubscribe" button) does, and what an attacker
sends."""

from __future__ import annotations

import uuid

import aiohttp
import asyncpg
import jwt
import pytest

from xtyl_devstack.brevo import LocalBrevo
from xtyl_devstack.issuer import LocalIssuer
from xtyl_devstack.service_process import RunningService
from xtyl_devstack.testing import TEST_INTERNAL_SECRET

from .conftest import (
    PUBLIC_API_URL,
    UNSUBSCRIBE_SECRET,
    Bus,
    document_failed,
    document_indexed,
    user_created,
)

pytestmark = pytest.mark.integration

PREFERENCES = "/v1/notifications/preferences"
UNSUBSCRIBE = "/v1/notifications/unsubscribe"
ONE_CLICK = {"Content-Type": "application/x-www-form-urlencoded"}
ONE_CLICK_BODY = b"List-Unsubscribe=One-Click"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def get_preferences(
    http: aiohttp.ClientSession, api: RunningService, token: str
) -> dict[str, bool]:
    async with http.get(f"{api.url}{PREFERENCES}", headers=bearer(token)) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, bool] = await resp.json()
    return body


async def mailed_link(bus: Bus, brevo: LocalBrevo) -> tuple[uuid.UUID, str, str]:
    """A user who got a document email; the token of its List-Unsubscribe link."""
    created = user_created()
    address = created.payload.email
    assert address is not None
    await bus.publish(created)
    await brevo.wait_for_emails(address)  # notify knows the user
    await bus.publish(document_indexed(created.payload.user_id, title="Mine.pdf"))
    _, email = await brevo.wait_for_emails(address, 2)
    header = email["headers"]["List-Unsubscribe"]
    prefix = f"<{PUBLIC_API_URL}{UNSUBSCRIBE}?token="
    assert header.startswith(prefix)
    assert header.endswith(">")
    return created.payload.user_id, address, header[len(prefix) : -1]


async def test_preferences_default_to_everything_and_can_be_changed(
    notify_api: RunningService, http: aiohttp.ClientSession, issuer: LocalIssuer
) -> None:
    user_id = uuid.uuid4()
    token = issuer.mint(user_id=user_id)
    assert await get_preferences(http, notify_api, token) == {
        "document_ready": True,
        "document_failed": True,
    }
    wanted = {"document_ready": False, "document_failed": True}
    async with http.put(
        f"{notify_api.url}{PREFERENCES}", json=wanted, headers=bearer(token)
    ) as resp:
        assert resp.status == 200, await resp.text()
        assert await resp.json() == wanted
    assert await get_preferences(http, notify_api, token) == wanted
    other = issuer.mint(user_id=uuid.uuid4())
    assert (await get_preferences(http, notify_api, other))["document_ready"] is True


@pytest.mark.parametrize(
    "body",
    [
        {"document_ready": False, "document_failed": True, "marketing": False},
        {"document_ready": False},
        {"document_ready": "no", "document_failed": True},
        [],
    ],
)
async def test_a_malformed_preferences_body_is_422_and_changes_nothing(
    notify_api: RunningService,
    http: aiohttp.ClientSession,
    issuer: LocalIssuer,
    body: object,
) -> None:
    token = issuer.mint(user_id=uuid.uuid4())
    async with http.put(f"{notify_api.url}{PREFERENCES}", json=body, headers=bearer(token)) as resp:
        assert resp.status == 422, await resp.text()
        assert resp.content_type == "application/problem+json"
        assert (await resp.json())["code"] == "invalid_input"
    assert await get_preferences(http, notify_api, token) == {
        "document_ready": True,
        "document_failed": True,
    }


async def test_preferences_need_a_user_token(
    notify_api: RunningService, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{notify_api.url}{PREFERENCES}") as resp:
        assert resp.status == 401
    async with http.put(
        f"{notify_api.url}{PREFERENCES}",
        json={"document_ready": False, "document_failed": False},
    ) as resp:
        assert resp.status == 401


async def test_one_click_unsubscribe_works_without_signing_in_and_stops_the_emails(
    notify_api: RunningService,
    http: aiohttp.ClientSession,
    issuer: LocalIssuer,
    bus: Bus,
    brevo: LocalBrevo,
    db: asyncpg.Pool,
) -> None:
    user_id, address, link = await mailed_link(bus, brevo)
    token = issuer.mint(user_id=user_id, email=address)
    url = f"{notify_api.url}{UNSUBSCRIBE}"

    # a link scanner's GET: a page with a button, nothing changed
    async with http.get(url, params={"token": link}) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        page = await resp.text()
    assert f'<form method="post" action="{UNSUBSCRIBE}?token={link}">' in page
    assert 'name="List-Unsubscribe" value="One-Click"' in page
    assert (await get_preferences(http, notify_api, token))["document_ready"] is True

    # the mail client's one-click POST (RFC 8058): no Authorization, no cookie
    for _ in range(2):  # pressed twice: the same answer
        async with http.post(
            url, params={"token": link}, data=ONE_CLICK_BODY, headers=ONE_CLICK
        ) as resp:
            assert resp.status == 200, await resp.text()
            assert await resp.json() == {"unsubscribed": ["document_ready"]}
    assert await get_preferences(http, notify_api, token) == {
        "document_ready": False,
        "document_failed": True,
    }

    # a browser posting the page's form gets a page back
    async with http.post(
        url,
        params={"token": link},
        data=ONE_CLICK_BODY,
        headers={**ONE_CLICK, "Accept": "text/html"},
    ) as resp:
        assert resp.status == 200
        assert "You are unsubscribed" in await resp.text()

    ready, failed = document_indexed(user_id), document_failed(user_id)
    await bus.publish_all([ready, failed])
    await bus.drained("documents")
    await brevo.wait_for_emails(address, 3, timeout_s=20)  # the failure: still wanted
    kinds = await db.fetch(
        "select kind from xtyl_notify.emails where user_id = $1 order by created_at", user_id
    )
    assert [r["kind"] for r in kinds] == ["welcome", "document_ready", "document_digest"]
    [digest] = [e for e in brevo.emails_to(address) if e["tags"] == ["document_digest"]]
    assert str(failed.payload.document_id) in digest["textContent"]
    assert str(ready.payload.document_id) not in digest["textContent"]


def forged_links(user_id: uuid.UUID, genuine: str) -> dict[str, str]:
    claims = {
        "iss": "xtyl-notify",
        "aud": "xtyl:unsubscribe",
        "sub": str(user_id),
        "kinds": ["document_failed", "document_ready"],
    }
    header, payload, signature = genuine.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return {
        "tampered signature": f"{header}.{payload}.{flipped}",
        "wrong secret": jwt.encode(claims, "x" * 40, algorithm="HS256"),
        "internal secret": jwt.encode(claims, TEST_INTERNAL_SECRET, algorithm="HS256"),
        "wrong audience": jwt.encode(
            {**claims, "aud": "xtyl-internal"}, UNSUBSCRIBE_SECRET, algorithm="HS256"
        ),
        "unsigned": jwt.encode(claims, "", algorithm="none"),
        "unknown kind": jwt.encode(
            {**claims, "kinds": ["welcome"]}, UNSUBSCRIBE_SECRET, algorithm="HS256"
        ),
        "cut short": genuine[:-10],
        "too long": genuine + "A" * 3000,
        "not a token": "hello",
        "empty": "",
    }


async def test_a_forged_unsubscribe_link_is_refused_and_changes_nothing(
    notify_api: RunningService,
    http: aiohttp.ClientSession,
    issuer: LocalIssuer,
    bus: Bus,
    brevo: LocalBrevo,
) -> None:
    user_id, address, genuine = await mailed_link(bus, brevo)
    token = issuer.mint(user_id=user_id, email=address)
    links = forged_links(user_id, genuine)
    links["a user's access token"] = token
    url = f"{notify_api.url}{UNSUBSCRIBE}"
    for what, link in links.items():
        async with http.post(
            url, params={"token": link}, data=ONE_CLICK_BODY, headers=ONE_CLICK
        ) as resp:
            assert resp.status == 403, what
            assert resp.content_type == "application/problem+json", what
            assert (await resp.json())["code"] == "unsubscribe_link_invalid", what
        async with http.get(url, params={"token": link}) as resp:
            assert resp.status == 403, what
            assert "This link does not work" in await resp.text()
    async with http.post(url, data=ONE_CLICK_BODY, headers=ONE_CLICK) as resp:  # no token
        assert resp.status == 403
        assert (await resp.json())["code"] == "unsubscribe_link_invalid"
    assert await get_preferences(http, notify_api, token) == {
        "document_ready": True,
        "document_failed": True,
    }
