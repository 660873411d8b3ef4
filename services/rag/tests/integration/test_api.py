"""The HTTP API of a real rag process, with a real rag-worker process indexing."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from xtyl_devstack.processes import ManagedProcess
from xtyl_devstack.service_process import RunningService

from .conftest import User, wait_for_status
from .samples import TOPICS

pytestmark = pytest.mark.integration


async def create_inline(
    http: aiohttp.ClientSession,
    rag: RunningService,
    user: User,
    title: str,
    text: str,
    **extra: Any,
) -> dict[str, Any]:
    async with http.post(
        f"{rag.url}/v1/documents",
        json={"title": title, "text": text, **extra},
        headers=user.headers,
    ) as resp:
        assert resp.status == 202, await resp.text()
        body: dict[str, Any] = await resp.json()
        assert resp.headers["Location"] == f"/v1/documents/{body['id']}"
    return body


def parse_sse(raw: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


async def test_inline_document_is_indexed_searched_answered_and_deleted(
    http: aiohttp.ClientSession,
    rag_service: RunningService,
    rag_worker: ManagedProcess,
    make_user: Callable[[], User],
) -> None:
    alice, bob = make_user(), make_user()
    text = "\n\n".join(TOPICS["md"] + TOPICS["html"])
    created = await create_inline(
        http, rag_service, alice, "Notes", text, metadata={"project": "bread"}
    )
    assert created["status"] == "pending"
    done = await wait_for_status(http, rag_service.url, alice, created["id"])
    assert done["status"] == "ready", done
    assert done["chunk_count"] >= 1
    assert done["error"] is None

    bob_doc = (await create_inline(http, rag_service, bob, "Bob's", "sourdough for bob"))["id"]
    # bob cannot see, search or delete it
    async with http.get(
        f"{rag_service.url}/v1/documents/{created['id']}", headers=bob.headers
    ) as r:
        assert r.status == 404
        assert (await r.json())["code"] == "document_not_found"
    async with http.post(
        f"{rag_service.url}/v1/search", json={"query": "sourdough starter"}, headers=bob.headers
    ) as r:
        assert created["id"] not in {hit["document_id"] for hit in (await r.json())["results"]}

    async with http.post(
        f"{rag_service.url}/v1/search",
        json={"query": "how to feed a sourdough starter", "k": 5, "metadata": {"project": "bread"}},
        headers=alice.headers,
    ) as r:
        assert r.status == 200, await r.text()
        found = await r.json()
    assert found["mode"] == "hybrid"
    assert found["plan"] == "exact"
    assert found["results"][0]["document_id"] == created["id"]
    assert "starter" in found["results"][0]["snippet"].lower()

    for other_filter in ({"metadata": {"project": "other"}}, {"document_ids": [bob_doc]}):
        async with http.post(
            f"{rag_service.url}/v1/search",
            json={"query": "sourdough", **other_filter},
            headers=alice.headers,
        ) as r:
            assert (await r.json())["results"] == [], other_filter

    async with http.post(
        f"{rag_service.url}/v1/answer",
        json={"query": "how often should I feed the sourdough starter?"},
        headers=alice.headers,
    ) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        events = parse_sse(await r.text())
    names = [name for name, _ in events]
    assert names[0] == "citations"
    assert names[-1] == "done"
    assert "delta" in names
    citations = events[0][1]
    assert citations["mode"] == "extractive"
    assert {c["document_id"] for c in citations["citations"]} == {created["id"]}
    answer = "".join(data["text"] for name, data in events if name == "delta")
    assert "[1]" in answer
    assert events[-1][1]["cited"][0]["chunk_id"] == citations["citations"][0]["chunk_id"]

    async with http.get(f"{rag_service.url}/v1/status", headers=alice.headers) as r:
        status = await r.json()
    assert status["documents"] == {"ready": 1}
    assert status["embedding"]["reembed_needed"] is False

    async with http.delete(
        f"{rag_service.url}/v1/documents/{created['id']}", headers=bob.headers
    ) as r:
        assert r.status == 404
    async with http.delete(
        f"{rag_service.url}/v1/documents/{created['id']}", headers=alice.headers
    ) as r:
        assert r.status == 204
    async with http.post(
        f"{rag_service.url}/v1/search", json={"query": "sourdough"}, headers=alice.headers
    ) as r:
        assert (await r.json())["results"] == []


async def test_listing_pages_with_a_cursor(
    http: aiohttp.ClientSession, rag_service: RunningService, make_user: Callable[[], User]
) -> None:
    user = make_user()
    ids = [
        (await create_inline(http, rag_service, user, f"doc {n}", f"text number {n}"))["id"]
        for n in range(5)
    ]
    seen: list[str] = []
    cursor = None
    while True:
        url = f"{rag_service.url}/v1/documents?limit=2" + (f"&cursor={cursor}" if cursor else "")
        async with http.get(url, headers=user.headers) as r:
            page = await r.json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))


async def test_a_cursor_the_service_did_not_issue_is_422(
    http: aiohttp.ClientSession, rag_service: RunningService, make_user: Callable[[], User]
) -> None:
    url = f"{rag_service.url}/v1/documents?cursor=bm90LW91cnM"
    async with http.get(url, headers=make_user().headers) as r:
        assert r.status == 422
        assert (await r.json())["code"] == "invalid_cursor"


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/v1/search", {"query": "x", "k": 51}, "invalid_input"),
        ("/v1/search", {"query": "x", "owner_id": "someone"}, "invalid_input"),
        ("/v1/search", {"query": "x", "mode": "magic"}, "invalid_input"),
        ("/v1/search", {"query": "   "}, "blank_query"),
        ("/v1/search", {"query": "\x1f"}, "blank_query"),  # Python's whitespace, not JSON's
        ("/v1/answer", {"query": " \ufeff"}, "blank_query"),  # JSON's whitespace, not Python's
        ("/v1/documents", {"title": "t"}, "text_or_file_id"),
        ("/v1/documents", {"text": "no title"}, "title_required"),
        ("/v1/documents", {"title": "t", "text": "x", "owner_id": "x"}, "invalid_input"),
        ("/v1/answer", {"query": "x", "k": 21}, "invalid_input"),
    ],
)
async def test_bad_bodies_are_problems(
    http: aiohttp.ClientSession,
    rag_service: RunningService,
    make_user: Callable[[], User],
    path: str,
    body: dict[str, Any],
    code: str,
) -> None:
    async with http.post(f"{rag_service.url}{path}", json=body, headers=make_user().headers) as r:
        assert r.status == 422, await r.text()
        assert r.headers["Content-Type"] == "application/problem+json"
        assert (await r.json())["code"] == code


async def test_routes_need_a_user_token(
    http: aiohttp.ClientSession, rag_service: RunningService
) -> None:
    async with http.get(f"{rag_service.url}/v1/documents") as r:
        assert r.status == 401
    async with http.get(f"{rag_service.url}/v1/documents?limit=101") as r:
        assert r.status == 401
