"""What an operator reads of the rag service's own metrics after real work (the service in
process, as the worker and the API open it, over the real Postgres and the local embedder; the
text is what its ``/metrics`` serves): each stage of indexing a document timed once, the chunks
embedded counted, each search timed under its mode and plan."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from xtyl_common.events import EventSettings
from xtyl_common.metrics import exposition
from xtyl_common.settings import load_settings
from xtyl_rag.domain.search import SearchFilters, SearchMode
from xtyl_rag.service import RagService, open_service
from xtyl_rag.settings import RagSettings

from .fake_storage import FakeStorage, StoredFile

pytestmark = pytest.mark.integration

PARAGRAPH = (
    "The lighthouse keeper logs the weather every four hours, wind and sea state and"
    " visibility, and trims the lamp at dusk. Supply boats come on Tuesdays when the swell"
    " allows; otherwise the stores in the cellar last three weeks. "
)
STAGES = ("download", "extract", "chunk", "embed", "store")


def sample(name: str, **labels: str) -> float:
    text = exposition()[0].decode()
    return sum(
        found.value
        for family in text_string_to_metric_families(text)
        for found in family.samples
        if found.name == name and all(found.labels.get(k) == v for k, v in labels.items())
    )


@pytest.fixture
async def storage() -> AsyncIterator[tuple[FakeStorage, str]]:
    fake = FakeStorage()
    async with fake.serving() as url:
        yield fake, url


@pytest.fixture
async def rag(
    rag_env: dict[str, str], storage: tuple[FakeStorage, str]
) -> AsyncIterator[RagService]:
    env = {**rag_env, "STORAGE_URL": storage[1]}
    settings = load_settings(RagSettings, environ=env)
    events = EventSettings(stream_prefix=f"test:metrics:{secrets.token_hex(4)}")
    async with open_service(settings, events) as opened:
        yield opened


async def test_indexing_times_each_stage_and_counts_the_chunks_embedded(
    rag: RagService, storage: tuple[FakeStorage, str]
) -> None:
    fake, _ = storage
    owner, file_id = uuid.uuid4(), uuid.uuid4()
    fake.files[file_id] = StoredFile(owner, "keeper.txt", (PARAGRAPH * 60).encode())
    document = await rag.add_file(owner, file_id, title=None, metadata=None)
    stage = "xtyl_rag_ingest_stage_duration_seconds_count"
    before = {name: sample(stage, stage=name) for name in STAGES}
    embedded = sample("xtyl_rag_chunks_embedded_total")

    report = await rag.index_document(document.id)

    assert report.outcome == "ready"
    assert report.chunks > 1
    assert {name: sample(stage, stage=name) - before[name] for name in STAGES} == dict.fromkeys(
        STAGES, 1
    )
    assert sample("xtyl_rag_chunks_embedded_total") - embedded == report.chunks

    # a search of each mode, timed under its mode and the plan it took (a small owner: exact)
    searches = "xtyl_rag_search_duration_seconds_count"
    modes: tuple[tuple[SearchMode, str], ...] = (
        ("semantic", "exact"),
        ("hybrid", "exact"),
        ("fulltext", "none"),
    )
    for mode, plan in modes:
        counted = sample(searches, mode=mode, plan=plan)
        result = await rag.search(owner, "weather log", k=3, mode=mode, filters=SearchFilters())
        assert result.hits
        assert sample(searches, mode=mode, plan=plan) - counted == 1
    # the plans not taken are served too (at 0 until then), so increase() sees their first
    text = exposition()[0].decode()
    for mode in ("semantic", "hybrid"):
        assert f'{searches}{{mode="{mode}",plan="hnsw"}}' in text
