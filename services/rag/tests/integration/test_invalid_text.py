"""Text Postgres cannot store (NUL, lone UTF-16 surrogates, bytes that are not UTF-8), sent as
raw JSON to a real rag process: 422 ``invalid_text`` naming the field, and nothing stored."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from xtyl_devstack.service_process import RunningService

from .conftest import User

pytestmark = pytest.mark.integration

JSON = {"Content-Type": "application/json"}


async def post_raw(
    http: aiohttp.ClientSession, rag: RunningService, user: User, path: str, body: bytes
) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{rag.url}{path}", data=body, headers={**user.headers, **JSON}) as r:
        assert r.headers["Content-Type"] == "application/problem+json", await r.text()
        return r.status, await r.json()


async def documents_of(http: aiohttp.ClientSession, rag: RunningService, user: User) -> list[Any]:
    async with http.get(f"{rag.url}/v1/documents", headers=user.headers) as r:
        assert r.status == 200, await r.text()
        items: list[Any] = (await r.json())["items"]
        return items


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"title":"a\\u0000b","text":"hello"}', "title"),
        (b'{"title":"t","text":"hel\\u0000lo"}', "text"),
        (b'{"title":"t","text":"hello","metadata":{"k\\u0000":"v"}}', "metadata.k\\u0000"),
        (b'{"title":"t","text":"hello","metadata":{"k":["v","\\u0000"]}}', "metadata.k[1]"),
        (b'{"title":"a\\ud800b","text":"hello"}', "title"),
        (b'{"title":"t","text":"hello \\udc00"}', "text"),
        (b'{"title":"t","text":"x","metadata":{"k":"\\ud800"}}', "metadata.k"),
        (b'{"title":"a\xed\xa0\x80b","text":"hello"}', "title"),  # a surrogate in UTF-8 form
        (b'{"title":"a\xffb","text":"hello"}', None),  # not UTF-8 at all
        (b'{"file_id":"00000000-0000-4000-8000-000000000000","title":"\\u0000"}', "title"),
    ],
)
async def test_a_document_with_unstorable_text_is_422_and_nothing_is_stored(
    http: aiohttp.ClientSession,
    rag_service: RunningService,
    make_user: Callable[[], User],
    body: bytes,
    field: str | None,
) -> None:
    user = make_user()
    status, problem = await post_raw(http, rag_service, user, "/v1/documents", body)
    assert status == 422, problem
    assert problem["code"] == "invalid_text"
    assert problem.get("field") == field
    assert await documents_of(http, rag_service, user) == []


@pytest.mark.parametrize("path", ["/v1/search", "/v1/answer"])
@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"query":"bread","metadata":{"a":"\\u0000"}}', "metadata.a"),
        (b'{"query":"bread","metadata":{"\\u0000":"a"}}', "metadata.\\u0000"),
        (b'{"query":"bre\\u0000ad"}', "query"),
        (b'{"query":"bread\\ud800"}', "query"),
        (b'{"query":"bread","metadata":{"a":{"b":"\\udfff"}}}', "metadata.a.b"),
    ],
)
async def test_search_and_answer_refuse_unstorable_text(
    http: aiohttp.ClientSession,
    rag_service: RunningService,
    make_user: Callable[[], User],
    path: str,
    body: bytes,
    field: str,
) -> None:
    status, problem = await post_raw(http, rag_service, make_user(), path, body)
    assert (status, problem["code"], problem["field"]) == (422, "invalid_text", field)


async def test_a_nul_in_a_query_parameter_is_invalid_text(
    http: aiohttp.ClientSession, rag_service: RunningService, make_user: Callable[[], User]
) -> None:
    async with http.get(
        f"{rag_service.url}/v1/documents?cursor=a%00b", headers=make_user().headers
    ) as r:
        assert r.status == 422
        problem = await r.json()
    assert (problem["code"], problem["field"], problem["source"]) == (
        "invalid_text",
        "cursor",
        "query",
    )


async def test_a_clean_document_with_escapes_is_still_accepted(
    http: aiohttp.ClientSession, rag_service: RunningService, make_user: Callable[[], User]
) -> None:
    user = make_user()
    body = b'{"title":"caf\\u00e9 \\ud83d\\ude00","text":"a \\\\u0000 is only text here"}'
    async with http.post(
        f"{rag_service.url}/v1/documents", data=body, headers={**user.headers, **JSON}
    ) as r:
        assert r.status == 202, await r.text()
        created = await r.json()
    assert created["title"] == "café 😀"
    assert [d["id"] for d in await documents_of(http, rag_service, user)] == [created["id"]]
