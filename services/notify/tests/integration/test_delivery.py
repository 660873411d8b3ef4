"""The send path in-process over the real Postgres and the Brevo stand-in: concurrent copies of
an event, a worker that died holding an email, and the Brevo client's error mapping."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from xtyl_common.errors import ClientError, Unavailable
from xtyl_common.metrics import exposition
from xtyl_common.settings import load_settings
from xtyl_devstack.brevo import LocalBrevo
from xtyl_devstack.ports import free_port
from xtyl_devstack.scrape import sample
from xtyl_notify.adapters.brevo import BrevoClient, BrevoRejected, BrevoUnavailable
from xtyl_notify.domain.addresses import Mailbox
from xtyl_notify.domain.emails import EmailKind, EmailStatus, NewEmail, RenderedEmail
from xtyl_notify.domain.webhooks import BrevoWebhookEvent
from xtyl_notify.service import EmailInFlight, NotifyService, open_service
from xtyl_notify.service.sending import Sender
from xtyl_notify.settings import NotifySettings

from .conftest import warm_pool

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
async def service(notify_env: dict[str, str]) -> AsyncIterator[NotifyService]:
    async with open_service(load_settings(NotifySettings, environ=notify_env)) as opened:
        await warm_pool(opened)
        yield opened


def new_email(address: str) -> NewEmail:
    return NewEmail(
        kind=EmailKind.WELCOME,
        dedupe_key=f"test:{uuid.uuid4()}",
        user_id=uuid.uuid4(),
        to_address=address,
        to_name=None,
        content=RenderedEmail(subject="Hi", html="<p>Hi</p>", text="Hi", tags=("test",)),
    )


def unique_address() -> str:
    return f"{uuid.uuid4().hex[:12]}@example.com"


async def test_concurrent_copies_of_an_event_send_one_email(
    service: NotifyService, brevo: LocalBrevo
) -> None:
    address = unique_address()
    email = new_email(address)
    outcomes = await asyncio.gather(
        *(service.deliver(email) for _ in range(5)), return_exceptions=True
    )
    assert all(o is EmailStatus.SENT or isinstance(o, EmailInFlight) for o in outcomes), outcomes
    assert brevo.requests_to(address) == [201]
    assert await service.deliver(email) is EmailStatus.SENT  # a later copy: nothing more
    assert len(brevo.emails_to(address)) == 1


async def test_an_email_held_by_a_dead_worker_is_sent_once_its_lease_ends(
    service: NotifyService, brevo: LocalBrevo
) -> None:
    address = unique_address()
    email = new_email(address)
    repository = service.repository
    short_lease = Sender(repository, service.brevo, lease_s=0.3, addresses=service.addresses)
    record = await repository.log_email(email)
    # The dead worker claimed it and Brevo accepted its send; then it died before recording it.
    assert await repository.claim(record.id, lease_s=0.3) is not None
    first_id = await service.brevo.send(
        email_id=record.id, to=Mailbox(email=address), subject="Hi", html="<p>Hi</p>", text="Hi"
    )
    with pytest.raises(EmailInFlight):
        await short_lease.deliver(email)
    await asyncio.sleep(0.4)

    assert await short_lease.deliver(email) is EmailStatus.SENT
    assert len(brevo.emails_to(address)) == 1  # Brevo's idempotency key: the same send
    sent = await repository.get(record.id)
    assert sent is not None
    assert sent.brevo_message_id == first_id
    assert sent.attempts == 2


async def test_each_attempt_is_counted_by_kind_and_outcome(
    service: NotifyService, brevo: LocalBrevo
) -> None:
    """What the worker's /metrics shows (the service in process: this process's registry)."""
    emails, suppressions = "xtyl_notify_emails_total", "xtyl_notify_suppressions_total"
    before = exposition()[0].decode()
    flaky, refusing, dying, bouncing = (unique_address() for _ in range(4))

    brevo.fail_next(503, to=flaky)
    email = new_email(flaky)
    with pytest.raises(BrevoUnavailable):
        await service.deliver(email)  # retry
    assert await service.deliver(email) is EmailStatus.SENT  # sent
    assert await service.deliver(email) is EmailStatus.SENT  # duplicate
    brevo.fail_next(400, to=refusing)
    with pytest.raises(BrevoRejected):
        await service.deliver(new_email(refusing))  # failed
    brevo.fail_next(503, to=dying)
    with pytest.raises(BrevoUnavailable):
        await service.deliver(new_email(dying), final_attempt=True)  # failed
    bounce = BrevoWebhookEvent(event="hard_bounce", email=bouncing)
    assert await service.suppress([bounce]) == 1
    assert await service.suppress([bounce]) == 0  # known already: not counted again
    assert await service.deliver(new_email(bouncing)) is EmailStatus.SUPPRESSED

    after = exposition()[0].decode()

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    welcome = {"kind": EmailKind.WELCOME.value}
    assert {
        outcome: moved(emails, **welcome, outcome=outcome)
        for outcome in ("sent", "failed", "retry", "suppressed", "duplicate", "skipped")
    } == {"sent": 1, "failed": 2, "retry": 1, "suppressed": 1, "duplicate": 1, "skipped": 0}
    assert moved(suppressions, reason="hard_bounce") == 1
    # every kind's outcomes and every reason are served from the start
    for kind in EmailKind:
        assert f'{emails}{{kind="{kind.value}",outcome="sent"}}' in after
    for reason in ("hard_bounce", "spam", "unsubscribed", "blocked", "invalid_email"):
        assert f'{suppressions}{{reason="{reason}"}}' in after


async def test_brevo_client_maps_errors(brevo: LocalBrevo) -> None:
    sender = Mailbox(email="no-reply@xtyl.test", name="xtyl")
    to = Mailbox(email=unique_address())
    async with aiohttp.ClientSession() as session:

        def client(url: str, key: str = "test-brevo-api-key") -> BrevoClient:
            return BrevoClient(session, base_url=url, api_key=key, sender=sender, timeout_s=2.0)

        async def send(target: BrevoClient) -> str:
            return await target.send(
                email_id=uuid.uuid4(), to=to, subject="s", html="<p>h</p>", text="t"
            )

        with pytest.raises(BrevoRejected) as rejected:
            await send(client(brevo.url, key="wrong"))
        assert (rejected.value.upstream_status, rejected.value.code) == (401, "unauthorized")
        assert isinstance(rejected.value, ClientError)  # permanent: dead-lettered at once

        brevo.fail_next(500, to=to.email)
        with pytest.raises(BrevoUnavailable) as failing:
            await send(client(brevo.url))
        assert (failing.value.upstream_status, failing.value.retry_after_s) == (500, None)
        assert isinstance(failing.value, Unavailable)  # transient: retried up to the horizon

        brevo.fail_next(429, to=to.email)
        with pytest.raises(BrevoUnavailable) as limited:
            await send(client(brevo.url))
        assert (limited.value.code, limited.value.retry_after_s) == ("too_many_requests", 1.0)

        with pytest.raises(BrevoUnavailable) as unreachable:
            await send(client(f"http://127.0.0.1:{free_port()}"))
        assert unreachable.value.code == "unreachable"

        message_id = await send(client(brevo.url))
        assert message_id.startswith("<")
        assert message_id.endswith("@smtp-relay.mailin.fr>")
