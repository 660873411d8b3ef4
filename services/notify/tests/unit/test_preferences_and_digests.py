"""Unsubscribe links, address hashes, preferences and the digest email: pure rules."""

from __future__ import annotations

import uuid

import jwt
import pytest

from xtyl_notify.domain.addresses import AddressHasher
from xtyl_notify.domain.preferences import (
    Preferences,
    UnsubscribeLinkInvalid,
    UnsubscribeLinks,
)
from xtyl_notify.domain.templates import MAX_DIGEST_ITEMS, DigestItem, document_digest_email

SECRET = "s" * 40
OLD_SECRET = "o" * 40
API = "https://api.example.test/"
APP = "https://app.example.test"


def test_a_link_names_its_user_and_kinds_and_is_the_same_every_time() -> None:
    links = UnsubscribeLinks([SECRET], API)
    user_id = uuid.uuid4()
    url = links.url(user_id, ["document_ready"])
    assert url.startswith("https://api.example.test/v1/notifications/unsubscribe?token=")
    assert url == links.url(user_id, ["document_ready"])  # body and header carry one link
    token = url.partition("token=")[2]
    asked = links.verify(token)
    assert (asked.user_id, asked.kinds) == (user_id, ("document_ready",))
    both = links.verify(links.token(user_id, ["document_ready", "document_failed"]))
    assert both.kinds == ("document_failed", "document_ready")
    headers = links.headers(user_id, ["document_failed"])
    assert headers["List-Unsubscribe"].startswith("<https://api.example.test/")
    assert headers["List-Unsubscribe"].endswith(">")
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_links_keep_working_while_the_secret_rotates() -> None:
    user_id = uuid.uuid4()
    old = UnsubscribeLinks([OLD_SECRET], API).token(user_id, ["document_ready"])
    rotating = UnsubscribeLinks([SECRET, OLD_SECRET], API)
    assert rotating.verify(old).user_id == user_id
    assert rotating.token(user_id, ["document_ready"]) != old  # the new secret signs
    with pytest.raises(UnsubscribeLinkInvalid):
        UnsubscribeLinks([SECRET], API).verify(old)


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "xtyl-internal"},
        {"iss": "someone"},
        {"sub": "not-a-uuid"},
        {"kinds": []},
        {"kinds": ["welcome"]},
        {"kinds": "document_ready"},
    ],
)
def test_a_link_with_other_claims_is_refused(claims: dict[str, object]) -> None:
    good = {
        "iss": "xtyl-notify",
        "aud": "xtyl:unsubscribe",
        "sub": str(uuid.uuid4()),
        "kinds": ["document_ready"],
    }
    token = jwt.encode({**good, **claims}, SECRET, algorithm="HS256")
    with pytest.raises(UnsubscribeLinkInvalid) as refused:
        UnsubscribeLinks([SECRET], API).verify(token)
    assert refused.value.code == "unsubscribe_link_invalid"
    assert refused.value.status == 403


def test_preferences_turn_kinds_off_and_never_transactional_ones() -> None:
    wanted = Preferences().without(["document_ready"])
    assert (wanted.wants("document_ready"), wanted.wants("document_failed")) == (False, True)
    assert wanted.wants("welcome")
    assert wanted.without(["document_ready"]) == wanted
    assert wanted.without(["document_failed"]) == Preferences(
        document_ready=False, document_failed=False
    )


def test_address_hashes_are_keyed_and_ignore_case() -> None:
    hasher = AddressHasher("p" * 32)
    one = hasher.hash(" Ada@Example.COM ")
    assert one == hasher.hash("ada@example.com")
    assert one.startswith("sha256:")
    assert len(one) == len("sha256:") + 64
    assert "ada" not in one
    assert AddressHasher("q" * 32).hash("ada@example.com") != one  # no pepper, no match
    assert hasher.suppression_keys("Ada@Example.com") == [one, "ada@example.com"]


def test_the_digest_lists_every_document_ready_first_and_escapes_titles() -> None:
    ready = DigestItem(document_id=uuid.uuid4(), ready=True, title="<b>Q3</b>.pdf")
    failed = DigestItem(document_id=uuid.uuid4(), ready=False, reason="encrypted")
    unknown = DigestItem(document_id=uuid.uuid4(), ready=False, reason="who-knows")
    email = document_digest_email(
        full_name="Ada",
        items=[failed, ready, unknown],
        app_url=APP,
        unsubscribe_url="https://api.example.test/v1/notifications/unsubscribe?token=t",
    )
    assert email.subject == (
        "Your documents: 1 document is ready, 2 documents could not be processed"
    )
    assert email.tags == ("document_digest",)
    text = email.text
    assert text.startswith("Hi Ada,")
    assert text.index(str(ready.document_id)) < text.index(str(failed.document_id))
    assert "password-protected" in text
    assert "Something went wrong on our side" in text
    assert "&lt;b&gt;Q3&lt;/b&gt;.pdf" in email.html
    assert "<b>Q3" not in email.html
    for body in (email.text, email.html):
        assert "https://api.example.test/v1/notifications/unsubscribe?token=t" in body
        assert "Stop these emails" in body


def test_a_huge_digest_says_how_many_more() -> None:
    items = [
        DigestItem(document_id=uuid.uuid4(), ready=True, title=f"D{i}")
        for i in range(MAX_DIGEST_ITEMS + 5)
    ]
    email = document_digest_email(full_name=None, items=items, app_url=APP)
    assert email.subject == f"Your documents: {MAX_DIGEST_ITEMS + 5} documents are ready"
    assert "- and 5 more" in email.text
    assert str(items[-1].document_id) not in email.text
    assert "Stop these emails" not in email.text  # no link given, no footer
