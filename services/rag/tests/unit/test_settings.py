"""RagSettings: the one place the variables are read (the embedder's included), bad values name
their variable, and the adapters get what the variables say."""

from __future__ import annotations

import pytest

from xtyl_common.retry import RetryPolicy
from xtyl_common.settings import SettingsError, load_settings
from xtyl_rag.adapters.embedders import EmbeddingEndpoint
from xtyl_rag.domain.quotas import UserLimits
from xtyl_rag.settings import RagSettings

BASE = {
    "DATABASE_URL": "postgresql://localhost/x",
    "REDIS_URL": "redis://localhost",
    "SUPABASE_JWT_SECRET": "s" * 40,
    "INTERNAL_JWT_SECRET": "i" * 40,
}


def test_defaults_and_embedder_config() -> None:
    settings = load_settings(RagSettings, environ=BASE)
    config = settings.embedder_config()
    assert (config.model, config.dimension) == ("local:all-MiniLM-L6-v2", 384)
    assert config.endpoint is None  # no key and a remote default URL: only the local model
    assert settings.llm_enabled is False
    assert settings.search_tuning().exact_max_chunks == settings.search_exact_max_chunks


def test_the_quota_and_erasure_variables() -> None:
    assert load_settings(RagSettings, environ=BASE).user_limits() == UserLimits(
        documents=1000, chunks=200_000, answers_per_day=200
    )
    settings = load_settings(
        RagSettings,
        environ={
            **BASE,
            "QUOTA_DOCUMENTS": "5",
            "QUOTA_CHUNKS": "0",
            "QUOTA_ANSWERS_PER_DAY": "7",
            "ERASURE_BATCH_SIZE": "50",
            "ERASURE_BATCH_PAUSE_S": "0.5",
        },
    )
    assert settings.user_limits() == UserLimits(documents=5, chunks=0, answers_per_day=7)
    assert (settings.erasure_batch_size, settings.erasure_batch_pause_s) == (50, 0.5)


def test_the_embedder_variables_make_the_embedder_config() -> None:
    settings = load_settings(
        RagSettings,
        environ={
            **BASE,
            "EMBEDDER": "openai",
            "EMBEDDINGS_URL": "https://embeddings.example.com/v1",
            "EMBEDDING_MODEL": "acme/embed-small",
            "EMBEDDING_DIMENSION": "8",
            "OPENROUTER_API_KEY": "sk-test",
            "EMBEDDING_BATCH_SIZE": "7",
            "EMBEDDING_TIMEOUT_S": "9",
            "EMBEDDING_CONNECT_TIMEOUT_S": "2",
            "EMBEDDING_RETRIES": "2",
            "EMBEDDING_BACKOFF_BASE_S": "0.1",
            "EMBEDDING_BACKOFF_MAX_S": "3",
            "EMBEDDING_THREADS": "1",
        },
    )
    config = settings.embedder_config()
    assert (config.model, config.dimension) == ("openai:acme/embed-small", 8)
    assert (config.batch_size, config.threads) == (7, 1)
    # one request: 3 tries, 0.1 s doubling to 3 s, a Retry-After slept up to 3 s
    assert config.endpoint == EmbeddingEndpoint(
        url="https://embeddings.example.com/v1",
        api_key="sk-test",
        timeout_s=9.0,
        connect_timeout_s=2.0,
        retry=RetryPolicy(
            attempts=3,
            timeout_s=None,
            wait_initial_s=0.1,
            wait_max_s=3.0,
            wait_jitter_s=0.1,
            max_retry_after_s=3.0,
        ),
    )


def test_a_local_embedder_with_a_key_can_still_reach_the_endpoint() -> None:
    """During a change of model to or from ``openai`` the process builds both embedders."""
    settings = load_settings(RagSettings, environ={**BASE, "OPENROUTER_API_KEY": "sk-test"})
    config = settings.embedder_config()
    assert config.model == "local:all-MiniLM-L6-v2"
    assert config.endpoint is not None
    assert config.endpoint.url == "https://openrouter.ai/api/v1"


@pytest.mark.parametrize(
    ("extra", "variable"),
    [
        ({"EMBEDDER": "openai"}, "EMBEDDING_MODEL"),
        ({"LLM_URL": "ftp://x"}, "LLM_URL"),
        ({"SEARCH_EF_SEARCH": "5000"}, "SEARCH_EF_SEARCH"),
        ({"MAX_DOCUMENT_BYTES": "0"}, "MAX_DOCUMENT_BYTES"),
        ({"INDEX_LEASE_S": "0.5"}, "INDEX_LEASE_S"),
        ({"STORAGE_READY_WAIT_S": "-1"}, "STORAGE_READY_WAIT_S"),
        ({"QUOTA_DOCUMENTS": "-1"}, "QUOTA_DOCUMENTS"),
        ({"QUOTA_CHUNKS": "-5"}, "QUOTA_CHUNKS"),
        ({"QUOTA_ANSWERS_PER_DAY": "-1"}, "QUOTA_ANSWERS_PER_DAY"),
        ({"ERASURE_BATCH_SIZE": "0"}, "ERASURE_BATCH_SIZE"),
        ({"ERASURE_BATCH_PAUSE_S": "-0.1"}, "ERASURE_BATCH_PAUSE_S"),
    ],
)
def test_bad_values_name_the_variable(extra: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(RagSettings, environ={**BASE, **extra})
    assert caught.value.variable == variable


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        (
            {"EMBEDDER": "openai", "EMBEDDING_MODEL": "m", "EMBEDDING_DIMENSION": "8"},
            "OPENROUTER_API_KEY",
        ),
        ({"EMBEDDER": "openai", "EMBEDDING_DIMENSION": "8"}, "EMBEDDING_MODEL"),
        ({"EMBEDDER": "openai", "EMBEDDING_MODEL": "m"}, "EMBEDDING_DIMENSION"),
        ({"EMBEDDING_DIMENSION": "768"}, "EMBEDDING_DIMENSION"),
        ({"EMBEDDER": "bert"}, "EMBEDDER"),
        ({"EMBEDDING_BATCH_SIZE": "0"}, "EMBEDDING_BATCH_SIZE"),
        ({"EMBEDDING_RETRIES": "-1"}, "EMBEDDING_RETRIES"),
        ({"EMBEDDING_BACKOFF_MAX_S": "-1"}, "EMBEDDING_BACKOFF_MAX_S"),
    ],
)
def test_bad_embedder_settings_name_the_variable(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(RagSettings, environ={**BASE, **environ})

    assert error.value.variable == variable


def test_settings_for_a_local_openai_compatible_server_need_no_key() -> None:
    settings = load_settings(
        RagSettings,
        environ={
            **BASE,
            "EMBEDDER": "openai",
            "EMBEDDINGS_URL": "http://127.0.0.1:8080/v1",
            "EMBEDDING_MODEL": "all-minilm",
            "EMBEDDING_DIMENSION": "384",
        },
    )
    config = settings.embedder_config()

    assert config.dimension == 384
    assert config.endpoint is not None
    assert config.endpoint.api_key is None


def test_llm_needs_a_model_and_a_key_unless_local() -> None:
    assert not load_settings(RagSettings, environ={**BASE, "LLM_MODEL": "m"}).llm_enabled
    assert load_settings(
        RagSettings, environ={**BASE, "LLM_MODEL": "m", "OPENROUTER_API_KEY": "k"}
    ).llm_enabled
    assert load_settings(
        RagSettings, environ={**BASE, "LLM_MODEL": "m", "LLM_URL": "http://127.0.0.1:9/v1"}
    ).llm_enabled
