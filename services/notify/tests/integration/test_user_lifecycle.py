"""A user's life in notify, through the real worker and API: an address change moves their
email; their deletion cancels what was still to go, anonymises the log and leaves no row with
their id or address in any table of ``xtyl_notify``; a late ``user.created`` brings nothing
back; their export is everything notify holds about them, and only theirs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import msgspec
import pytest

from xtyl_common.auth import issue_service_token
from xtyl_common.erasure import AccountDeleted
from xtyl_common.events import UserDeleted, UserDeletedPayload, UserUpdated, UserUpdatedPayload
from xtyl_common.settings import load_settings
from xtyl_devstack.brevo import LocalBrevo
from xtyl_devstack.issuer import LocalIssuer
from xtyl_devstack.service_process import RunningService
from xtyl_devstack.testing import TEST_INTERNAL_SECRET, eventually
from xtyl_notify.adapters.brevo import BrevoUnavailable
from xtyl_notify.domain.emails import EmailKind, NewEmail, RenderedEmail
from xtyl_notify.domain.preferences import UnsubscribeLinks
from xtyl_notify.service import EmailInFlight, NotifyService, open_service
from xtyl_notify.settings import NotifySettings

from .conftest import (
    PUBLIC_API_URL,
    UNSUBSCRIBE_SECRET,
    Bus,
    address_hash,
    document_failed,
    document_indexed,
    user_created,
    wait_for_status,
    warm_pool,
)

pytestmark = pytest.mark.integration


def user_updated(
    user_id: uuid.UUID, email: str, full_name: str | None = None, *, at: datetime | None = None
) -> UserUpdated:
    return UserUpdated(
        producer="test",
        occurred_at=at or datetime.now(UTC),
        payload=UserUpdatedPayload(user_id=user_id, email=email, full_name=full_name),
    )


def user_deleted(user_id: uuid.UUID) -> UserDeleted:
    return UserDeleted(producer="test", payload=UserDeletedPayload(user_id=user_id))


def on_behalf(user_id: uuid.UUID) -> dict[str, str]:
    """The gateway's service token naming the user (its /v1/me/* calls)."""
    token = issue_service_token(TEST_INTERNAL_SECRET, service="gateway", user_id=user_id)
    return {"Authorization": f"Bearer {token}"}


async def traces(db: asyncpg.Pool, *needles: str) -> dict[str, int]:
    """Rows holding any of ``needles`` (anywhere in the row, any case) in every table of
    ``xtyl_notify`` as the catalogue lists them, but the erasure ledger (the proof)."""
    tables = await db.fetch(
        "select table_name from information_schema.tables"
        " where table_schema = 'xtyl_notify' and table_type = 'BASE TABLE'"
    )
    assert len(tables) >= 8  # recipients, emails, suppressions, ... read from the catalogue
    found: dict[str, int] = {}
    for row in tables:
        if row["table_name"] == "erasures":
            continue
        table = f'xtyl_notify."{row["table_name"]}"'  # a name from the catalogue
        count = await db.fetchval(
            f"select count(*) from {table} t"  # noqa: S608
            " where exists (select 1 from unnest($1::text[]) n"
            " where t::text ilike '%' || n || '%')",
            list(needles),
        )
        if count:
            found[row["table_name"]] = count
    return found


async def test_user_updated_moves_the_next_email_to_the_new_address(
    bus: Bus, brevo: LocalBrevo, db: asyncpg.Pool
) -> None:
    created = user_created(full_name="Ada")
    old = created.payload.email
    assert old is not None
    user_id = created.payload.user_id
    new = f"new-{uuid.uuid4().hex[:10]}@example.com"
    await bus.publish(created)
    await brevo.wait_for_emails(old)
    await bus.publish(user_updated(user_id, new, "Ada Lovelace"))
    await bus.drained("users")
    indexed = document_indexed(user_id, title="Notes.pdf")
    await bus.publish(indexed)

    [email] = await brevo.wait_for_emails(new)
    assert email["to"] == [{"email": new, "name": "Ada Lovelace"}]
    assert email["textContent"].startswith("Hi Ada Lovelace,")
    assert [e["subject"] for e in brevo.emails_to(old)] == ["Welcome to xtyl"]
    row = await wait_for_status(db, f"document.indexed:{indexed.payload.document_id}", "sent")
    assert row["to_address"] == new


