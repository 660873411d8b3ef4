"""Address checks, the sender setting's syntax, and which Brevo events suppress."""

from __future__ import annotations

import pytest

from xtyl_notify.domain.addresses import Mailbox, is_valid_email, parse_mailbox
from xtyl_notify.domain.webhooks import BrevoWebhookEvent, Suppression, suppressions_from


@pytest.mark.parametrize(
    "address", ["a@example.com", "first.last+tag@sub.example.co.uk", "x_y-z@a-b.io"]
)
def test_valid_addresses(address: str) -> None:
    assert is_valid_email(address)


@pytest.mark.parametrize(
    "address",
    [
        "",
        "plain",
        "a@b",
        "a@@b.com",
        "a b@example.com",
        ".a@example.com",
        "a..b@example.com",
        "a@-example.com",
        "a@example.123",
        "a@exa_mple.com",
        "x" * 65 + "@example.com",
        "a@" + "b" * 250 + ".com",
    ],
)
def test_invalid_addresses(address: str) -> None:
    assert not is_valid_email(address)


def test_parse_mailbox() -> None:
    assert parse_mailbox("xtyl <no-reply@xtyl.app>") == Mailbox(
        email="no-reply@xtyl.app", name="xtyl"
    )
    assert parse_mailbox("no-reply@xtyl.app") == Mailbox(email="no-reply@xtyl.app")
    assert parse_mailbox('"The  xtyl team" <team@xtyl.app>').name == "The xtyl team"
    with pytest.raises(ValueError, match="not an email address"):
        parse_mailbox("xtyl <no-reply>")


def test_hard_bounces_spam_unsubscribes_and_blocks_suppress() -> None:
    events = [
        BrevoWebhookEvent(event="hard_bounce", email=" A@Example.com "),
        BrevoWebhookEvent(event="spam", email="a@example.com"),  # same address: first wins
        BrevoWebhookEvent(event="unsubscribed", email="b@example.com"),
        BrevoWebhookEvent(event="blocked", email="c@example.com"),
        BrevoWebhookEvent(event="soft_bounce", email="d@example.com"),
        BrevoWebhookEvent(event="delivered", email="e@example.com"),
        BrevoWebhookEvent(event="hard_bounce", email="not an address"),
        BrevoWebhookEvent(event="spam"),
    ]
    assert suppressions_from(events) == [
        Suppression(address="a@example.com", reason="hard_bounce"),
        Suppression(address="b@example.com", reason="unsubscribed"),
        Suppression(address="c@example.com", reason="blocked"),
    ]
