"""Text Postgres can store, checked at the edge: anything else is 422 ``invalid_text``.

Postgres keeps ``text`` and ``jsonb`` as UTF-8 without NUL, and JSON can say both things it
cannot hold: ``\\u0000`` decodes to a NUL, which Postgres refuses (SQLSTATE 22021 in text,
22P05 in jsonb), and a lone UTF-16 surrogate such as ``\\ud800`` has no UTF-8 form at all.
msgspec refuses lone surrogates, and bytes that are not UTF-8, while it decodes (as malformed
JSON, or a bare ``UnicodeDecodeError``); the standard library's decoder keeps lone surrogates,
which is how :func:`refused_json_text` tells a body refused for its text from a broken one.

Every service's app checks its JSON bodies and query parameters with these functions before a
handler runs (``xtyl_common.web``); a handler that reads a body itself decodes it with
:func:`decode_storable_json`, or runs :func:`check_storable` on what it parsed. The error names
a field holding such text (``title``, ``metadata.tags[2]``; a member name that is not
storable is shown escaped, ``metadata.k\\u0000``). Postgres refusing text anyway is mapped to the
same problem by ``xtyl_common.web``: the safety net under this check, never a 500.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar, cast

import msgspec

from xtyl_common.errors import InvalidText

T = TypeVar("T")

#: How a NUL can appear in a JSON body msgspec accepts: raw control characters are invalid JSON.
NUL_ESCAPE = b"\\u0000"
_SURROGATES = re.compile("[\ud800-\udfff]")
#: A JSON escape of a surrogate, paired or not (``\\ud83d\\ude00`` is one emoji).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def is_storable(text: str) -> bool:
    """True when Postgres can store ``text``: no NUL, no lone surrogate."""
    return "\x00" not in text and (text.isascii() or _SURROGATES.search(text) is None)


def _member(path: str, name: str) -> str:
    if not is_storable(name):
        name = json.dumps(name)[1:-1]  # \u0000, \ud800: never echo what cannot be encoded
    return f"{path}.{name}" if path else name


def unstorable_field(value: object, at: str = "") -> str | None:
    """Where ``value`` (decoded JSON: dicts, lists, strings, numbers; or msgspec Structs, by
    their JSON names) holds a string Postgres cannot store: ``at`` for ``value`` itself,
    ``title`` or ``metadata.tags[2]`` below it; None when every string is storable."""
    stack: list[tuple[object, str]] = [(value, at)]
    while stack:  # a loop, not recursion: JSON nested 1,000 deep must not raise RecursionError
        item, path = stack.pop()
        if isinstance(item, str):
            if not is_storable(item):
                return path
        elif isinstance(item, dict):
            for name, member in cast("dict[object, object]", item).items():
                member_path = _member(path, str(name))
                if isinstance(name, str) and not is_storable(name):
                    return member_path
                stack.append((member, member_path))
        elif isinstance(item, list | tuple):
            members = cast("list[object] | tuple[object, ...]", item)
            stack.extend((member, f"{path}[{index}]") for index, member in enumerate(members))
        elif isinstance(item, msgspec.Struct):
            names = zip(item.__struct_fields__, item.__struct_encode_fields__, strict=True)
            stack.extend((getattr(item, name), _member(path, key)) for name, key in names)
    return None


def invalid_text(field: str | None, *, source: str = "body") -> InvalidText:
    """The 422 for text Postgres cannot store in ``field`` of the ``source`` (``body``,
    ``query``, ``path``; None: the request, when only Postgres noticed)."""
    where = f"`{field}`" if field else f"the {source}"
    extra: dict[str, Any] = {"source": source}
    if field:
        extra["field"] = field
    return InvalidText(
        f"{where} holds a NUL character or a lone UTF-16 surrogate, which text cannot store",
        extra=extra,
    )


def check_storable(value: object, *, at: str = "", source: str = "body") -> None:
    """Raise :class:`InvalidText` (422) naming a field of ``value`` (see
    :func:`unstorable_field`) that holds text Postgres cannot store."""
    field = unstorable_field(value, at)
    if field is not None:
        raise invalid_text(field, source=source)


def refused_json_text(body: bytes) -> InvalidText | None:
    """For a JSON body msgspec refused: the 422 when it was for its text (a lone surrogate,
    escaped or in UTF-8 form, or bytes that are not UTF-8), else None (broken JSON, which the
    caller reports as before). Only for the refusal path: it parses ``body`` once more."""
    if body.isascii() and _SURROGATE_ESCAPE.search(body) is None:
        return None  # nothing in it can be a surrogate
    try:
        field = unstorable_field(json.loads(body.decode("utf-8", "surrogatepass")))
    except (ValueError, RecursionError):  # not UTF-8 even with surrogates, or not JSON
        field = None
    if field is not None:
        return invalid_text(field)
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return InvalidText("the body is not UTF-8", extra={"source": "body"})
    return None


def decode_storable_json(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    """``decoder.decode(body)``, and 422 ``invalid_text`` (:class:`InvalidText`) when the body
    holds text Postgres cannot store. msgspec's own errors for broken JSON or a wrong shape
    pass through unchanged."""
    try:
        value = decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        refused = refused_json_text(body)  # never None for a UnicodeDecodeError
        if refused is not None:
            raise refused from exc
        raise
    if NUL_ESCAPE in body:
        check_storable(value)
    return value