async def test_an_update_delivered_before_its_user_created_is_not_lost(
    bus: Bus, brevo: LocalBrevo, db: asyncpg.Pool
) -> None:
    user_id = uuid.uuid4()
    old = f"old-{uuid.uuid4().hex[:10]}@example.com"
    new = f"new-{uuid.uuid4().hex[:10]}@example.com"
    created = user_created(user_id, email=old, full_name="Grace")
    created = msgspec.structs.replace(created, occurred_at=datetime.now(UTC) - timedelta(minutes=1))
    await bus.publish(user_updated(user_id, new, "Grace Hopper"))  # the newer event, first
    await bus.drained("users")
    await bus.publish(created)
    await bus.drained("users")

    [welcome] = await brevo.wait_for_emails(new)
    assert welcome["to"] == [{"email": new, "name": "Grace Hopper"}]
    assert brevo.emails_to(old) == []
    recipient = await db.fetchrow(
        "select email, full_name from xtyl_notify.recipients where user_id = $1", user_id
    )
    assert recipient is not None
    assert (recipient["email"], recipient["full_name"]) == (new, "Grace Hopper")


@pytest.mark.timeout(180)
async def test_erasure_cancels_what_waits_and_leaves_no_trace_of_the_user(
    bus: Bus,
    brevo: LocalBrevo,
    db: asyncpg.Pool,
    notify_api: RunningService,
    http: aiohttp.ClientSession,
    issuer: LocalIssuer,
) -> None:
    created = user_created(full_name="Alan Turing")
    user_id = created.payload.user_id
    old = created.payload.email
    assert old is not None
    new = f"Turing.{uuid.uuid4().hex[:8]}@Example.com"
    await bus.publish(created)
    await brevo.wait_for_emails(old)
    await bus.publish(user_updated(user_id, new, "Alan M. Turing"))
    await bus.drained("users")
    token = issuer.mint(user_id=user_id, email=new)
    async with http.put(
        f"{notify_api.url}/v1/notifications/preferences",
        json={"document_ready": True, "document_failed": True},
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        assert resp.status == 200
    # the old address bounced long ago (a suppression from before hashes: the address itself)
    await db.execute(
        "insert into xtyl_notify.suppressions (address, reason) values ($1, 'hard_bounce')",
        old.lower(),
    )
    # Brevo is down for the new address: the first document email waits, retrying; the next
    # documents wait for their digest
    brevo.fail_next(503, to=new, times=10_000)
    first = document_indexed(user_id, title="Private diary.pdf")
    await bus.publish(first)
    waiting = await wait_for_status(db, f"document.indexed:{first.payload.document_id}", "retrying")
    await bus.publish_all([document_indexed(user_id), document_failed(user_id)])
    await eventually(lambda: pending_notices(db, user_id, expected=2))
    # another user's digest falls due after the one the erased user was waiting for: once it
    # is sent, the digest loop has been past that time
    control = user_created(full_name="Control")
    assert control.payload.email is not None
    await bus.publish(control)
    await brevo.wait_for_emails(control.payload.email)
    await bus.publish_all([document_indexed(control.payload.user_id) for _ in range(2)])
    await eventually(lambda: pending_notices(db, control.payload.user_id, expected=1))
    ids = [
        r["id"]
        for r in await db.fetch("select id from xtyl_notify.emails where user_id = $1", user_id)
    ]
    assert len(ids) == 2  # the welcome email and the one waiting

    await bus.publish(user_deleted(user_id))
    await bus.drained("users", timeout_s=30)
    brevo.failures.clear()
    await bus.drained("documents", timeout_s=30)  # the waiting email's entry gave up on it

    # nothing of the user is left, but the ledger's row
    assert await traces(db, str(user_id), old, new) == {}
    ledger = await db.fetch("select * from xtyl_notify.erasures where user_id = $1", user_id)
    assert len(ledger) == 1
    assert ledger[0]["completed_at"] is not None
    # the log keeps its rows for the counts: anonymous, the address as its hash
    rows = await db.fetch(
        "select id, user_id, to_address, to_name, subject, html_body, text_body, status,"
        " dedupe_key, headers from xtyl_notify.emails where id = any($1) order by created_at",
        ids,
    )
    assert [r["status"] for r in rows] == ["sent", "cancelled"]
    assert [r["id"] for r in rows if r["status"] == "cancelled"] == [waiting["id"]]
    assert {r["to_address"] for r in rows} == {address_hash(old), address_hash(new)}
    for r in rows:
        assert (r["user_id"], r["to_name"]) == (None, None)
        assert (r["subject"], r["html_body"], r["text_body"], r["headers"]) == ("", "", "", "{}")
        assert r["dedupe_key"] == f"erased:{r['id']}"
    # the cancelled email never left, nor did the digest that waited
    await brevo.wait_for_emails(control.payload.email, 3, timeout_s=30)
    assert 201 not in brevo.requests_to(new)
    assert brevo.emails_to(new) == []
    # Brevo was asked to forget both addresses: the welcome it had sent to the old one is gone
    assert sorted(brevo.deleted_logs()).count(old.lower()) == 1
    assert new.lower() in brevo.deleted_logs()
    assert brevo.emails_to(old) == []
    # the bounced address stays suppressed, as its hash
    assert (
        await db.fetchval(
            "select reason from xtyl_notify.suppressions where address = $1", address_hash(old)
        )
        == "hard_bounce"
    )

    async with http.get(
        f"{notify_api.url}/internal/me/erasure", headers=on_behalf(user_id)
    ) as resp:
        assert resp.status == 200, await resp.text()
        state: dict[str, Any] = await resp.json()
    assert state["status"] == "erased"
    assert state["erased"] == {
        "emails_cancelled": 1,
        "emails_anonymised": 2,
        "suppressions_hashed": 1,
        "recipients": 1,
        "preferences": 1,
        "document_notices": 3,
        "brevo_logs_deleted": 2,
        "brevo_logs_refused": 0,
    }

    # a second user.deleted: nothing more; late events of the user: nothing comes back
    mails_before = len(brevo.emails)
    await bus.publish_all(
        [
            user_deleted(user_id),
            created,
            user_updated(user_id, new, "Alan"),
        ]
    )
    await bus.publish(document_indexed(user_id))
    await bus.drained("users")
    await bus.drained("documents")
    again = await db.fetchrow("select * from xtyl_notify.erasures where user_id = $1", user_id)
    assert again == ledger[0]
    assert await traces(db, str(user_id), old, new) == {}
    assert len(brevo.emails) == mails_before
    async with http.put(
        f"{notify_api.url}/v1/notifications/preferences",
        json={"document_ready": False, "document_failed": False},
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        assert resp.status == 403
        assert (await resp.json())["code"] == "account_deleted"
    link = UnsubscribeLinks([UNSUBSCRIBE_SECRET], PUBLIC_API_URL).token(user_id, ["document_ready"])
    async with http.post(
        f"{notify_api.url}/v1/notifications/unsubscribe",
        params={"token": link},
        data=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ) as resp:
        assert resp.status == 200  # an old email's link still answers; nothing is stored
    assert await traces(db, str(user_id)) == {}

    # someone signing up again with the bounced address is still not written to
    again_created = user_created(email=old)
    await bus.publish(again_created)
    row = await wait_for_status(db, f"user.created:{again_created.payload.user_id}", "suppressed")
    assert row["last_error"] == "suppressed: hard_bounce"


async def pending_notices(db: asyncpg.Pool, user_id: uuid.UUID, *, expected: int) -> bool:
    count = await db.fetchval(
        "select count(*) from xtyl_notify.document_notices"
        " where user_id = $1 and status = 'pending'",
        user_id,
    )
    return count == expected


async def test_export_is_everything_notify_holds_about_the_caller_only(
    bus: Bus,
    brevo: LocalBrevo,
    db: asyncpg.Pool,
    notify_api: RunningService,
    http: aiohttp.ClientSession,
    issuer: LocalIssuer,
) -> None:
    alice, bob = user_created(full_name="Alice"), user_created(full_name="Bob")
    assert alice.payload.email is not None
    assert bob.payload.email is not None
    user_id = alice.payload.user_id
    await bus.publish_all([alice, bob])
    await brevo.wait_for_emails(alice.payload.email)
    await brevo.wait_for_emails(bob.payload.email)
    # a long history: more emails than one page of the export
    await db.execute(
        "insert into xtyl_notify.emails (id, user_id, kind, to_address, subject, html_body,"
        " text_body, dedupe_key, status, brevo_message_id, created_at, sent_at)"
        " select gen_random_uuid(), $1, 'document_ready', $2, 'Old ' || i, '<p>x</p>',"
        " 'Old email ' || i, 'test:' || gen_random_uuid(), 'sent', '<m>',"
        " now() - make_interval(days => i), now() - make_interval(days => i)"
        " from generate_series(1, 120) i",
        user_id,
        alice.payload.email,
    )
    # document events kept for her document emails (more than a page), and one of Bob's
    await db.execute(
        "insert into xtyl_notify.document_notices"
        " (user_id, document_id, kind, title, reason, occurred_at, status)"
        " select $1, gen_random_uuid(), k, 'Doc ' || i,"
        " case when k = 'document_failed' then 'encrypted' end, now(),"
        " (array['pending', 'emailed', 'dropped'])[1 + i % 3]"
        " from generate_series(1, 35) i, unnest(array['document_ready', 'document_failed']) k",
        user_id,
    )
    await db.execute(
        "insert into xtyl_notify.document_notices (user_id, document_id, kind, title,"
        " occurred_at) values ($1, gen_random_uuid(), 'document_ready', 'Bob''s doc', now())",
        bob.payload.user_id,
    )
    token = issuer.mint(user_id=user_id, email=alice.payload.email)
    async with http.put(
        f"{notify_api.url}/v1/notifications/preferences",
        json={"document_ready": False, "document_failed": True},
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        assert resp.status == 200

    async with http.get(f"{notify_api.url}/internal/me/export", headers=on_behalf(user_id)) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "application/x-ndjson"
        lines = [msgspec.json.decode(line) for line in (await resp.read()).splitlines()]
    recipient, preferences, *rest = lines
    emails = [line for line in rest if line["record"] == "email"]
    notices = rest[len(emails) :]
    assert rest[: len(emails)] == emails  # the emails, then the notices
    assert recipient["record"] == "recipient"
    assert (recipient["email"], recipient["full_name"]) == (alice.payload.email, "Alice")
    assert preferences["record"] == "preferences"
    assert (preferences["document_ready"], preferences["document_failed"]) == (False, True)
    assert len(emails) == 121
    assert {e["record"] for e in emails} == {"email"}
    assert len({e["id"] for e in emails}) == 121
    assert emails[0]["subject"] == "Welcome to xtyl"  # newest first
    assert [e["subject"] for e in emails[1:4]] == ["Old 1", "Old 2", "Old 3"]
    assert {e["to_address"] for e in emails} == {alice.payload.email}
    assert set(emails[0]) == {
        "record",
        "id",
        "kind",
        "subject",
        "status",
        "created_at",
        "sent_at",
        "to_address",
        "text_body",
    }
    assert emails[0]["text_body"].startswith("Hi Alice,")
    assert len(notices) == 70
    assert {n["record"] for n in notices} == {"document_notice"}
    assert len({(n["document_id"], n["kind"]) for n in notices}) == 70
    assert sorted(n["title"] for n in notices if n["kind"] == "document_failed") == sorted(
        f"Doc {i}" for i in range(1, 36)
    )
    assert {n["status"] for n in notices} == {"pending", "emailed", "dropped"}
    assert {n["reason"] for n in notices if n["kind"] == "document_failed"} == {"encrypted"}
    assert set(notices[0]) == {
        "record",
        "document_id",
        "kind",
        "title",
        "reason",
        "occurred_at",
        "status",
    }

    # only the gateway's token naming a user: not a user's own token, not one naming nobody
    async with http.get(
        f"{notify_api.url}/internal/me/export", headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        assert resp.status == 401
    nobody = issue_service_token(TEST_INTERNAL_SECRET, service="gateway")
    async with http.get(
        f"{notify_api.url}/internal/me/erasure", headers={"Authorization": f"Bearer {nobody}"}
    ) as resp:
        assert resp.status == 403
        assert (await resp.json())["code"] == "user_required"
    async with http.get(
        f"{notify_api.url}/internal/me/erasure", headers=on_behalf(user_id)
    ) as resp:
        assert (await resp.json())["status"] == "none"


# --- in process: the erasure's waits and resumption -------------------------------------------


@pytest.fixture(scope="module")
async def service(notify_env: dict[str, str]) -> AsyncIterator[NotifyService]:
    settings = load_settings(NotifySettings, environ={**notify_env, "ERASURE_BATCH_SIZE": "2"})
    async with open_service(settings) as opened:
        await warm_pool(opened)
        yield opened


def an_email(user_id: uuid.UUID, address: str) -> NewEmail:
    return NewEmail(
        kind=EmailKind.WELCOME,
        dedupe_key=f"test:{uuid.uuid4()}",
        user_id=user_id,
        to_address=address,
        to_name="Kurt",
        content=RenderedEmail(subject="Hi", html="<p>Hi</p>", text="Hi"),
    )


async def test_an_erasure_waits_for_an_email_being_sent_and_one_cut_short_finishes(
    service: NotifyService, brevo: LocalBrevo, db: asyncpg.Pool
) -> None:
    user_id = uuid.uuid4()
    address = f"{uuid.uuid4().hex[:10]}@example.com"
    repo, accounts = service.repository, service.accounts
    emails = [await repo.log_email(an_email(user_id, address)) for _ in range(5)]
    # a worker is sending the first one right now (it holds its lease)
    assert await repo.claim(emails[0].id, lease_s=30) is not None
    requested = datetime.now(UTC)

    with pytest.raises(EmailInFlight) as waiting:
        await accounts.erase_user(user_id, requested_at=requested)
    assert 0 < (waiting.value.retry_after_s or 0) <= 1.0
    # from now on nothing new is written for the user, and the others can never be sent
    with pytest.raises(AccountDeleted):
        await repo.log_email(an_email(user_id, address))
    assert [await repo.claim(e.id, lease_s=30) for e in emails[1:]] == [None] * 4
    # the send in flight ends: Brevo took it
    await repo.mark_sent(emails[0].id, "<sent@brevo>")

    # the next run is killed after one batch of the log; the one after finishes
    assert await repo_cancel_then_one_batch(service, user_id) == 2
    await accounts.erase_user(user_id, requested_at=requested)

    state = await accounts.erasure_state(user_id)
    assert state.status == "erased"
    assert state.attempts == 3
    assert state.erased["emails_cancelled"] == 4
    assert state.erased["emails_anonymised"] == 5
    statuses = await db.fetch(
        "select status from xtyl_notify.emails where id = any($1)", [e.id for e in emails]
    )
    assert sorted(r["status"] for r in statuses) == ["cancelled"] * 4 + ["sent"]
    assert await traces(db, str(user_id), address) == {}
    await accounts.erase_user(user_id, requested_at=requested)  # once more: nothing to do
    assert (await accounts.erasure_state(user_id)).attempts == 3
    assert brevo.emails_to(address) == []


async def repo_cancel_then_one_batch(service: NotifyService, user_id: uuid.UUID) -> int:
    """What a run killed after its first batch of the log did."""
    repo = service.accounts.repository
    assert await repo.begin_erasure(user_id, requested_at=datetime.now(UTC))
    await repo.cancel_open_emails(user_id)
    return await repo.anonymise_emails(user_id, service.addresses.hash, batch_size=2)


async def test_brevo_down_holds_the_erasure_until_its_logs_are_deleted(
    service: NotifyService, brevo: LocalBrevo, db: asyncpg.Pool
) -> None:
    user_id = uuid.uuid4()
    address = f"{uuid.uuid4().hex[:10]}@Example.com"
    repo, accounts = service.repository, service.accounts
    email = await repo.log_email(an_email(user_id, address))
    await repo.mark_sent(email.id, "<sent@brevo>")
    requested = datetime.now(UTC)
    brevo.fail_next_log_deletion(503, times=2, to=address)

    for _ in range(2):  # Brevo down: the erasure waits, the address is still known here
        with pytest.raises(BrevoUnavailable):
            await accounts.erase_user(user_id, requested_at=requested)
        assert (await accounts.erasure_state(user_id)).status == "erasing"
        assert await repo_addresses(service, user_id) == {address}
    await accounts.erase_user(user_id, requested_at=requested)  # Brevo is back

    assert [s for s, i in brevo.log_deletions if i == address.lower()] == [503, 503, 204]
    state = await accounts.erasure_state(user_id)
    assert state.status == "erased"
    assert (state.erased["brevo_logs_deleted"], state.erased["brevo_logs_refused"]) == (1, 0)
    assert await traces(db, str(user_id), address) == {}


async def test_brevo_refusing_the_log_deletion_is_recorded_and_the_erasure_finishes(
    service: NotifyService, brevo: LocalBrevo, db: asyncpg.Pool
) -> None:
    user_id = uuid.uuid4()
    address = f"{uuid.uuid4().hex[:10]}@example.com"
    await service.repository.log_email(an_email(user_id, address))
    brevo.fail_next_log_deletion(401, to=address, code="unauthorized")  # a bad key

    await service.accounts.erase_user(user_id, requested_at=datetime.now(UTC))

    state = await service.accounts.erasure_state(user_id)
    assert state.status == "erased"
    assert (state.erased["brevo_logs_deleted"], state.erased["brevo_logs_refused"]) == (0, 1)
    assert await traces(db, str(user_id), address) == {}


async def repo_addresses(service: NotifyService, user_id: uuid.UUID) -> set[str]:
    return await service.accounts.repository.addresses_of(user_id)
