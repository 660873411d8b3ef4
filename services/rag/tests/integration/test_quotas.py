"""Quotas, each refused with its own problem code at its limit, however requests race: documents
(403 ``quota_documents``), chunks (403 ``quota_chunks``; a document whose chunks would pass it
fails with that reason), answers a day (429 ``quota_answers_per_day`` with ``Retry-After``
until 00:00 UTC). An upload past the documents quota ends ``failed`` with the reason (so its
user is told), is not retried, and is admitted once there is room and it is asked for again.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from xtyl_common.events import EventSettings, FileUploadedPayload
from xtyl_common.quotas import QuotaExceeded
from xtyl_common.settings import load_settings
from xtyl_devstack.service_process import RunningService, running_service_async
from xtyl_rag.adapters.postgres import DocumentRepository
from xtyl_rag.adapters.postgres.documents import Claim, NewChunks
from xtyl_rag.domain.chunking import chunk_text, normalize_text
from xtyl_rag.domain.documents import Document, sha256_text
from xtyl_rag.domain.quotas import UserLimits, seconds_until_next_day
from xtyl_rag.service import RagService, open_service
from xtyl_rag.service.indexing import Indexer
from xtyl_rag.settings import RagSettings

from .conftest import User, gateway_headers
from .fake_storage import FakeStorage, StoredFile
from .samples import make_text

pytestmark = pytest.mark.integration

LIMITS = {"QUOTA_DOCUMENTS": "3", "QUOTA_CHUNKS": "4", "QUOTA_ANSWERS_PER_DAY": "4"}
RACERS = 10


@pytest.fixture(scope="module")
async def limited_rag(
    rag_env: dict[str, str], service_log_dir: Path
) -> AsyncIterator[RunningService]:
    """A rag API with small quotas; its inline documents queue for nobody (a prefix of its
    own), so they stay pending and count."""
    env = {**rag_env, **LIMITS, "EVENTS_STREAM_PREFIX": f"test:quotas:{secrets.token_hex(4)}"}
    async with running_service_async(
        "xtyl_rag", env, log_dir=service_log_dir, name="rag-quotas", ready_path="/readyz"
    ) as running:
        yield running


async def post_inline(
    http: aiohttp.ClientSession, rag: RunningService, user: User, n: int
) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with http.post(
        f"{rag.url}/v1/documents",
        json={"title": f"doc {n}", "text": f"Document number {n} about quotas."},
        headers=user.headers,
    ) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


async def usage_of(
    http: aiohttp.ClientSession, rag: RunningService, rag_env: dict[str, str], user: User
) -> dict[str, Any]:
    async with http.get(
        f"{rag.url}/internal/me/usage", headers=gateway_headers(rag_env, user.id)
    ) as resp:
        assert resp.status == 200, await resp.text()
        usage: dict[str, Any] = await resp.json()
    return usage


async def test_documents_past_the_quota_are_refused_even_when_requests_race(
    http: aiohttp.ClientSession,
    limited_rag: RunningService,
    rag_env: dict[str, str],
    make_user: Callable[[], User],
) -> None:
    user = make_user()
    answers = await asyncio.gather(
        *(post_inline(http, limited_rag, user, n) for n in range(RACERS))
    )

    assert Counter(status for status, _, _ in answers) == {202: 3, 403: RACERS - 3}
    for status, body, headers in answers:
        if status == 403:
            assert headers["Content-Type"] == "application/problem+json"
            assert (body["code"], body["quota"], body["used"], body["limit"]) == (
                "quota_documents",
                "documents",
                3,
                3,
            )
    usage = await usage_of(http, limited_rag, rag_env, user)
    assert usage["documents"] == {"used": 3, "limit": 3, "unit": "count"}

    # room again once one is deleted
    kept = next(body["id"] for status, body, _ in answers if status == 202)
    async with http.delete(f"{limited_rag.url}/v1/documents/{kept}", headers=user.headers) as r:
        assert r.status == 204
    status, _, _ = await post_inline(http, limited_rag, user, 99)
    assert status == 202


async def add_inline(service: RagService, owner: uuid.UUID, text: str) -> Document:
    """An inline document (default quotas), queued for nobody: the test indexes it."""
    return await service.documents.create_inline(
        owner, title="text", text=text, sha256=sha256_text(text), metadata={}
    )


async def test_new_documents_are_refused_once_the_chunks_quota_is_reached(
    http: aiohttp.ClientSession,
    limited_rag: RunningService,
    service: RagService,
    rag_env: dict[str, str],
    make_user: Callable[[], User],
) -> None:
    user = make_user()
    document = await add_inline(service, user.id, make_text(6, seed=31).decode())
    report = await service.index_document(document.id)  # the session's service: no quotas
    assert report.outcome == "ready"
    assert report.chunks >= 4

    status, body, _ = await post_inline(http, limited_rag, user, 1)

    assert status == 403, body
    assert (body["code"], body["used"], body["limit"]) == ("quota_chunks", report.chunks, 4)
    usage = await usage_of(http, limited_rag, rag_env, user)
    assert usage["chunks"] == {"used": report.chunks, "limit": 4, "unit": "count"}
    assert usage["documents"]["used"] == 1


async def ask(
    http: aiohttp.ClientSession, rag: RunningService, user: User
) -> tuple[int, dict[str, Any] | str, dict[str, str]]:
    async with http.post(
        f"{rag.url}/v1/answer", json={"query": "what about quotas"}, headers=user.headers
    ) as resp:
        if resp.status == 200:
            return resp.status, await resp.text(), dict(resp.headers)
        return resp.status, await resp.json(), dict(resp.headers)


async def test_answers_past_the_daily_quota_are_429_until_midnight_utc_even_when_racing(
    http: aiohttp.ClientSession,
    limited_rag: RunningService,
    rag_env: dict[str, str],
    make_user: Callable[[], User],
) -> None:
    user = make_user()
    answers = await asyncio.gather(*(ask(http, limited_rag, user) for _ in range(RACERS)))
    until_midnight = seconds_until_next_day(datetime.now(UTC))

    assert Counter(status for status, _, _ in answers) == {200: 4, 429: RACERS - 4}
    for status, body, headers in answers:
        if status == 200:
            assert isinstance(body, str)
            assert "event: done" in body
            continue
        assert isinstance(body, dict)
        assert (body["code"], body["quota"], body["used"], body["limit"]) == (
            "quota_answers_per_day",
            "answers_per_day",
            4,
            4,
        )
        retry_after = int(headers["Retry-After"])
        assert abs(retry_after - until_midnight) <= 5, (retry_after, until_midnight)
        assert body["retry_after"] == retry_after
    usage = await usage_of(http, limited_rag, rag_env, user)
    assert usage["answers_per_day"] == {"used": 4, "limit": 4, "unit": "count"}
    # another user's day is their own
    status, _, _ = await ask(http, limited_rag, make_user())
    assert status == 200


def limited_indexer(service: RagService, documents: DocumentRepository) -> Indexer:
    """The session's indexer over ``documents`` (a repository with quotas of the test's)."""
    return Indexer(
        documents=documents,
        models=service.models,
        embedders=service.embedders,
        storage=service.storage,
        extractor=service.indexer.extractor,
        counter=service.indexer.counter,
        max_document_bytes=service.indexer.max_document_bytes,
        max_attempts=service.indexer.max_attempts,
    )


async def failed_events(pool: asyncpg.Pool, document_id: uuid.UUID) -> list[str]:
    rows = await pool.fetch(
        "select payload->>'reason' as reason from xtyl_rag.outbox"
        " where type = 'document.failed' and payload->>'document_id' = $1",
        str(document_id),
    )
    return [row["reason"] for row in rows]


async def test_a_document_whose_chunks_pass_the_quota_fails_with_it_and_is_not_retried(
    service: RagService,
) -> None:
    owner = uuid.uuid4()
    documents = DocumentRepository(service.pool, limits=UserLimits(chunks=3))
    indexer = limited_indexer(service, documents)
    small = await add_inline(service, owner, "A short note about the sea.")
    large = await add_inline(service, owner, make_text(6, seed=32).decode())

    assert (await indexer.index(small.id)).outcome == "ready"
    report = await indexer.index(large.id)

    assert (report.outcome, report.error_code) == ("failed", "quota_chunks")
    failed = await service.documents.find(large.id)
    assert failed is not None
    assert (failed.status, failed.error_code, failed.chunk_count) == ("failed", "quota_chunks", 0)
    assert failed.error is not None
    assert "3 chunks allowed" in failed.error
    assert await failed_events(service.pool, large.id) == ["quota_chunks"]
    assert not await service.pool.fetchval(
        "select count(*) from xtyl_rag.chunks where document_id = $1", large.id
    )
    assert (await indexer.index(large.id)).outcome == "skipped"  # final: nothing retries it
    assert await failed_events(service.pool, large.id) == ["quota_chunks"]


class MeetAtTheEnd(DocumentRepository):
    """Runs wait for each other just before they write, then write at once."""

    def __init__(self, pool: asyncpg.Pool, limits: UserLimits, runs: int) -> None:
        super().__init__(pool, limits=limits)
        self.barrier = asyncio.Barrier(runs)

    async def complete(self, claim: Claim, new: NewChunks, *, title: str | None = None) -> bool:
        await asyncio.wait_for(self.barrier.wait(), 60)
        return await super().complete(claim, new, title=title)


async def test_documents_finishing_together_cannot_pass_the_chunks_quota(
    service: RagService,
) -> None:
    owner = uuid.uuid4()
    texts = [make_text(2, seed=33).decode(), make_text(2, seed=34).decode()]
    sizes = [len(chunk_text(normalize_text(t), service.indexer.counter)) for t in texts]
    limit = sum(sizes) - 1  # either fits, not both
    assert limit >= max(sizes)
    documents = MeetAtTheEnd(service.pool, UserLimits(chunks=limit), runs=2)
    indexer = limited_indexer(service, documents)
    added = [await add_inline(service, owner, text) for text in texts]

    reports = await asyncio.gather(*(indexer.index(d.id) for d in added))

    assert sorted((r.outcome, r.error_code) for r in reports) == [
        ("failed", "quota_chunks"),
        ("ready", None),
    ]
    held = await service.pool.fetchval(
        "select count(*) from xtyl_rag.chunks where owner_id = $1", owner
    )
    assert held == next(r.chunks for r in reports if r.outcome == "ready") <= limit


@pytest.fixture
async def storage() -> AsyncIterator[tuple[FakeStorage, str]]:
    fake = FakeStorage()
    async with fake.serving() as url:
        yield fake, url


@pytest.fixture
async def one_document_each(
    rag_env: dict[str, str], storage: tuple[FakeStorage, str]
) -> AsyncIterator[RagService]:
    """The service as the worker and the API open it, one document allowed per user, storage at
    the stand-in; its jobs queue for nobody."""
    env = {**rag_env, "STORAGE_URL": storage[1], "QUOTA_DOCUMENTS": "1"}
    settings = load_settings(RagSettings, environ=env)
    events = EventSettings(stream_prefix=f"test:quotas:{secrets.token_hex(4)}")
    async with open_service(settings, events) as opened:
        yield opened


def uploaded(fake: FakeStorage, owner: uuid.UUID, name: str, data: bytes) -> FileUploadedPayload:
    file_id = uuid.uuid4()
    fake.files[file_id] = StoredFile(owner, name, data)
    return FileUploadedPayload(
        file_id=file_id,
        owner_id=owner,
        key=f"{owner}/{file_id}/{name}",
        name=name,
        content_type="text/plain",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


async def test_an_upload_past_the_documents_quota_fails_with_the_reason_and_waits_for_room(
    one_document_each: RagService, storage: tuple[FakeStorage, str]
) -> None:
    rag, (fake, _) = one_document_each, storage
    owner = uuid.uuid4()
    first = uploaded(fake, owner, "first.txt", b"The first file is about tides.")
    second = uploaded(fake, owner, "second.txt", b"The second file is about winds.")
    assert (await rag.on_file_uploaded(first)).outcome == "ready"

    report = await rag.on_file_uploaded(second)
    again = await rag.on_file_uploaded(second)  # redelivered, or re-emitted

    assert (report.outcome, report.error_code) == ("failed", "quota_documents")
    assert (again.outcome, again.error_code) == ("failed", "quota_documents")
    (refused,) = [
        d
        for d in (await rag.list_documents(owner, limit=10, cursor=None)).items
        if d.file_id == second.file_id
    ]
    assert (refused.status, refused.error_code) == ("failed", "quota_documents")
    assert refused.error is not None
    assert "1 of the 1 documents" in refused.error
    assert await failed_events(rag.pool, refused.id) == ["quota_documents"]  # told once
    usage = await rag.usage(owner)
    assert (usage["documents"].used, usage["documents"].limit) == (1, 1)

    with pytest.raises(QuotaExceeded) as full:  # asking for it while there is no room
        await rag.add_file(owner, second.file_id, title=None, metadata=None)
    assert (full.value.code, full.value.status) == ("quota_documents", 403)

    (kept,) = [
        d
        for d in (await rag.list_documents(owner, limit=10, cursor=None)).items
        if d.file_id == first.file_id
    ]
    await rag.delete_document(owner, kept.id)
    admitted = await rag.add_file(owner, second.file_id, title=None, metadata=None)

    assert (admitted.id, admitted.status, admitted.error_code) == (refused.id, "pending", None)
    assert (await rag.index_document(admitted.id)).outcome == "ready"
    assert (await rag.usage(owner))["documents"].used == 1
