"""The gateway's calls to the services' ``/internal/me/*`` routes, made for one user.

Each call carries a short-lived service token that names the user (``issue_service_token``
with ``user_id``): a service answers for that user only, and no user token opens these routes.
``GET /v1/me/usage``, ``/v1/me/deletion`` and ``/v1/me/export`` are built from them.

Small JSON answers are read whole (:meth:`ServiceCalls.get_json`, a short total timeout); the
export's NDJSON and file bytes stream (:meth:`ServiceCalls.stream`, a timeout on each silence,
none on the whole: a 1 GB file takes as long as it takes, but a service that stops sending is
given up on).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import msgspec

from xtyl_common.auth import issue_service_token
from xtyl_common.errors import DependencyError, TimedOut, Unavailable
from xtyl_common.http import request_headers

SERVICE_NAME = "gateway"
TOKEN_TTL_S = 300
JSON_TIMEOUT = aiohttp.ClientTimeout(total=5.0, connect=3.0)
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=3.0, sock_read=60.0)
CHUNK_BYTES = 64 * 1024
#: The longest NDJSON line taken from a service (one document with its text).
MAX_LINE_BYTES = 64 * 1024 * 1024


class NotServed(Exception):
    """The service has no such route or no such thing (404)."""


class ServiceCalls:
    def __init__(
        self, session: aiohttp.ClientSession, upstreams: Mapping[str, str], internal_secret: str
    ) -> None:
        self._session = session
        self._upstreams = {name: url.rstrip("/") for name, url in upstreams.items()}
        self._secret = internal_secret

    @property
    def names(self) -> list[str]:
        return list(self._upstreams)

    def _headers(self, user_id: uuid.UUID) -> dict[str, str]:
        token = issue_service_token(
            self._secret, service=SERVICE_NAME, user_id=user_id, ttl_s=TOKEN_TTL_S
        )
        return request_headers({"Authorization": f"Bearer {token}"})

    async def get_json(self, service: str, path: str, user_id: uuid.UUID) -> Any:
        """The JSON ``service`` answers ``GET path`` for ``user_id``; :class:`NotServed` on
        404, :class:`DependencyError` (and its 503/504 kinds) on anything but 200."""
        url = self._upstreams[service] + path
        try:
            async with self._session.get(
                url, headers=self._headers(user_id), timeout=JSON_TIMEOUT
            ) as resp:
                body = await resp.read()
                status = resp.status
        except TimeoutError as exc:
            raise TimedOut(f"{service} did not answer {path} in time") from exc
        except aiohttp.ClientError as exc:
            raise Unavailable(f"{service} unreachable: {type(exc).__name__}") from exc
        if status == 404:
            raise NotServed(f"{service} {path}")
        if status != 200:
            raise DependencyError(f"{service} answered {path} with {status}")
        try:
            return msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise DependencyError(f"{service} answered {path} with invalid JSON") from exc

    @asynccontextmanager
    async def stream(
        self, service: str, path: str, user_id: uuid.UUID
    ) -> AsyncGenerator[aiohttp.StreamReader]:
        """The body of ``service``'s answer to ``GET path``, to read as it arrives."""
        url = self._upstreams[service] + path
        try:
            async with self._session.get(
                url, headers=self._headers(user_id), timeout=STREAM_TIMEOUT
            ) as resp:
                if resp.status == 404:
                    raise NotServed(f"{service} {path}")
                if resp.status != 200:
                    raise DependencyError(f"{service} answered {path} with {resp.status}")
                yield resp.content
        except TimeoutError as exc:
            raise TimedOut(f"{service} stopped sending {path}") from exc
        except aiohttp.ClientError as exc:
            raise Unavailable(f"{service} failed sending {path}: {type(exc).__name__}") from exc

    async def lines(self, service: str, path: str, user_id: uuid.UUID) -> AsyncIterator[bytes]:
        """The non-empty lines of an NDJSON answer, one at a time: at most one line (a
        document's text, up to :data:`MAX_LINE_BYTES`) is held at once."""
        pending = bytearray()
        async for chunk in self.chunks(service, path, user_id):
            pending += chunk
            start = 0
            while (end := pending.find(b"\n", start)) != -1:
                line = bytes(pending[start:end]).strip()
                if line:
                    yield line
                start = end + 1
            del pending[:start]
            if len(pending) > MAX_LINE_BYTES:
                raise DependencyError(f"{service} sent a line over {MAX_LINE_BYTES} bytes")
        tail = bytes(pending).strip()
        if tail:
            yield tail

    async def chunks(self, service: str, path: str, user_id: uuid.UUID) -> AsyncIterator[bytes]:
        """A binary answer in chunks of up to 64 KiB."""
        async with self.stream(service, path, user_id) as body:
            async for chunk in body.iter_chunked(CHUNK_BYTES):
                yield chunk
