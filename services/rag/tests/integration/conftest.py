"""The rag service on the real test stack: the service in process (``open_service``, as the
worker opens it) for the use cases, and real processes (API, worker) for the HTTP and stream
paths."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from xtyl_common.auth import issue_service_token
from xtyl_common.events import EventSettings
from xtyl_common.migrate import migrate
from xtyl_common.settings import load_settings
from xtyl_devstack.issuer import LocalIssuer
from xtyl_devstack.ports import free_port
from xtyl_devstack.postgres import create_database, drop_database
from xtyl_devstack.processes import ManagedProcess
from xtyl_devstack.service_process import (
    RunningService,
    running_service_async,
    start_worker_process,
)
from xtyl_devstack.stack import StackInfo
from xtyl_rag.domain.documents import Document, FileSource
from xtyl_rag.service import RagService, open_service
from xtyl_rag.service.indexing import Indexer
from xtyl_rag.settings import RagSettings

#: Small limits so the oversized-file tests stay fast.
MAX_DOCUMENT_BYTES = 2 * 1024 * 1024


@pytest.fixture(scope="session")
def stream_prefix() -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"test:{worker}:{secrets.token_hex(4)}:events"


@pytest.fixture(scope="session")
def storage_port() -> int:
    """Where the storage service of the full-path test listens (started only by that test)."""
    return free_port()


@pytest.fixture(scope="session")
def rag_env(
    migrated_database_url: str,
    redis_url: str,
    auth_env: dict[str, str],
    stream_prefix: str,
    storage_port: int,
) -> dict[str, str]:
    return {
        **auth_env,
        "DATABASE_URL": migrated_database_url,
        "REDIS_URL": redis_url,
        "STORAGE_URL": f"http://127.0.0.1:{storage_port}",
        # storage runs only in the tests that start it: elsewhere, do not wait for it long
        "STORAGE_READY_WAIT_S": "0.5",
        "EVENTS_STREAM_PREFIX": stream_prefix,
        "EVENTS_READ_BLOCK_MS": "200",
        "EVENTS_RELAY_POLL_INTERVAL_S": "0.2",
        "MAX_DOCUMENT_BYTES": str(MAX_DOCUMENT_BYTES),
        "EXTRACTION_TIMEOUT_S": "20",
        "EXTRACTION_MEMORY_MB": "768",
        "EMBEDDING_THREADS": "1",
    }


@pytest.fixture(scope="session")
def rag_settings(rag_env: dict[str, str]) -> RagSettings:
    return load_settings(RagSettings, environ=rag_env)


@pytest.fixture(scope="session")
async def service(rag_settings: RagSettings, stream_prefix: str) -> AsyncIterator[RagService]:
    async with open_service(rag_settings, EventSettings(stream_prefix=stream_prefix)) as opened:
        await opened.models.ensure_index(opened.model_status.active.model, 384)
        yield opened


@pytest.fixture(scope="session")
def indexer(service: RagService) -> Indexer:
    return service.indexer


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_user(issuer: LocalIssuer) -> Callable[[], User]:
    def make() -> User:
        user_id = uuid.uuid4()
        return User(user_id, issuer.mint(user_id=user_id, email=f"{user_id.hex[:8]}@example.com"))

    return make


async def add_file_document(
    service: RagService, owner: uuid.UUID, name: str, content_type: str, data: bytes
) -> Document:
    source = FileSource(
        file_id=uuid.uuid4(),
        owner_id=owner,
        key=f"files/{owner}/{name}",
        name=name,
        content_type=content_type,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    return await service.documents.upsert_file(source, title=name)


@pytest.fixture(scope="session")
async def rag_service(
    rag_env: dict[str, str], service_log_dir: Path
) -> AsyncIterator[RunningService]:
    async with running_service_async(
        "xtyl_rag", rag_env, log_dir=service_log_dir, name="rag", ready_path="/readyz"
    ) as service:
        yield service


@pytest.fixture(scope="session")
async def rag_worker(
    rag_env: dict[str, str], service_log_dir: Path
) -> AsyncIterator[ManagedProcess]:
    process = await asyncio.to_thread(
        start_worker_process,
        "xtyl_rag.worker",
        rag_env,
        log_dir=service_log_dir,
        name="rag-worker",
        ready_log=b"rag_worker_started",
    )
    yield process
    await asyncio.to_thread(process.stop)


async def wait_for_status(
    http: aiohttp.ClientSession,
    base_url: str,
    user: User,
    document_id: str,
    *,
    timeout_s: float = 60.0,
) -> dict[str, Any]:
    """Poll GET /v1/documents/{id} until ready or failed."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        async with http.get(f"{base_url}/v1/documents/{document_id}", headers=user.headers) as resp:
            assert resp.status == 200, await resp.text()
            body: dict[str, Any] = await resp.json()
        if body["status"] in ("ready", "failed"):
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"document still {body['status']} after {timeout_s} s: {body}")
        await asyncio.sleep(0.1)


def storage_env(rag_env: dict[str, str], devstack: StackInfo, bucket: str) -> dict[str, str]:
    """The environment of a storage process beside the rag processes of ``rag_env``."""
    env = {
        key: rag_env[key]
        for key in (
            "DATABASE_URL",
            "REDIS_URL",
            "SUPABASE_URL",
            "SUPABASE_JWT_SECRET",
            "INTERNAL_JWT_SECRET",
            "EVENTS_STREAM_PREFIX",
            "EVENTS_RELAY_POLL_INTERVAL_S",
        )
    }
    return env | {
        "R2_ENDPOINT": devstack.s3_endpoint,
        "R2_ACCESS_KEY": devstack.s3_access_key,
        "R2_SECRET_KEY": devstack.s3_secret_key,
        "R2_BUCKET": bucket,
    }


async def upload(
    http: aiohttp.ClientSession,
    storage: RunningService,
    user: User,
    name: str,
    ctype: str,
    data: bytes,
) -> str:
    async with http.post(
        f"{storage.url}/v1/files?filename={name}",
        data=data,
        headers={**user.headers, "Content-Type": ctype},
    ) as resp:
        assert resp.status == 201, await resp.text()
        file_id: str = (await resp.json())["id"]
    return file_id


async def documents_by_file(
    http: aiohttp.ClientSession, rag: RunningService, user: User
) -> dict[str, dict[str, Any]]:
    async with http.get(f"{rag.url}/v1/documents?limit=100", headers=user.headers) as resp:
        return {item["file_id"]: item for item in (await resp.json())["items"]}


def gateway_headers(rag_env: dict[str, str], user_id: uuid.UUID | None) -> dict[str, str]:
    """What the gateway sends to ``/internal/me/*``: a service token naming the user."""
    token = issue_service_token(rag_env["INTERNAL_JWT_SECRET"], service="gateway", user_id=user_id)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def private_database_url(devstack: StackInfo) -> AsyncIterator[str]:
    """A migrated database of this test's own: no other process of the session (workers, APIs,
    their reconcilers) touches its rows, so every row in it is this test's."""
    name = f"xtyl_rag_{secrets.token_hex(4)}"
    await asyncio.to_thread(create_database, devstack.postgres_dsn, name)
    await migrate(devstack.dsn(name))
    yield devstack.dsn(name)
    await asyncio.to_thread(drop_database, devstack.postgres_dsn, name)
