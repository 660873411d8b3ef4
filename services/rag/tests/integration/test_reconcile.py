"""Nothing stays stuck silently: a passing failure keeps its error and gives the document
back, the reconciler re-emits stuck documents, and endless retries end ``failed``."""

from __future__ import annotations

import uuid

import pytest

from xtyl_common.errors import DependencyError
from xtyl_common.events import reemit_stuck
from xtyl_rag.service import RagService, stuck_file_finder
from xtyl_rag.service.indexing import Indexer

from .conftest import add_file_document
from .samples import sample_files

pytestmark = pytest.mark.integration


async def test_storage_down_keeps_the_error_and_releases_the_document(
    service: RagService, indexer: Indexer
) -> None:
    owner = uuid.uuid4()
    name, ctype, data = sample_files()["md"]
    document = await add_file_document(service, owner, name, ctype, data)
    # STORAGE_URL points at a port nothing listens on (the full-path test starts storage there),
    # so the run gives up waiting for storage (STORAGE_READY_WAIT_S) and fails to fetch
    with pytest.raises(DependencyError):
        await indexer.index(document.id)
    stored = await service.documents.get(owner, document.id)
    assert stored is not None
    assert stored.status == "extracting"
    assert stored.error is not None
    assert stored.attempts == 1
    # given back: the retry claims it at once and, with the bytes, finishes
    assert (await indexer.index(document.id, data=data)).outcome == "ready"


async def test_reconciler_reemits_stuck_file_documents(service: RagService) -> None:
    owner = uuid.uuid4()
    name, ctype, data = sample_files()["html"]
    document = await add_file_document(service, owner, name, ctype, data)
    await service.pool.execute(
        "update xtyl_rag.documents set status = 'embedding', updated_at = now() - interval"
        " '1 hour' where id = $1",
        document.id,
    )
    async with service.pool.acquire() as conn:
        written = await reemit_stuck(conn, schema="xtyl_rag", find_stuck=stuck_file_finder(600))
    assert written >= 1
    row = await service.pool.fetchrow(
        "select type, payload from xtyl_rag.outbox where type = 'file.uploaded'"
        " and payload->>'file_id' = $1",
        str(document.file_id),
    )
    assert row is not None
    assert row["payload"]["owner_id"] == str(owner)
    assert row["payload"]["sha256"] == document.content_sha256


async def test_too_many_attempts_fail_the_document(service: RagService, indexer: Indexer) -> None:
    owner = uuid.uuid4()
    name, ctype, data = sample_files()["md"]
    document = await add_file_document(service, owner, name, ctype, data)
    await service.pool.execute(
        "update xtyl_rag.documents set attempts = $2, error = 'storage down' where id = $1",
        document.id,
        indexer.max_attempts,
    )
    report = await indexer.index(document.id, data=data)
    assert report.error_code == "too_many_attempts"
    stored = await service.documents.get(owner, document.id)
    assert stored is not None
    assert stored.status == "failed"
    assert stored.error is not None
    assert "storage down" in stored.error
