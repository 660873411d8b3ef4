"""The email templates: escaping, greetings, links, both versions."""

from __future__ import annotations

import uuid

import pytest

from xtyl_notify.domain.templates import (
    GENERIC_FAILURE,
    document_failed_email,
    document_ready_email,
    welcome_email,
)

APP = "https://app.example.test/"


def test_welcome_uses_the_name_and_escapes_it_in_html() -> None:
    email = welcome_email(full_name='  Zoë "<b>" & co\n', app_url=APP)
    assert email.subject == "Welcome to xtyl"
    assert "Hi Zoë &quot;&lt;b&gt;&quot; &amp; co," in email.html
    assert "<b>" not in email.html
    assert email.text.startswith('Hi Zoë "<b>" & co,\n')
    assert 'href="https://app.example.test/"' in email.html
    assert "Open xtyl: https://app.example.test/" in email.text
    assert email.tags == ("welcome",)


@pytest.mark.parametrize("name", [None, "", "   ", "\x00\x07"])
def test_welcome_without_a_usable_name_greets_neutrally(name: str | None) -> None:
    email = welcome_email(full_name=name, app_url=APP)
    assert email.text.startswith("Hello,\n")
    assert "Hello," in email.html


def test_document_ready_escapes_the_title_and_links_the_document() -> None:
    document_id = uuid.uuid4()
    email = document_ready_email(
        full_name=None,
        title="<img src=x onerror=alert(1)>.pdf",
        document_id=document_id,
        app_url=APP,
    )
    assert email.subject == "Your document is ready: <img src=x onerror=alert(1)>.pdf"
    assert "<img" not in email.html
    assert "&lt;img src=x onerror=alert(1)&gt;.pdf" in email.html
    assert f"https://app.example.test/documents/{document_id}" in email.text
    assert f'href="https://app.example.test/documents/{document_id}"' in email.html


def test_document_ready_shortens_long_titles_and_names_untitled_ones() -> None:
    long = document_ready_email(
        full_name=None, title="x" * 500, document_id=uuid.uuid4(), app_url=APP
    )
    assert len(long.subject) < 240
    assert long.subject.endswith("…")
    untitled = document_ready_email(
        full_name=None, title="  ", document_id=uuid.uuid4(), app_url=APP
    )
    assert untitled.subject == "Your document is ready: Your document"


def test_document_failed_explains_known_reasons_only() -> None:
    known = document_failed_email(
        full_name="Ann", reason="encrypted", document_id=uuid.uuid4(), app_url=APP
    )
    assert known.subject == "We could not process your document"
    assert "password-protected" in known.text
    unknown = document_failed_email(
        full_name="Ann",
        reason="<script>internal stack trace</script>",
        document_id=uuid.uuid4(),
        app_url=APP,
    )
    assert GENERIC_FAILURE in unknown.text
    assert "internal stack trace" not in unknown.text + unknown.html
