"""Fixtures shared by every package's tests (the servers come from the xtyl_devstack plugin)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from xtyl_common.migrate import migrate
from xtyl_devstack.issuer import LocalIssuer
from xtyl_devstack.testing import TEST_INTERNAL_SECRET, TEST_JWT_SECRET


@pytest.fixture(scope="session")
async def migrated_database_url(database_url: str) -> str:
    """This worker's database with every service's migrations applied."""
    await migrate(database_url)
    return database_url


@pytest.fixture(scope="session")
def service_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("service-logs")


@pytest.fixture(scope="session")
async def issuer(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalIssuer]:
    """The local Supabase-shaped issuer: an ES256 key published as a JWKS on 127.0.0.1."""
    async with LocalIssuer(tmp_path_factory.mktemp("issuer-keys")) as local:
        yield local


@pytest.fixture(scope="session")
def auth_env(issuer: LocalIssuer) -> dict[str, str]:
    return {
        "SUPABASE_URL": issuer.supabase_url,
        "SUPABASE_JWT_SECRET": TEST_JWT_SECRET,
        "INTERNAL_JWT_SECRET": TEST_INTERNAL_SECRET,
    }


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain client for talking to the services under test."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


@pytest.fixture
def unique() -> str:
    return secrets.token_hex(4)
