"""A change of embedding model: detected at start-up, search stays on the old vectors while
``reembed`` builds the new ones, then switches; new documents get vectors of both meanwhile."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from xtyl_common.events import EventSettings
from xtyl_common.migrate import migrate
from xtyl_common.settings import load_settings
from xtyl_devstack.postgres import create_database, drop_database
from xtyl_devstack.stack import StackInfo
from xtyl_rag.adapters.postgres.models import index_name
from xtyl_rag.domain.documents import sha256_text
from xtyl_rag.domain.search import SearchFilters
from xtyl_rag.service import RagService, open_service
from xtyl_rag.settings import RagSettings

pytestmark = pytest.mark.integration

DIMENSION = 8


def fake_vector(text: str) -> list[float]:
    vector = [0.0] * DIMENSION
    for word in text.lower().split():
        vector[int(hashlib.md5(word.encode()).hexdigest(), 16) % DIMENSION] += 1.0  # noqa: S324
    return vector if any(vector) else [1.0] + [0.0] * (DIMENSION - 1)


@pytest.fixture
async def fake_embeddings() -> AsyncIterator[str]:
    async def embeddings(request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        assert body["model"] == "fake-8"
        data = [{"embedding": fake_vector(t), "index": i} for i, t in enumerate(body["input"])]
        return web.json_response({"data": data})

    app = web.Application()
    app.router.add_post("/v1/embeddings", embeddings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    await runner.cleanup()


@pytest.fixture
async def own_database(devstack: StackInfo) -> AsyncIterator[str]:
    """A database of this test's own: it changes which model is active."""
    name = f"xtyl_reembed_{secrets.token_hex(4)}"
    create_database(devstack.postgres_dsn, name)
    url = devstack.dsn(name)
    await migrate(url)
    yield url
    drop_database(devstack.postgres_dsn, name)


async def add_inline(service: RagService, owner: uuid.UUID, title: str, text: str) -> uuid.UUID:
    document = await service.documents.create_inline(
        owner, title=title, text=text, sha256=sha256_text(text), metadata={}
    )
    assert (await service.index_document(document.id)).outcome == "ready"
    return document.id


async def models_of(service: RagService, document_id: uuid.UUID) -> set[str]:
    rows = await service.pool.fetch(
        "select distinct model from xtyl_rag.chunk_embeddings where document_id = $1",
        document_id,
    )
    return {row["model"] for row in rows}


async def test_model_change_reembeds_then_switches(
    rag_env: dict[str, str], own_database: str, fake_embeddings: str
) -> None:
    env = {**rag_env, "DATABASE_URL": own_database}
    local_settings = load_settings(RagSettings, environ=env)
    new_settings = load_settings(
        RagSettings,
        environ={
            **env,
            "EMBEDDER": "openai",
            "EMBEDDINGS_URL": fake_embeddings,
            "EMBEDDING_MODEL": "fake-8",
            "EMBEDDING_DIMENSION": str(DIMENSION),
        },
    )
    owner = uuid.uuid4()
    async with open_service(local_settings, EventSettings()) as old:
        assert old.model_status.state == "first"
        first = await add_inline(old, owner, "Bread", "sourdough starter needs flour and water")

    async with open_service(new_settings, EventSettings()) as new:
        assert new.model_status.state == "changed"
        assert new.model_status.active.model == "local:all-MiniLM-L6-v2"
        assert new.model_status.configured.model == "openai:fake-8"
        before = await new.search(
            owner, "sourdough flour", k=5, mode="semantic", filters=SearchFilters()
        )
        assert before.model == "local:all-MiniLM-L6-v2"  # still the old vectors
        assert [hit.document_id for hit in before.hits] == [first]

        second = await add_inline(new, owner, "Network", "tcp slow start congestion window")
        assert await models_of(new, first) == {"local:all-MiniLM-L6-v2"}
        assert await models_of(new, second) == {"local:all-MiniLM-L6-v2", "openai:fake-8"}

        outcome = await new.reembed(batch=1)
        assert outcome.startswith("switched")
        active = await new.models.active()
        assert active is not None
        assert (active.model, active.dimension) == ("openai:fake-8", DIMENSION)
        assert await models_of(new, first) == {"openai:fake-8"}
        assert await new.pool.fetchval(
            "select count(*) from pg_indexes where indexname = $1", index_name("openai:fake-8")
        )

        after = await new.search(
            owner, "tcp congestion window", k=5, mode="semantic", filters=SearchFilters()
        )
        assert after.model == "openai:fake-8"
        assert {hit.document_id for hit in after.hits} == {first, second}
        assert after.hits[0].document_id == second
        assert await new.reembed() == "nothing to do: openai:fake-8 is already active"
