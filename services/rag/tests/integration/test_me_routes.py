"""``/internal/me/*`` of a real rag process, as the gateway calls them (a service token naming
the user): usage, erasure and the export, each in the shape the gateway reads, refusing user
tokens and tokens that name nobody; the export holds the caller's documents with their text
(the extracted text exactly, overlaps once) and nothing of anyone else's."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from xtyl_devstack.processes import ManagedProcess
from xtyl_devstack.service_process import RunningService
from xtyl_rag.domain.chunking import normalize_text
from xtyl_rag.domain.documents import Document, sha256_text
from xtyl_rag.service import RagService
from xtyl_rag.service.account import EXPORT_PAGE

from .conftest import User, add_file_document, gateway_headers
from .samples import make_text

pytestmark = pytest.mark.integration


async def add_inline(service: RagService, owner: uuid.UUID, title: str, text: str) -> Document:
    """An inline document as the API adds it, queued for nobody (the test indexes it)."""
    return await service.documents.create_inline(
        owner, title=title, text=text, sha256=sha256_text(text), metadata={"t": title}
    )


async def get_me(
    http: aiohttp.ClientSession,
    rag: RunningService,
    route: str,
    headers: dict[str, str],
) -> aiohttp.ClientResponse:
    async with http.get(f"{rag.url}/internal/me/{route}", headers=headers) as resp:
        await resp.read()
        return resp


async def export_of(
    http: aiohttp.ClientSession, rag: RunningService, rag_env: dict[str, str], user: User
) -> tuple[list[dict[str, Any]], bytes]:
    async with http.get(
        f"{rag.url}/internal/me/export", headers=gateway_headers(rag_env, user.id)
    ) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("application/x-ndjson")
        body = await resp.read()
    return [json.loads(line) for line in body.splitlines()], body


async def test_the_export_holds_each_document_with_its_text_and_nothing_of_another_user(
    http: aiohttp.ClientSession,
    rag_service: RunningService,
    service: RagService,
    rag_env: dict[str, str],
    make_user: Callable[[], User],
) -> None:
    alice, bob = make_user(), make_user()
    # several chunks, overlapping, paragraphs and odd whitespace between them
    long_text = "\r\n\r\n".join(make_text(2, seed=n).decode() for n in (41, 42, 43)) + "  \n"
    indexed = await add_inline(service, alice.id, "long", long_text)
    assert (await service.index_document(indexed.id)).chunks > 3
    waiting_text = "Not indexed yet:\r\nthe text as it was given, \u00e9 and all."
    waiting = await add_inline(service, alice.id, "waiting", waiting_text)
    data = b"A file about lighthouses.\n\nKeepers log the weather every four hours."
    file = await add_file_document(service, alice.id, "keepers.txt", "text/plain", data)
    assert (await service.indexer.index(file.id, data=data)).outcome == "ready"
    secret = "Bob's secret recipe uses cardamom and smoked salt."
    bobs = await add_inline(service, bob.id, "bob", secret)
    assert (await service.index_document(bobs.id)).outcome == "ready"

    records, body = await export_of(http, rag_service, rag_env, alice)

    by_id = {record["id"]: record for record in records}
    assert set(by_id) == {str(indexed.id), str(waiting.id), str(file.id)}
    assert {record["record"] for record in records} == {"document"}
    long = by_id[str(indexed.id)]
    assert long["text"] == normalize_text(long_text)  # exactly, each overlap once
    assert (long["title"], long["source"], long["file_id"], long["status"]) == (
        "long",
        "inline",
        None,
        "ready",
    )
    assert long["metadata"] == {"t": "long"}
    assert datetime.fromisoformat(long["created_at"]) == indexed.created_at
    assert by_id[str(waiting.id)]["text"] == waiting_text  # as given: nothing else is held
    assert by_id[str(waiting.id)]["status"] == "pending"
    kept = by_id[str(file.id)]
    assert (kept["source"], kept["file_id"], kept["text"]) == (
        "file",
        str(file.file_id),
        data.decode(),
    )
    assert str(bob.id).encode() not in body
    assert str(bobs.id).encode() not in body
    assert b"cardamom" not in body
    # newest first, as the document list
    assert [record["id"] for record in records] == [str(file.id), str(waiting.id), str(indexed.id)]


async def test_the_export_pages_through_more_documents_than_a_page(
    http: aiohttp.ClientSession,
    rag_service: RunningService,
    service: RagService,
    rag_env: dict[str, str],
    make_user: Callable[[], User],
) -> None:
    user = make_user()
    total = EXPORT_PAGE + 7
    await service.pool.executemany(
        "with d as (insert into xtyl_rag.documents (owner_id, source, title, content_sha256,"
        " created_at) values ($1, 'inline', $2, repeat('0', 64),"
        " now() - make_interval(secs => $3)) returning id)"
        " insert into xtyl_rag.inline_sources (document_id, text) select id, $2 from d",
        [(user.id, f"text {n}", n % 50) for n in range(total)],
    )

    records, _ = await export_of(http, rag_service, rag_env, user)

    assert len(records) == total
    assert len({record["id"] for record in records}) == total
    assert sorted(record["text"] for record in records) == sorted(f"text {n}" for n in range(total))
    keys = [(record["created_at"], record["id"]) for record in records]
    assert keys == sorted(keys, reverse=True)


async def test_usage_and_erasure_answer_in_the_shapes_the_gateway_reads(
    http: aiohttp.ClientSession,
    rag_service: RunningService,
    rag_worker: ManagedProcess,  # its relay publishes the events the erasure then deletes
    service: RagService,
    rag_env: dict[str, str],
    make_user: Callable[[], User],
) -> None:
    user = make_user()
    document = await add_inline(service, user.id, "one", make_text(2, seed=44).decode())
    chunks = (await service.index_document(document.id)).chunks
    headers = gateway_headers(rag_env, user.id)

    usage = await get_me(http, rag_service, "usage", headers)
    assert usage.status == 200
    assert await usage.json() == {
        "documents": {"used": 1, "limit": 1000, "unit": "count"},
        "chunks": {"used": chunks, "limit": 200_000, "unit": "count"},
        "answers_per_day": {"used": 0, "limit": 200, "unit": "count"},
    }
    before = await get_me(http, rag_service, "erasure", headers)
    assert before.status == 200
    assert await before.json() == {
        "status": "none",
        "requested_at": None,
        "started_at": None,
        "completed_at": None,
        "attempts": 0,
        "erased": {},
    }

    requested = datetime.now(UTC)
    await service.erase_user(user.id, requested)

    after = await (await get_me(http, rag_service, "erasure", headers)).json()
    assert after["status"] == "erased"
    assert after["erased"] == {"documents": 1, "chunks": chunks}
    assert after["attempts"] == 1
    assert datetime.fromisoformat(after["requested_at"]) == requested
    assert datetime.fromisoformat(after["completed_at"]) >= datetime.fromisoformat(
        after["started_at"]
    )
    records, _ = await export_of(http, rag_service, rag_env, user)
    assert records == []
    gone = await (await get_me(http, rag_service, "usage", headers)).json()
    assert gone["documents"]["used"] == gone["chunks"]["used"] == 0


@pytest.mark.parametrize("route", ["usage", "erasure", "export"])
async def test_me_routes_refuse_user_tokens_and_tokens_naming_nobody(
    http: aiohttp.ClientSession,
    rag_service: RunningService,
    rag_env: dict[str, str],
    make_user: Callable[[], User],
    route: str,
) -> None:
    as_user = await get_me(http, rag_service, route, make_user().headers)
    assert as_user.status == 401
    assert as_user.headers["Content-Type"] == "application/problem+json"
    nobody = await get_me(http, rag_service, route, gateway_headers(rag_env, None))
    assert nobody.status == 403
    assert (await nobody.json())["code"] == "user_required"
    anonymous = await get_me(http, rag_service, route, {})
    assert anonymous.status == 401
