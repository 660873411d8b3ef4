"""Text Postgres cannot store is found wherever it sits in a decoded body, and named."""

from __future__ import annotations

import msgspec
import pytest

from xtyl_common.errors import InvalidText
from xtyl_common.text import (
    check_storable,
    decode_storable_json,
    is_storable,
    refused_json_text,
    unstorable_field,
)


class Event(msgspec.Struct, rename={"message_id": "message-id"}):
    event: str
    message_id: str | None = None
    tags: list[str] | None = None


@pytest.mark.parametrize(
    ("text", "storable"),
    [
        ("", True),
        ("plain ascii", True),
        ("résumé 😀 \u2028 \t\r\n\x01\x7f", True),
        ("a\x00b", False),
        ("\x00", False),
        ("a\ud800", False),
        ("\udc00b", False),
        ("é\ud83d", False),
    ],
)
def test_is_storable(text: str, storable: bool) -> None:
    assert is_storable(text) is storable


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"title": "ok", "metadata": {"a": ["x", 1, None, {"b": True}]}}, None),
        ({"title": "a\x00b"}, "title"),
        ({"title": "ok", "metadata": {"tags": ["x", "y", "\ud800"]}}, "metadata.tags[2]"),
        ({"metadata": {"k\x00": "v"}}, "metadata.k\\u0000"),
        ({"metadata": {"\udc00": 1}}, "metadata.\\udc00"),
        (["ok", {"deep": [[["\x00"]]]}], "[1].deep[0][0][0]"),
        ("\x00", ""),
        (42, None),
    ],
)
def test_unstorable_field_names_where_it_is(value: object, field: str | None) -> None:
    assert unstorable_field(value) == field


def test_structs_are_walked_by_their_json_names() -> None:
    assert unstorable_field(Event(event="spam", message_id="<\x00>")) == "message-id"
    assert unstorable_field([Event(event="x", tags=["a", "b\ud800"])]) == "[0].tags[1]"
    assert unstorable_field(Event(event="fine", tags=["a"])) is None


def test_deep_nesting_does_not_recurse() -> None:
    value: object = "\x00"
    for _ in range(5_000):
        value = [value]
    assert unstorable_field(value) == "[0]" * 5_000


def test_check_storable_raises_a_422_naming_the_field() -> None:
    check_storable({"q": "fine"}, source="query")
    with pytest.raises(InvalidText) as caught:
        check_storable({"filename": "a\x00"}, source="query")
    problem = caught.value.to_problem()
    assert problem["status"] == 422
    assert problem["code"] == "invalid_text"
    assert problem["field"] == "filename"
    assert problem["source"] == "query"
    assert "`filename`" in problem["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"title":"a\\ud800b"}', "title"),  # msgspec: "unexpected end of ... surrogate pair"
        (b'{"title":"x","text":"\\udc00"}', "text"),  # a low surrogate alone
        (b'{"query":"x\\ud800"}', "query"),  # msgspec: "Input data was truncated"
        (b'{"m":{"\\ud800":1}}', "m.\\ud800"),
        (b'{"title":"a\xed\xa0\x80b"}', "title"),  # the surrogate in UTF-8 form (CESU-8)
    ],
)
def test_a_body_refused_for_a_lone_surrogate_is_invalid_text(body: bytes, field: str) -> None:
    with pytest.raises((msgspec.DecodeError, UnicodeDecodeError)):
        msgspec.json.decode(body)
    refused = refused_json_text(body)
    assert refused is not None
    assert refused.code == "invalid_text"
    assert refused.extra["field"] == field


def test_a_body_that_is_not_utf8_is_invalid_text() -> None:
    refused = refused_json_text(b'{"title":"a\xffb"}')
    assert refused is not None
    assert refused.code == "invalid_text"
    assert refused.detail == "the body is not UTF-8"


@pytest.mark.parametrize(
    "body",
    [b"{", b'{"a":}', b'{"emoji":"\\ud83d\\ude00"', b'{"a":"\\u0000"', b"[" * 100_000],
)
def test_broken_json_is_left_to_the_caller(body: bytes) -> None:
    assert refused_json_text(body) is None


def test_decode_storable_json() -> None:
    decoder = msgspec.json.Decoder(Event | list[Event])
    assert decode_storable_json(decoder, b'{"event":"a","message-id":"\\\\u0000"}') == Event(
        event="a", message_id="\\u0000"
    )
    for body, field in [
        (b'{"event":"a","message-id":"\\u0000"}', "message-id"),
        (b'[{"event":"a"},{"event":"b","tags":["\\ud800"]}]', "[1].tags[0]"),
    ]:
        with pytest.raises(InvalidText) as caught:
            decode_storable_json(decoder, body)
        assert caught.value.extra["field"] == field
    with pytest.raises(InvalidText):
        decode_storable_json(decoder, b'{"event":"\xff"}')
    with pytest.raises(msgspec.ValidationError):
        decode_storable_json(decoder, b'{"event":1}')
    with pytest.raises(msgspec.DecodeError):
        decode_storable_json(decoder, b'{"event":')
