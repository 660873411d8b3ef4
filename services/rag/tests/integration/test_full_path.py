"""The whole path with real processes: upload to storage -> outbox -> relay -> stream ``files``
-> rag-worker (bytes from storage's internal route) -> ready -> searchable over HTTP."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from xtyl_devstack.processes import ManagedProcess
from xtyl_devstack.service_process import RunningService, running_service_async
from xtyl_devstack.stack import StackInfo

from .conftest import User, documents_by_file, storage_env, upload
from .samples import QUERIES, make_zip_bomb_docx, sample_files

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def storage_service(
    rag_env: dict[str, str],
    devstack: StackInfo,
    s3_client: Any,
    storage_port: int,
    service_log_dir: Path,
) -> AsyncIterator[RunningService]:
    bucket = f"rag-full-path-{secrets.token_hex(4)}"
    await asyncio.to_thread(s3_client.create_bucket, Bucket=bucket)
    env = storage_env(rag_env, devstack, bucket)
    async with running_service_async(
        "xtyl_storage",
        env,
        log_dir=service_log_dir,
        name="storage",
        port=storage_port,
        ready_path="/readyz",
    ) as service:
        yield service


async def test_uploaded_files_become_ready_and_searchable(
    http: aiohttp.ClientSession,
    storage_service: RunningService,
    rag_service: RunningService,
    rag_worker: ManagedProcess,
    make_user: Callable[[], User],
    capsys: pytest.CaptureFixture[str],
) -> None:
    user = make_user()
    files = sample_files()
    uploaded: dict[str, tuple[str, float]] = {}
    for kind, (name, ctype, data) in files.items():
        uploaded[kind] = (await upload(http, storage_service, user, name, ctype, data), time.time())
    bomb_id = await upload(
        http,
        storage_service,
        user,
        "bomb.docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        make_zip_bomb_docx(),
    )
    took: dict[str, float] = {}
    deadline = time.monotonic() + 60
    while True:
        documents = await documents_by_file(http, rag_service, user)
        for kind, (file_id, at) in uploaded.items():
            document = documents.get(file_id)
            if kind not in took and document and document["status"] in ("ready", "failed"):
                took[kind] = time.time() - at
        bomb = documents.get(bomb_id)
        if len(took) == len(uploaded) and bomb and bomb["status"] == "failed":
            break
        assert time.monotonic() < deadline, (took, documents)
        await asyncio.sleep(0.05)
    for file_id, _ in uploaded.values():
        assert documents[file_id]["status"] == "ready", documents[file_id]
    assert bomb is not None
    assert bomb["error"]["code"] == "too_large"

    for kind, query in QUERIES.items():
        async with http.post(
            f"{rag_service.url}/v1/search", json={"query": query, "k": 3}, headers=user.headers
        ) as resp:
            results = (await resp.json())["results"]
        assert results[0]["document_id"] == documents[uploaded[kind][0]]["id"], (kind, results)

    # POST {file_id}: the same document, resolved through storage; another user's file is 404
    some_file = uploaded["md"][0]
    async with http.post(
        f"{rag_service.url}/v1/documents", json={"file_id": some_file}, headers=user.headers
    ) as resp:
        assert resp.status == 202, await resp.text()
        assert (await resp.json())["id"] == documents[some_file]["id"]
    async with http.post(
        f"{rag_service.url}/v1/documents", json={"file_id": some_file}, headers=make_user().headers
    ) as resp:
        assert resp.status == 404
        assert (await resp.json())["code"] == "file_not_found"

    with capsys.disabled():
        print(
            "\nupload -> ready through storage, stream and worker:",
            {kind: f"{seconds * 1000:.0f} ms" for kind, seconds in took.items()},
        )
