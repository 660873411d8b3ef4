"""Settings: a missing or malformed variable is one line naming it; exit status 2."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from xtyl_common.settings import BaseSettings, SettingsError, load_settings


class ExampleSettings(BaseSettings, frozen=True, kw_only=True):
    database_url: str
    pool_max: int = 10
    public_url: str = ""


def test_values_are_read_and_converted() -> None:
    settings = load_settings(
        ExampleSettings,
        environ={"DATABASE_URL": "postgresql://db/x", "PORT": "9000", "POOL_MAX": "3"},
    )
    assert settings.database_url == "postgresql://db/x"
    assert settings.port == 9000
    assert settings.pool_max == 3
    assert settings.log_json is None


def test_empty_variable_counts_as_unset() -> None:
    settings = load_settings(ExampleSettings, environ={"DATABASE_URL": "x", "POOL_MAX": " "})
    assert settings.pool_max == 10


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "DATABASE_URL: is required but not set"),
        ({"DATABASE_URL": "x", "PORT": "eighty"}, "PORT: is malformed: Expected `int`, got `str`"),
        ({"DATABASE_URL": "x", "PORT": "70000"}, "PORT: is malformed: must be a TCP port"),
        ({"DATABASE_URL": "x", "LOG_JSON": "perhaps"}, "LOG_JSON: is malformed"),
        ({"DATABASE_URL": "x", "LOG_LEVEL": "loud"}, "LOG_LEVEL: is malformed: must be one of"),
    ],
)
def test_bad_settings_name_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(ExampleSettings, environ=environ)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_prefix_applies_to_names() -> None:
    with pytest.raises(SettingsError, match=r"^STORAGE_DATABASE_URL: is required"):
        load_settings(ExampleSettings, environ={"DATABASE_URL": "x"}, prefix="storage_")


@pytest.mark.parametrize("module", ["xtyl_gateway", "xtyl_storage", "xtyl_rag", "xtyl_notify"])
def test_service_without_required_setting_exits_2_with_one_line(module: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
    result = subprocess.run(
        [sys.executable, "-m", module],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.search(r"^xtyl-\w+: configuration error: [A-Z_]+: is required but not set$", lines[0])
    assert "Traceback" not in result.stderr


class ConditionalSettings(BaseSettings, frozen=True, kw_only=True):
    api_key: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.api_key is None and self.xtyl_env != "local":
            raise ValueError("is required unless XTYL_ENV=local (at `$.api_key`)")


def test_a_conditionally_required_variable_reads_as_required() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(ConditionalSettings, environ={})
    assert str(caught.value) == "API_KEY: is required unless XTYL_ENV=local"
    assert load_settings(ConditionalSettings, environ={"XTYL_ENV": "local"}).api_key is None
