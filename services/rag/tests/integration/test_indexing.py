"""The worker's job function on real bytes: four formats become ready and searchable, hostile
files fail with a reason, the worker keeps serving, repeats are idempotent."""

from __future__ import annotations

import hashlib
import time
import uuid

import pytest

from xtyl_common.events import FileDeletedPayload, FileUploadedPayload
from xtyl_rag.domain.documents import Document, FileSource
from xtyl_rag.domain.search import SearchFilters, SearchMode
from xtyl_rag.service import RagService
from xtyl_rag.service.indexing import Indexer

from .conftest import MAX_DOCUMENT_BYTES, add_file_document
from .samples import QUERIES, make_pdf, make_zip_bomb_docx, sample_files

pytestmark = pytest.mark.integration

MODES: tuple[SearchMode, ...] = ("semantic", "fulltext", "hybrid")


async def outbox_types(service: RagService, document_id: uuid.UUID) -> list[str]:
    rows = await service.pool.fetch(
        "select type from xtyl_rag.outbox where payload->>'document_id' = $1 order by seq",
        str(document_id),
    )
    return [row["type"] for row in rows]


async def test_four_formats_become_ready_and_searchable(
    service: RagService, indexer: Indexer, capsys: pytest.CaptureFixture[str]
) -> None:
    owner = uuid.uuid4()
    timings: dict[str, float] = {}
    documents = {}
    for kind, (name, content_type, data) in sample_files().items():
        document = await add_file_document(service, owner, name, content_type, data)
        started = time.perf_counter()
        report = await indexer.index(document.id, data=data)
        timings[kind] = time.perf_counter() - started
        assert report.outcome == "ready", (kind, report)
        stored = await service.documents.get(owner, document.id)
        assert stored is not None
        assert stored.status == "ready"
        assert stored.chunk_count >= 1
        assert stored.embedding_model == service.model_status.active.model
        assert await outbox_types(service, document.id) == ["document.indexed"]
        documents[kind] = document.id
    for kind, query in QUERIES.items():
        for mode in MODES:
            result = await service.search(owner, query, k=3, mode=mode, filters=SearchFilters())
            assert result.hits, (kind, mode)
            assert result.hits[0].document_id == documents[kind], (kind, mode, result.hits[0])
    with capsys.disabled():
        print(
            "\nindexing time per format (bytes given, warm worker):",
            {kind: f"{seconds * 1000:.0f} ms" for kind, seconds in timings.items()},
        )


async def test_pdf_pages_are_kept_in_chunk_metadata(service: RagService, indexer: Indexer) -> None:
    owner = uuid.uuid4()
    data = make_pdf([["Alpha page talks about glaciers."], ["Beta page talks about volcanoes."]])
    document = await add_file_document(service, owner, "two.pdf", "application/pdf", data)
    assert (await indexer.index(document.id, data=data)).outcome == "ready"
    result = await service.search(owner, "volcanoes", k=1, mode="fulltext", filters=SearchFilters())
    assert result.hits[0].metadata["page"] == 1  # one chunk, starting on page 1


async def test_hostile_files_fail_with_a_reason_and_the_worker_goes_on(
    service: RagService, indexer: Indexer
) -> None:
    owner = uuid.uuid4()
    bomb = make_zip_bomb_docx()
    bomb_doc = await add_file_document(
        service,
        owner,
        "bomb.docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        bomb,
    )
    big = make_pdf([["big"]], padding=MAX_DOCUMENT_BYTES + 1024)
    big_doc = await add_file_document(service, owner, "big.pdf", "application/pdf", big)
    liar = b"this is not a pdf at all"
    liar_doc = await add_file_document(service, owner, "liar.pdf", "application/pdf", liar)

    assert (await indexer.index(bomb_doc.id, data=bomb)).error_code == "too_large"
    assert (await indexer.index(big_doc.id, data=big)).error_code == "too_large"
    assert (await indexer.index(liar_doc.id, data=liar)).error_code == "type_mismatch"
    for document in (bomb_doc, big_doc, liar_doc):
        stored = await service.documents.get(owner, document.id)
        assert stored is not None
        assert stored.status == "failed"
        assert stored.error_code is not None
        assert stored.error
        assert await outbox_types(service, document.id) == ["document.failed"]

    name, content_type, data = sample_files()["md"]
    fine = await add_file_document(service, owner, name, content_type, data)
    assert (await indexer.index(fine.id, data=data)).outcome == "ready"


async def test_repeated_events_are_idempotent_and_delete_removes(
    service: RagService, indexer: Indexer
) -> None:
    owner = uuid.uuid4()
    name, content_type, data = sample_files()["html"]
    document = await add_file_document(service, owner, name, content_type, data)
    assert (await indexer.index(document.id, data=data)).outcome == "ready"
    assert (await indexer.index(document.id, data=data)).outcome == "skipped"
    again = await service.documents.upsert_file(_source(document, data), title=name)
    assert again.id == document.id
    assert again.status == "ready"
    stats = await service.pool.fetchval(
        "select chunk_count from xtyl_rag.owner_stats where owner_id = $1", owner
    )
    assert stats == again.chunk_count

    assert document.file_id is not None
    await indexer.on_file_deleted(FileDeletedPayload(file_id=document.file_id, owner_id=owner))
    assert await service.documents.get(owner, document.id) is None
    assert (
        await service.pool.fetchval(
            "select count(*) from xtyl_rag.chunks where document_id = $1", document.id
        )
        == 0
    )
    assert (
        await service.pool.fetchval(
            "select chunk_count from xtyl_rag.owner_stats where owner_id = $1", owner
        )
        == 0
    )


async def test_unsupported_types_are_skipped(indexer: Indexer) -> None:
    report = await indexer.on_file_uploaded(
        FileUploadedPayload(
            file_id=uuid.uuid4(),
            owner_id=uuid.uuid4(),
            key="k",
            name="cat.png",
            content_type="image/png",
            size=10,
            sha256="0" * 64,
        )
    )
    assert report.outcome == "skipped"


def _source(document: Document, data: bytes) -> FileSource:
    assert document.file_id is not None
    return FileSource(
        file_id=document.file_id,
        owner_id=document.owner_id,
        key="k",
        name=document.file_name or "",
        content_type=document.content_type or "",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
