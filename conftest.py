"""Fixtures shared by every package's tests (the servers come from the xtyl_devstack plugin)."""

from __future__ import annotations

import inspect
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from blockbuster import blockbuster_ctx

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


@pytest.fixture(autouse=True)
def blockbuster(request: pytest.FixtureRequest) -> Iterator[None]:
    """Async unit tests fail when our code blocks the event loop (a sync socket, file, sleep).

    Only our packages are scanned. Integration tests are left out: there the blocking calls
    found were third-party (asyncpg stats ~/.pgpass on every connect, botocore reads its data
    files when a client is created) and blockbuster then also trips over pytest's own report
    formatting (os.path.abspath) while a background task is failing.
    """
    function = getattr(request.function, "__wrapped__", request.function)
    if "/tests/unit/" not in str(request.path) or not inspect.iscoroutinefunction(function):
        yield
        return
    with blockbuster_ctx(
        ["xtyl_common", "xtyl_gateway", "xtyl_storage", "xtyl_rag", "xtyl_notify"]
    ) as bb:
        # asyncpg looks for ~/.pgpass when a connection opens: a stat, once per connection
        for name in ("os.stat", "os.path.exists", "io.BufferedReader.read"):
            if name in bb.functions:
                bb.functions[name].can_block_in("asyncpg/connect_utils.py", "_read_password_file")
                # a logged traceback reads source lines once (linecache), by design
                bb.functions[name].can_block_in("linecache.py", {"checkcache", "updatecache"})
                bb.functions[name].can_block_in("rich/traceback.py", "_render_stack")
        yield
