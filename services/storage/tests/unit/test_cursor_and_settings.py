from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from xtyl_common.errors import InvalidInput
from xtyl_common.pagination import Cursor, check_limit, decode_cursor, encode_cursor
from xtyl_common.settings import SettingsError, load_settings
from xtyl_storage.domain.parts import MIB
from xtyl_storage.settings import StorageSettings

ENV = {
    "DATABASE_URL": "postgresql://db/x",
    "REDIS_URL": "redis://r",
    "R2_ENDPOINT": "https://acct.r2.cloudflarestorage.com",
    "R2_ACCESS_KEY": "ak",
    "R2_SECRET_KEY": "sk",
    "R2_BUCKET": "files",
    "SUPABASE_JWT_SECRET": "s" * 40,
    "INTERNAL_JWT_SECRET": "i" * 40,
}


def test_cursor_roundtrip() -> None:
    cursor = Cursor(created_at=datetime.now(UTC), id=uuid.uuid4())
    assert decode_cursor(encode_cursor(cursor)) == cursor


@pytest.mark.parametrize("text", ["", "x", "!!!", "W10", "WyJub3QgYSBkYXRlIiwgMV0", "e30"])
def test_foreign_cursors_are_invalid_input(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_cursor(text)
    assert caught.value.code == "invalid_cursor"


@pytest.mark.parametrize("limit", [0, -1, 101])
def test_limit_bounds(limit: int) -> None:
    with pytest.raises(InvalidInput):
        check_limit(limit)
    assert check_limit(100) == 100


def test_defaults() -> None:
    settings = load_settings(StorageSettings, environ=ENV)
    assert settings.r2_public_url == ""
    assert settings.presign_ttl_s == 900
    assert settings.part_bytes() == 5 * MIB
    assert settings.upload_part_concurrency == 3
    assert settings.quota_storage_bytes == 5 * 1024 * MIB
    assert settings.quota_files == 10_000
    assert settings.erasure_batch_size == 500


@pytest.mark.parametrize(
    ("missing", "variable"), [("R2_BUCKET", "R2_BUCKET"), ("R2_SECRET_KEY", "R2_SECRET_KEY")]
)
def test_missing_r2_variables_are_named(missing: str, variable: str) -> None:
    env = {k: v for k, v in ENV.items() if k != missing}
    with pytest.raises(SettingsError) as caught:
        load_settings(StorageSettings, environ=env)
    assert caught.value.variable == variable


@pytest.mark.parametrize(
    ("name", "value", "variable"),
    [
        ("PRESIGN_TTL_S", "901", "PRESIGN_TTL_S"),
        ("ALLOWED_CONTENT_TYPES", "text", "ALLOWED_CONTENT_TYPES"),
        ("UPLOAD_PART_CONCURRENCY", "0", "UPLOAD_PART_CONCURRENCY"),
        ("R2_PUBLIC_URL", "pub.r2.dev", "R2_PUBLIC_URL"),
        ("MAX_UPLOAD_BYTES", "0", "MAX_UPLOAD_BYTES"),
        ("QUOTA_STORAGE_BYTES", "-1", "QUOTA_STORAGE_BYTES"),
        ("QUOTA_FILES", "-1", "QUOTA_FILES"),
        ("ERASURE_BATCH_SIZE", "1001", "ERASURE_BATCH_SIZE"),
        ("ERASURE_BATCH_SIZE", "0", "ERASURE_BATCH_SIZE"),
    ],
)
def test_bad_values_are_named(name: str, value: str, variable: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(StorageSettings, environ={**ENV, name: value})
    assert caught.value.variable == variable


def test_small_part_sizes_are_raised_to_the_s3_minimum() -> None:
    settings = load_settings(StorageSettings, environ={**ENV, "UPLOAD_PART_BYTES": "1024"})
    assert settings.part_bytes() == 5 * MIB
