"""A small in-loop ASGI client: the app runs on the test's own event loop.

Litestar's test client runs the app in a thread and blocks the test's loop on every call, and
buffers request bodies; these tests need request bodies streamed chunk by chunk (with any
``Content-Length`` header, honest or not) and servers of their own (a fault-injecting S3
proxy) running on the same loop while the app works.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from litestar import Litestar

Body = bytes | AsyncIterable[bytes]


@dataclass
class Response:
    status_code: int
    headers: dict[str, str]
    content: bytes = b""
    chunks: int = 0

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


@dataclass
class AsgiClient:
    app: Litestar
    _lifespan: asyncio.Task[None] | None = None
    _to_app: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue[dict[str, Any]])
    _from_app: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue[dict[str, Any]])

    async def __aenter__(self) -> AsgiClient:
        async def send(message: Any) -> None:
            await self._from_app.put(dict(message))

        async def receive() -> Any:
            return await self._to_app.get()

        self._lifespan = asyncio.create_task(self.app({"type": "lifespan"}, receive, send))  # type: ignore[arg-type]
        await self._to_app.put({"type": "lifespan.startup"})
        message = await self._from_app.get()
        if message["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"app failed to start: {message}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._to_app.put({"type": "lifespan.shutdown"})
        await self._from_app.get()
        if self._lifespan is not None:
            await self._lifespan

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        content: Body = b"",
        json_body: Any = None,
    ) -> Response:
        header_map = {k.lower(): v for k, v in (headers or {}).items()}
        if json_body is not None:
            content = json.dumps(json_body).encode()
            header_map.setdefault("content-type", "application/json")
        if isinstance(content, bytes) and content:
            header_map.setdefault("content-length", str(len(content)))
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": urlencode(params or {}).encode(),
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in header_map.items()],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
            "state": {},
        }
        iterator = _single(content) if isinstance(content, bytes) else aiter(content)
        finished = False
        response_done = asyncio.Event()

        async def receive() -> Any:
            nonlocal finished
            if finished:
                # Like a server: after the body, the next message is the end of the exchange.
                await response_done.wait()
                return {"type": "http.disconnect"}
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                finished = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return {"type": "http.request", "body": chunk, "more_body": True}

        response = Response(0, {})
        body = bytearray()

        async def send(message: Any) -> None:
            if message["type"] == "http.response.start":
                response.status_code = message["status"]
                response.headers = {
                    k.decode("latin-1").lower(): v.decode("latin-1")
                    for k, v in message.get("headers", [])
                }
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
                response.chunks += 1
                if not message.get("more_body", False):
                    response_done.set()

        await self.app(scope, receive, send)  # type: ignore[arg-type]
        response.content = bytes(body)
        return response

    async def get(self, path: str, **kwargs: Any) -> Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Response:
        return await self.request("POST", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> Response:
        return await self.request("DELETE", path, **kwargs)


async def _single(content: bytes) -> AsyncIterator[bytes]:
    if content:
        yield content
