"""What a user reads of their account: usage merged from the services, deletion progress, and
the export slot given back however its stream ends."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from datetime import UTC, datetime

import pytest

from xtyl_common.erasure import ErasureState
from xtyl_common.errors import RateLimited
from xtyl_common.quotas import QuotaUse
from xtyl_gateway.domain.account import DeletionProgress, merge_usage, record_id, split_document
from xtyl_gateway.domain.admission import InFlightLimit
from xtyl_gateway.service import ReleasingStream

NOW = datetime(2026, 12, 7, tzinfo=UTC)


def test_usage_names_each_quota_its_service_and_who_did_not_answer() -> None:
    usage = merge_usage(
        {
            "storage": {"storage_bytes": QuotaUse(used=5, limit=10, unit="bytes")},
            "rag": None,
        }
    )
    assert usage.quotas["storage_bytes"].service == "storage"
    assert usage.quotas["storage_bytes"].used == 5
    assert usage.unavailable == ["rag"]


def test_a_deletion_is_erased_only_when_every_service_says_so() -> None:
    done = ErasureState(status="erased", completed_at=NOW, erased={"files": 2})
    user = uuid.uuid4()
    progress = DeletionProgress.of(user, NOW, {"storage": done, "rag": None})
    assert progress.status == "erasing"
    assert progress.services["rag"].status == "unknown"
    assert DeletionProgress.of(user, NOW, {"storage": done, "rag": done}).status == "erased"


async def _chunks(fail: bool) -> AsyncGenerator[bytes]:
    yield b"a"
    if fail:
        raise RuntimeError("storage went away")
    yield b"b"


@pytest.mark.parametrize("fail", [False, True])
async def test_the_export_slot_is_given_back_when_the_stream_ends(fail: bool) -> None:
    limit = InFlightLimit(20)
    release = limit.acquire("export:u", limit=1)
    with pytest.raises(RateLimited):
        limit.acquire("export:u", limit=1)
    stream = ReleasingStream(_chunks(fail), release)
    got = b""
    try:
        async for chunk in stream:
            got += chunk
    except RuntimeError:
        assert fail
    assert limit.in_flight("export:u") == 0
    assert got == (b"a" if fail else b"ab")


def test_the_export_slot_is_given_back_when_the_stream_is_never_read() -> None:
    limit = InFlightLimit(20)
    stream = ReleasingStream(_chunks(False), limit.acquire("export:u", limit=1))
    del stream
    assert limit.in_flight("export:u") == 0


def test_a_document_record_is_split_into_its_details_and_its_text() -> None:

    document_id = uuid.uuid4()
    line = (
        f'{{"record": "document", "id": "{document_id}", "title": "t",'
        f' "created_at": "2026-12-07T10:00:00Z", "text": "ünïcode text"}}'
    ).encode()
    record, text, created_at = split_document(line)
    assert text == "ünïcode text"
    assert b"text" not in record.replace(b'"title"', b"")
    assert record_id(record) == document_id
    assert created_at == datetime(2026, 12, 7, 10, tzinfo=UTC)
    assert split_document(b'{"id": "%s", "text": null}' % str(document_id).encode())[1] == ""
