"""Text Postgres cannot store (NUL, lone UTF-16 surrogates, bytes that are not UTF-8), sent to a
real notify process: 422 ``invalid_text`` naming the field, and nothing stored."""

from __future__ import annotations

import uuid

import aiohttp
import asyncpg
import pytest

from xtyl_devstack.issuer import LocalIssuer
from xtyl_devstack.service_process import RunningService

from .conftest import WEBHOOK_SECRET, address_hash

pytestmark = pytest.mark.integration

WEBHOOK = {"Authorization": f"Bearer {WEBHOOK_SECRET}", "Content-Type": "application/json"}


async def suppressed(db: asyncpg.Pool, *addresses: str) -> list[str]:
    """The suppressions of ``addresses``, as their hash (or, for older rows, the address)."""
    keys = [*addresses, *(address_hash(a) for a in addresses)]
    rows = await db.fetch(
        "select address from xtyl_notify.suppressions where address = any($1)", keys
    )
    return [row["address"] for row in rows]


@pytest.mark.parametrize(
    ("template", "field"),
    [
        (b'{"event":"spam","email":"x\\u0000@example.com"}', "[1].email"),
        (b'{"event":"spam\\u0000","email":"x@example.com"}', "[1].event"),
        (b'{"event":"spam","email":"x@example.com","message-id":"<\\u0000>"}', "[1].message-id"),
        (b'{"event":"spam","email":"x@example.com","tags":["a","\\ud800"]}', "[1].tags[1]"),
        (b'{"event":"spam","email":"x\xed\xa0\x80@example.com"}', "[1].email"),
        (b'{"event":"spam","email":"x\xff@example.com"}', None),
    ],
)
async def test_a_webhook_batch_with_unstorable_text_is_422_and_suppresses_nothing(
    notify_api: RunningService,
    http: aiohttp.ClientSession,
    db: asyncpg.Pool,
    template: bytes,
    field: str | None,
) -> None:
    good = f"{uuid.uuid4().hex[:10]}@example.com"
    body = b'[{"event":"hard_bounce","email":"' + good.encode() + b'"},' + template + b"]"
    async with http.post(f"{notify_api.url}/webhooks/brevo", data=body, headers=WEBHOOK) as r:
        assert r.status == 422, await r.text()
        assert r.content_type == "application/problem+json"
        problem = await r.json()
    assert problem["code"] == "invalid_text"
    assert problem.get("field") == field
    assert await suppressed(db, good) == []


async def test_the_webhook_secret_is_checked_before_the_text(
    notify_api: RunningService, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        f"{notify_api.url}/webhooks/brevo",
        data=b'{"event":"spam","email":"\\u0000"}',
        headers={"Content-Type": "application/json"},
    ) as r:
        assert r.status == 401
        assert (await r.json())["code"] == "webhook_unauthorized"


async def test_a_nul_in_the_listings_query_is_invalid_text(
    notify_api: RunningService, http: aiohttp.ClientSession, issuer: LocalIssuer
) -> None:
    token = issuer.mint(user_id=uuid.uuid4(), email="a@example.com")
    async with http.get(
        f"{notify_api.url}/v1/notifications?cursor=%00",
        headers={"Authorization": f"Bearer {token}"},
    ) as r:
        assert r.status == 422
        problem = await r.json()
    assert (problem["code"], problem["field"], problem["source"]) == (
        "invalid_text",
        "cursor",
        "query",
    )
