"""The local embedder: all-MiniLM-L6-v2 (int8, ONNX Runtime) from installed packages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest_asyncio

from xtyl_common.http import create_session
from xtyl_common.settings import load_settings
from xtyl_rag.adapters.embedders import (
    EmbedderConfig,
    LocalEmbedder,
    MiniLMTokenCounter,
    OpenAIEmbedder,
    build_embedder,
)
from xtyl_rag.adapters.embedders.tokenizer import MAX_SEQUENCE_TOKENS, load_model_tokenizer
from xtyl_rag.settings import RagSettings

BASE = {
    "DATABASE_URL": "postgresql://localhost/x",
    "REDIS_URL": "redis://localhost",
    "SUPABASE_JWT_SECRET": "s" * 40,
    "INTERNAL_JWT_SECRET": "i" * 40,
}


@pytest_asyncio.fixture(scope="module")
async def embedder() -> AsyncIterator[LocalEmbedder]:
    loaded = await LocalEmbedder.load(max_batch=8)
    yield loaded
    await loaded.aclose()


async def test_vectors_have_the_model_shape_and_unit_length(embedder: LocalEmbedder) -> None:
    vectors = await embedder.embed(["hello world", "a second, longer sentence about search"])

    assert embedder.model == "local:all-MiniLM-L6-v2"
    assert embedder.dimension == 384
    assert vectors.shape == (2, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


async def test_no_texts_give_no_vectors(embedder: LocalEmbedder) -> None:
    assert (await embedder.embed([])).shape == (0, 384)


async def test_paraphrases_are_closer_than_unrelated_sentences(embedder: LocalEmbedder) -> None:
    pairs = [
        ("How do I reset my password?", "I forgot my password and need to change it."),
        ("The cat sleeps on the sofa.", "A kitten is napping on the couch."),
        ("Invoices are sent at the end of each month.", "We bill customers monthly."),
    ]
    unrelated = [
        ("How do I reset my password?", "The cat sleeps on the sofa."),
        ("A kitten is napping on the couch.", "We bill customers monthly."),
        ("Invoices are sent at the end of each month.", "I forgot my password."),
    ]
    left = await embedder.embed([a for a, _ in pairs + unrelated])
    right = await embedder.embed([b for _, b in pairs + unrelated])
    cosine = (left * right).sum(axis=1)

    similar, different = cosine[: len(pairs)], cosine[len(pairs) :]
    assert similar.min() > 0.5
    assert different.max() < 0.25
    assert similar.min() - different.max() > 0.3


async def test_batching_and_order_do_not_change_vectors(embedder: LocalEmbedder) -> None:
    texts = [f"sentence number {n} " + "with more words " * (n % 7) for n in range(21)]

    batched = await embedder.embed(texts)  # max_batch=8, sorted by length inside
    one_by_one = np.concatenate([await embedder.embed([text]) for text in texts])

    np.testing.assert_allclose(batched, one_by_one, atol=2e-4)


async def test_long_texts_are_truncated_at_256_word_pieces(embedder: LocalEmbedder) -> None:
    long_text = "retrieval augmented generation " * 200
    tokens = (await asyncio.to_thread(load_model_tokenizer)).encode(long_text)

    vectors = await embedder.embed([long_text, long_text + " and an ending it never sees"])

    assert len(tokens.ids) == MAX_SEQUENCE_TOKENS
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)


async def test_concurrent_callers_get_their_own_vectors(embedder: LocalEmbedder) -> None:
    texts = [["alpha beta"], ["gamma delta epsilon"], ["zeta"]]

    together = await asyncio.gather(*(embedder.embed(t) for t in texts))
    alone = [await embedder.embed(t) for t in texts]

    for got, expected in zip(together, alone, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_token_counter_counts_word_pieces_without_special_tokens() -> None:
    count = MiniLMTokenCounter.load()

    assert count(["hello world", "", "hello, world!"]) == [2, 0, 4]
    assert count([]) == []
    assert count(["word " * 1000]) == [1000]  # no truncation when counting


async def test_build_embedder_picks_by_setting() -> None:
    local = await build_embedder(EmbedderConfig(), None)
    assert isinstance(local, LocalEmbedder)
    await local.aclose()

    settings = load_settings(
        RagSettings,
        environ={
            **BASE,
            "EMBEDDER": "openai",
            "EMBEDDING_MODEL": "openai/text-embedding-3-small",
            "EMBEDDING_DIMENSION": "1536",
            "OPENROUTER_API_KEY": "sk-test",
        },
    )
    session = create_session()
    try:
        remote = await build_embedder(settings.embedder_config(), session)
        assert isinstance(remote, OpenAIEmbedder)
        assert remote.model == "openai:openai/text-embedding-3-small"
        assert remote.dimension == 1536
    finally:
        await session.close()
