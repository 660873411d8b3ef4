"""The OpenAI-compatible embedder against a real HTTP server on 127.0.0.1 that plays the
``/embeddings`` endpoint and checks what it receives."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec
import numpy as np
import pytest
import pytest_asyncio
from aiohttp import web

from xtyl_common.errors import TimedOut, Unavailable
from xtyl_common.http import create_session
from xtyl_common.settings import load_settings
from xtyl_rag.adapters.embedders import Embedder, EmbeddingFailed, build_embedder
from xtyl_rag.settings import RagSettings

pytestmark = pytest.mark.integration

API_KEY = "sk-or-test-key"
BASE = {
    "DATABASE_URL": "postgresql://localhost/x",
    "REDIS_URL": "redis://localhost",
    "SUPABASE_JWT_SECRET": "s" * 40,
    "INTERNAL_JWT_SECRET": "i" * 40,
}
MODEL = "acme/embed-small"
DIMENSION = 8


def fake_vector(text: str, dimension: int = DIMENSION) -> list[float]:
    """Deterministic, deliberately not unit length (the embedder normalises)."""
    digest = hashlib.sha256(text.encode()).digest()
    return [3.0 * (byte - 127.5) / 127.5 for byte in digest[:dimension]]


@dataclass
class Scripted:
    status: int
    headers: dict[str, str] = field(default_factory=dict[str, str])
    body: bytes | None = None
    delay_s: float = 0.0


class FakeEndpoint:
    """Answers from a script first, then with correct embeddings (in reverse order, with
    ``index``, as the API allows)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.script: list[Scripted] = []
        self.dimension = DIMENSION

    async def handle(self, request: web.Request) -> web.Response:
        self.headers.append(dict(request.headers))
        payload = msgspec.json.decode(await request.read())
        self.requests.append(payload)
        if self.script:
            step = self.script.pop(0)
            await asyncio.sleep(step.delay_s)
            return web.Response(status=step.status, headers=step.headers, body=step.body or b"{}")
        data = [
            {"object": "embedding", "index": i, "embedding": fake_vector(t, self.dimension)}
            for i, t in enumerate(payload["input"])
        ]
        body = {"object": "list", "model": payload["model"], "data": data[::-1]}
        return web.json_response(body)


