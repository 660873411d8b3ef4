from __future__ import annotations

import uuid

import pytest

from xtyl_storage.domain.names import (
    clean_display_name,
    content_disposition,
    key_slug,
    object_key,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("%2e%2e%2fsecret", "secret"),
        ("%252e%252e%252fsecret", "secret"),
        ("a\x00b.txt", "ab.txt"),
        ("a\r\nb.txt", "a b.txt"),
        ("x\u202eexe.txt", "xexe.txt"),
        ("zero\u200bwidth.txt", "zerowidth.txt"),
        ("   spaced   out  .txt  ", "spaced out .txt"),
        (".hidden", "hidden"),
        ("...", "file"),
        ("", "file"),
        (None, "file"),
        ("name.", "name"),
        ("ﬁle.txt", "file.txt"),  # NFKC
    ],
)
def test_clean_display_name(raw: str | None, expected: str) -> None:
    assert clean_display_name(raw) == expected


def test_long_names_keep_their_extension_within_255_bytes() -> None:
    cleaned = clean_display_name("é" * 600 + ".docx")
    assert cleaned.endswith(".docx")
    assert len(cleaned.encode()) <= 255
    assert cleaned.startswith("é")


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("résumé 2024.pdf", "resume-2024.pdf"),
        ("日本語.txt", "txt"),
        ("a/b", "a-b"),
        ("---", "file"),
        ("x" * 300 + ".tar", "x" * 96 + ".tar"),
    ],
)
def test_key_slug_is_plain_ascii(name: str, slug: str) -> None:
    assert key_slug(name) == slug


@pytest.mark.parametrize(
    "raw",
    ["../../x", "%2e%2e%2f", "/etc/passwd", "a\x00/../b", "\u202e../..", "..", "./.", "~/.ssh/id"],
)
def test_keys_always_stay_under_the_owner_prefix(raw: str) -> None:
    owner, file_id = uuid.uuid4(), uuid.uuid4()
    key = object_key(owner, file_id, clean_display_name(raw))
    prefix, middle, tail = key.split("/")
    assert (prefix, middle) == (str(owner), str(file_id))
    assert tail not in {"", ".", ".."}
    assert not tail.startswith(".")


def test_content_disposition_quotes_unicode() -> None:
    assert content_disposition('naïve "quote".txt') == (
        "attachment; filename=\"naive-quote-.txt\"; filename*=UTF-8''na%C3%AFve%20%22quote%22.txt"
    )
