"""RagSettings: the embedder's variables stay in step with EmbedderConfig, bad values name
their variable."""

from __future__ import annotations

import msgspec
import pytest

from xtyl_common.settings import SettingsError, load_settings
from xtyl_rag.adapters.embedders import EmbedderConfig
from xtyl_rag.settings import RagSettings

BASE = {
    "DATABASE_URL": "postgresql://localhost/x",
    "REDIS_URL": "redis://localhost",
    "SUPABASE_JWT_SECRET": "s" * 40,
    "INTERNAL_JWT_SECRET": "i" * 40,
}


def test_every_embedder_field_is_a_setting_with_the_same_default() -> None:
    rag = {f.name: f for f in msgspec.structs.fields(RagSettings)}
    for field in msgspec.structs.fields(EmbedderConfig):
        assert field.name in rag, field.name
        assert rag[field.name].default == field.default, field.name


def test_defaults_and_embedder_config() -> None:
    settings = load_settings(RagSettings, environ=BASE)
    assert settings.embedder_config().model_name == "all-MiniLM-L6-v2"
    assert settings.llm_enabled is False
    assert settings.search_tuning().exact_max_chunks == settings.search_exact_max_chunks


@pytest.mark.parametrize(
    ("extra", "variable"),
    [
        ({"EMBEDDER": "openai"}, "EMBEDDING_MODEL"),
        ({"LLM_URL": "ftp://x"}, "LLM_URL"),
        ({"SEARCH_EF_SEARCH": "5000"}, "SEARCH_EF_SEARCH"),
        ({"MAX_DOCUMENT_BYTES": "0"}, "MAX_DOCUMENT_BYTES"),
        ({"INDEX_LEASE_S": "0.5"}, "INDEX_LEASE_S"),
        ({"STORAGE_READY_WAIT_S": "-1"}, "STORAGE_READY_WAIT_S"),
    ],
)
def test_bad_values_name_the_variable(extra: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(RagSettings, environ={**BASE, **extra})
    assert caught.value.variable == variable


def test_llm_needs_a_model_and_a_key_unless_local() -> None:
    assert not load_settings(RagSettings, environ={**BASE, "LLM_MODEL": "m"}).llm_enabled
    assert load_settings(
        RagSettings, environ={**BASE, "LLM_MODEL": "m", "OPENROUTER_API_KEY": "k"}
    ).llm_enabled
    assert load_settings(
        RagSettings, environ={**BASE, "LLM_MODEL": "m", "LLM_URL": "http://127.0.0.1:9/v1"}
    ).llm_enabled
