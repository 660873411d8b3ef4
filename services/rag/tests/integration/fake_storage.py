"""A storage stand-in for the rag service: the routes rag calls (``/readyz``, a file's metadata
and bytes on ``/internal/files``), answering from a script of statuses per route first (502/503),
then as storage would."""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class StoredFile:
    owner_id: uuid.UUID
    name: str
    data: bytes


@dataclass
class FakeStorage:
    """Answers from a script of statuses per route first (502/503), then as storage would."""

    files: dict[uuid.UUID, StoredFile] = field(default_factory=dict[uuid.UUID, StoredFile])
    script: dict[str, list[int]] = field(default_factory=dict[str, list[int]])
    seen: Counter[str] = field(default_factory=Counter[str])

    def scripted(self, route: str) -> int | None:
        self.seen[route] += 1
        statuses = self.script.get(route, [])
        return statuses.pop(0) if statuses else None

    async def readyz(self, request: web.Request) -> web.Response:
        return web.Response(status=self.scripted("readyz") or 200)

    async def info(self, request: web.Request) -> web.Response:
        if status := self.scripted("info"):
            return web.Response(status=status)
        file_id = uuid.UUID(request.match_info["file_id"])
        stored = self.files[file_id]
        return web.json_response(
            {
                "id": str(file_id),
                "owner_id": str(stored.owner_id),
                "name": stored.name,
                "size": len(stored.data),
                "content_type": "text/plain",
                "sha256": hashlib.sha256(stored.data).hexdigest(),
            }
        )

    async def content(self, request: web.Request) -> web.Response:
        if status := self.scripted("content"):
            return web.Response(status=status)
        return web.Response(body=self.files[uuid.UUID(request.match_info["file_id"])].data)

    @asynccontextmanager
    async def serving(self) -> AsyncGenerator[str]:
        """Listen on 127.0.0.1 (a free port) until the block ends; its base URL."""
        app = web.Application()
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/internal/files/{file_id}", self.info)
        app.router.add_get("/internal/files/{file_id}/content", self.content)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            yield f"http://127.0.0.1:{runner.addresses[0][1]}"
        finally:
            await runner.cleanup()