@pytest_asyncio.fixture
async def endpoint() -> AsyncIterator[tuple[FakeEndpoint, str]]:
    fake = FakeEndpoint()
    app = web.Application()
    app.router.add_post("/v1/embeddings", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield fake, f"http://127.0.0.1:{port}/v1"
    await runner.cleanup()


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    shared = create_session()
    yield shared
    await shared.close()


async def make_embedder(url: str, session: aiohttp.ClientSession, **overrides: Any) -> Embedder:
    """The embedder the service builds from these settings (variable names in lower case)."""
    variables: dict[str, Any] = {
        "embedder": "openai",
        "embeddings_url": url,
        "embedding_model": MODEL,
        "embedding_dimension": DIMENSION,
        "openrouter_api_key": API_KEY,
        "embedding_backoff_base_s": 0.01,
        "embedding_backoff_max_s": 1.0,
        **overrides,
    }
    environ = BASE | {name.upper(): str(value) for name, value in variables.items()}
    settings = load_settings(RagSettings, environ=environ)
    return await build_embedder(settings.embedder_config(), session)


def unit(vector: list[float]) -> np.ndarray[Any, np.dtype[np.float32]]:
    array = np.asarray(vector, dtype=np.float32)
    return (array / np.linalg.norm(array)).astype(np.float32)


async def test_sends_key_model_and_inputs_and_returns_unit_vectors_in_order(
    endpoint: tuple[FakeEndpoint, str], session: aiohttp.ClientSession
) -> None:
    fake, url = endpoint
    embedder = await make_embedder(url, session)

    vectors = await embedder.embed(["first text", "second text", "third"])

    assert fake.headers[0]["Authorization"] == f"Bearer {API_KEY}"
    assert fake.requests == [
        {
            "model": MODEL,
            "input": ["first text", "second text", "third"],
            "encoding_format": "float",
        }
    ]
    assert vectors.shape == (3, DIMENSION)
    assert vectors.dtype == np.float32
    for row, text in zip(vectors, ["first text", "second text", "third"], strict=True):
        np.testing.assert_allclose(row, unit(fake_vector(text)), atol=1e-6)


async def test_splits_inputs_into_batches(
    endpoint: tuple[FakeEndpoint, str], session: aiohttp.ClientSession
) -> None:
    fake, url = endpoint
    texts = [f"text {n}" for n in range(5)]
    embedder = await make_embedder(url, session, embedding_batch_size=2)

    vectors = await embedder.embed(texts)

    assert [request["input"] for request in fake.requests] == [texts[0:2], texts[2:4], texts[4:]]
    np.testing.assert_allclose(vectors[4], unit(fake_vector("text 4")), atol=1e-6)


async def test_waits_as_retry_after_asks_then_succeeds(
    endpoint: tuple[FakeEndpoint, str], session: aiohttp.ClientSession
) -> None:
    fake, url = endpoint
    fake.script.append(Scripted(429, {"Retry-After": "0.3"}, b'{"error": "slow down"}'))
    embedder = await make_embedder(url, session)
    started = time.perf_counter()

    vectors = await embedder.embed(["hello"])

    assert time.perf_counter() - started >= 0.3
    assert len(fake.requests) == 2
    assert fake.requests[0] == fake.requests[1]
    np.testing.assert_allclose(vectors[0], unit(fake_vector("hello")), atol=1e-6)


async def test_retries_server_errors_then_gives_up(
    endpoint: tuple[FakeEndpoint, str], session: aiohttp.ClientSession
) -> None:
    fake, url = endpoint
    fake.script.extend(Scripted(503) for _ in range(3))
    embedder = await make_embedder(url, session, embedding_retries=2)

    with pytest.raises(Unavailable) as failed:
        await embedder.embed(["hello"])

    assert failed.value.code == "embedding_unavailable"
    assert len(fake.requests) == 3


async def test_long_retry_after_fails_fast_with_the_wait(
    endpoint: tuple[FakeEndpoint, str], session: aiohttp.ClientSession
) -> None:
    fake, url = endpoint
    fake.script.append(Scripted(429, {"Retry-After": "120"}))
    embedder = await make_embedder(url, session)

    with pytest.raises(Unavailable) as failed:
        await embedder.embed(["hello"])

    assert failed.value.code == "embedding_rate_limited"
    assert failed.value.extra["retry_after"] == 120
    assert len(fake.requests) == 1


async def test_rejected_request_is_not_retried(
    endpoint: tuple[FakeEndpoint, str], session: aiohttp.ClientSession
) -> None:
    fake, url = endpoint
    fake.script.append(Scripted(401, body=b'{"error": {"message": "No auth credentials"}}'))
    embedder = await make_embedder(url, session)

    with pytest.raises(EmbeddingFailed) as failed:
        await embedder.embed(["hello"])

    assert failed.value.code == "embedding_rejected"
    assert "401" in str(failed.value)
    assert "No auth credentials" in str(failed.value)
    assert len(fake.requests) == 1


async def test_dimension_mismatch_is_a_clear_error(
    endpoint: tuple[FakeEndpoint, str], session: aiohttp.ClientSession
) -> None:
    fake, url = endpoint
    fake.dimension = 16
    embedder = await make_embedder(url, session)

    with pytest.raises(EmbeddingFailed) as failed:
        await embedder.embed(["hello"])

    assert failed.value.code == "embedding_dimension_mismatch"
    assert "dimension 16" in str(failed.value)
    assert "EMBEDDING_DIMENSION is 8" in str(failed.value)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"data": [{"embedding": "nope", "index": 0}]}',
        b'{"data": []}',
        b'{"data": [{"embedding": [1,2,3,4,5,6,7,8], "index": 5}]}',
    ],
)
async def test_malformed_responses_are_rejected(
    endpoint: tuple[FakeEndpoint, str], session: aiohttp.ClientSession, body: bytes
) -> None:
    fake, url = endpoint
    fake.script.append(Scripted(200, {"Content-Type": "application/json"}, body))
    embedder = await make_embedder(url, session)

    with pytest.raises(EmbeddingFailed) as failed:
        await embedder.embed(["hello"])

    assert failed.value.code == "embedding_invalid_response"


async def test_slow_endpoint_times_out(
    endpoint: tuple[FakeEndpoint, str], session: aiohttp.ClientSession
) -> None:
    fake, url = endpoint
    fake.script.append(Scripted(200, delay_s=2.0))
    embedder = await make_embedder(url, session, embedding_timeout_s=0.2, embedding_retries=0)
    started = time.perf_counter()

    with pytest.raises(TimedOut):
        await embedder.embed(["hello"])

    assert time.perf_counter() - started < 1.5


async def test_unreachable_endpoint_is_unavailable(session: aiohttp.ClientSession) -> None:
    embedder = await make_embedder("http://127.0.0.1:9/v1", session, embedding_retries=1)

    with pytest.raises(Unavailable) as failed:
        await embedder.embed(["hello"])

    assert failed.value.code == "embedding_unavailable"
