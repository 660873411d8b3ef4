"""The storage service, over internal HTTP with a service token made for the file's owner.

``GET {STORAGE_URL}/internal/files/{id}`` (metadata) and ``/internal/files/{id}/content``
(bytes, read up to a cap so an oversized file never fills the worker's memory). Storage
answers 404 for a file that does not exist or is not the named user's.

Each call makes one request and raises what went wrong; a failure worth another try is one of
:data:`PASSING_FAILURES`. Who retries is the caller's to say, once per call path (see the
service's README): the API retries a metadata lookup in process; an indexing run fetches the
content once, and its job runs it again later.

:meth:`StorageClient.wait_ready` lets indexing wait for storage before it spends a try: until a
call has gone through (and again after one could not reach storage or got a 502/503/504), it
probes ``/readyz`` (:data:`READY_PROBES`), one prober at a time for the whole process.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import aiohttp
import msgspec
import structlog

from xtyl_common.auth import issue_service_token
from xtyl_common.errors import NotFound, TimedOut, Unavailable
from xtyl_common.http import request_headers
from xtyl_common.retry import RetryPolicy
from xtyl_rag.domain.documents import FileSource

log = structlog.stdlib.get_logger("xtyl.rag.storage")

SERVICE_NAME = "rag-worker"
_RETRY_STATUSES = frozenset({502, 503, 504})
_PROBE_TIMEOUT = aiohttp.ClientTimeout(total=5.0, connect=2.0)
#: Probes of ``/readyz`` while storage is not ready: 100 ms doubling to 2 s, for as long as the
#: caller waits (``STORAGE_READY_WAIT_S``: its deadline, not the tries, ends the wait).
READY_PROBES = RetryPolicy(
    attempts=1_000_000, timeout_s=None, wait_initial_s=0.1, wait_max_s=2.0, wait_jitter_s=0.1
)


class StoredFileInfo(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    owner_id: uuid.UUID
    name: str
    size: int
    content_type: str
    sha256: str | None = None
    created_at: datetime | None = None
    key: str | None = None


_info_decoder = msgspec.json.Decoder(StoredFileInfo)


class FileTooLarge(Exception):
    """The file has more bytes than the caller accepts."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the file has more than {limit} bytes ({size} read or declared)")
        self.size = size
        self.limit = limit


class StorageDown(Unavailable):
    """Storage could not be reached or answered 502/503/504: passing, worth another try."""

    default_code = "storage_unavailable"


class StorageNotReady(Unavailable):
    """Storage's ``/readyz`` did not answer 200 (yet)."""

    default_code = "storage_unavailable"


#: What a retry of a storage request may cure (another status is an answer, not an outage).
PASSING_FAILURES = (StorageDown, TimedOut)


class StorageClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        internal_secret: str,
        timeout_s: float = 60.0,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._secret = internal_secret
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=5.0, sock_read=30.0)
        #: The last call reached a working storage (so no probe is needed).
        self._reachable = False
        self._probing = asyncio.Lock()

    async def ready(self) -> str | None:
        """None when storage's ``/readyz`` answers 200, else why not (one probe, 5 s at most)."""
        try:
            async with self._session.get(
                f"{self._base}/readyz", headers=request_headers({}), timeout=_PROBE_TIMEOUT
            ) as resp:
                if resp.status == 200:
                    return None
                return f"/readyz answered {resp.status}"
        except TimeoutError:
            return "/readyz timed out"
        except aiohttp.ClientError as exc:
            return f"unreachable: {type(exc).__name__}"

    async def wait_ready(self, *, within_s: float, log_every_s: float = 30.0) -> bool:
        """True once storage is ready (at once while the last call went through); False when it
        was not within ``within_s``. Logs ``storage_not_ready`` at once and every
        ``log_every_s`` while it waits, and ``storage_ready`` when it had to wait."""
        if self._reachable:
            return True
        loop = asyncio.get_running_loop()
        started = loop.time()
        logged_at: float | None = None

        async def probe() -> None:
            nonlocal logged_at
            if self._reachable:  # another prober found it ready while this one queued
                return
            why = await self.ready()
            if why is None:
                self._reachable = True
                return
            now = loop.time()
            if logged_at is None or now - logged_at >= log_every_s:
                log.warning(
                    "storage_not_ready", url=self._base, reason=why, waited_s=round(now - started)
                )
                logged_at = now
            raise StorageNotReady(why)

        try:
            async with asyncio.timeout(within_s), self._probing:
                await READY_PROBES.call(StorageNotReady, probe)
        except TimeoutError:
            log.warning("storage_still_not_ready", url=self._base, waited_s=within_s)
            return False
        if logged_at is not None:
            log.info("storage_ready", url=self._base, waited_s=round(loop.time() - started, 1))
        return True

    def _headers(self, owner_id: uuid.UUID) -> dict[str, str]:
        token = issue_service_token(self._secret, service=SERVICE_NAME, user_id=owner_id)
        return request_headers({"Authorization": f"Bearer {token}"})

    async def file_info(self, file_id: uuid.UUID, owner_id: uuid.UUID) -> FileSource:
        """The file's metadata, as indexing needs it; NotFound when it is not the owner's,
        one of :data:`PASSING_FAILURES` when storage fails (worth a retry)."""
        body = await self._get(f"/internal/files/{file_id}", owner_id, limit=1024 * 1024)
        try:
            info = _info_decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise Unavailable(f"storage sent unexpected file metadata: {exc}") from None
        if info.owner_id != owner_id or info.sha256 is None:
            raise NotFound("no such file", code="file_not_found")
        return FileSource(
            file_id=info.id,
            owner_id=info.owner_id,
            key=info.key,
            name=info.name,
            content_type=info.content_type,
            size=info.size,
            sha256=info.sha256,
        )

    async def content(self, file_id: uuid.UUID, owner_id: uuid.UUID, *, limit: int) -> bytes:
        """The file's bytes; FileTooLarge past ``limit``, NotFound if storage has no such file
        of this owner, one of :data:`PASSING_FAILURES` when storage fails (worth a retry)."""
        return await self._get(f"/internal/files/{file_id}/content", owner_id, limit=limit)

    async def _get(self, path: str, owner_id: uuid.UUID, *, limit: int) -> bytes:
        """One request: the body, or the error that says what went wrong."""
        try:
            async with self._session.get(
                self._base + path, headers=self._headers(owner_id), timeout=self._timeout
            ) as resp:
                self._reachable = resp.status not in _RETRY_STATUSES
                if resp.status == 200:
                    declared = resp.content_length
                    if declared is not None and declared > limit:
                        raise FileTooLarge(declared, limit)
                    return await _read_capped(resp, limit)
                if resp.status == 404:
                    raise NotFound("storage has no such file for this user", code="file_not_found")
                failed = StorageDown if resp.status in _RETRY_STATUSES else Unavailable
                raise failed(
                    f"storage answered {resp.status} for {path}",
                    code="storage_unavailable",
                    extra={"upstream_status": resp.status},
                )
        except TimeoutError as exc:
            raise TimedOut(f"storage timed out on {path}", code="storage_timeout") from exc
        except aiohttp.ClientError as exc:
            self._reachable = False
            raise StorageDown(
                f"storage unreachable: {type(exc).__name__}", code="storage_unavailable"
            ) from exc


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for block in resp.content.iter_chunked(256 * 1024):
        size += len(block)
        if size > limit:
            raise FileTooLarge(size, limit)
        parts.append(block)
    return b"".join(parts)
