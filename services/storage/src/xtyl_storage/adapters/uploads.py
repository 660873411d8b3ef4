"""Streaming a body of unknown length into S3 with bounded memory.

Bytes are hashed (sha256) and counted as they arrive (``xtyl_storage_bytes_received_total``). A
body that ends before one part size is sent as one PUT; a longer one becomes a multipart upload
of equal parts (R2 requires every part but the last to be the same size), at most
``concurrency`` parts in flight, so memory per upload stays near ``(concurrency + 1) x part
size`` whatever the file size. Any failure (too large, S3 down, client gone) aborts the
multipart upload before the error propagates, so no parts are left behind. A cancellation (the
request's deadline) only stops the parts in flight and propagates at once: waiting on a stalled
S3 to abort would outlast the deadline; the caller sweeps the key in the background instead
(:class:`~xtyl_storage.adapters.orphans.OrphanSweeper`).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterable
from typing import Protocol

import structlog

from xtyl_storage.adapters.metrics import BYTES_RECEIVED
from xtyl_storage.domain.files import StoredObject, too_large

log = structlog.stdlib.get_logger("xtyl.storage.uploads")


class UploadTarget(Protocol):
    """What an upload needs of a bucket (:class:`~xtyl_storage.adapters.s3.ObjectStore`)."""

    async def put(
        self,
        key: str,
        body: bytes,
        *,
        content_type: str,
        disposition: str,
        metadata: dict[str, str],
    ) -> None: ...

    async def create_multipart(
        self, key: str, *, content_type: str, disposition: str, metadata: dict[str, str]
    ) -> str: ...

    async def upload_part(self, key: str, upload_id: str, number: int, body: bytes) -> str: ...

    async def complete_multipart(self, key: str, upload_id: str, etags: list[str]) -> None: ...

    async def abort_multipart(self, key: str, upload_id: str) -> bool: ...


class _PartsInFlight:
    """The parts of one multipart upload being sent, at most ``concurrency`` at a time."""

    def __init__(self, store: UploadTarget, key: str, upload_id: str, concurrency: int) -> None:
        self._store = store
        self._key = key
        self.upload_id = upload_id
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: list[asyncio.Task[str]] = []

    def _raise_first_failure(self) -> None:
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                task.result()  # raises it

    async def submit(self, body: bytes) -> None:
        """Send the next part once a slot is free; raises the error of a part that failed."""
        await self._slots.acquire()
        try:
            self._raise_first_failure()
        except BaseException:
            self._slots.release()
            raise
        number = len(self._tasks) + 1
        self._tasks.append(asyncio.create_task(self._send(number, body)))

    async def _send(self, number: int, body: bytes) -> str:
        try:
            return await self._store.upload_part(self._key, self.upload_id, number, body)
        finally:
            self._slots.release()

    async def complete(self) -> None:
        etags = await asyncio.gather(*self._tasks)
        await self._store.complete_multipart(self._key, self.upload_id, list(etags))

    async def stop(self) -> None:
        """Cancel the parts in flight (no S3 request)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def abort(self) -> None:
        await self.stop()
        await self._store.abort_multipart(self._key, self.upload_id)


async def stream_to_s3(
    store: UploadTarget,
    key: str,
    chunks: AsyncIterable[bytes],
    *,
    content_type: str,
    disposition: str,
    metadata: dict[str, str],
    max_bytes: int,
    part_bytes: int,
    concurrency: int,
) -> StoredObject:
    """Write ``chunks`` to ``key``; raises :class:`PayloadTooLarge` past ``max_bytes``.

    On an error the multipart upload is aborted before the error propagates; on a
    cancellation only the parts in flight are stopped (see the module).
    """
    digest = hashlib.sha256()
    size = 0
    buffer = bytearray()
    parts: _PartsInFlight | None = None
    try:
        async for chunk in chunks:
            size += len(chunk)
            BYTES_RECEIVED.inc(len(chunk))
            if size > max_bytes:
                raise too_large(max_bytes)
            digest.update(chunk)
            buffer += chunk
            while len(buffer) >= part_bytes:
                if parts is None:
                    upload_id = await store.create_multipart(
                        key, content_type=content_type, disposition=disposition, metadata=metadata
                    )
                    parts = _PartsInFlight(store, key, upload_id, concurrency)
                with memoryview(buffer) as view:
                    part = bytes(view[:part_bytes])
                del buffer[:part_bytes]
                await parts.submit(part)
                del part
        if parts is None:
            await store.put(
                key,
                bytes(buffer),
                content_type=content_type,
                disposition=disposition,
                metadata=metadata,
            )
        else:
            if buffer:
                await parts.submit(bytes(buffer))
            buffer.clear()
            await parts.complete()
    except BaseException as exc:
        if parts is not None:
            if isinstance(exc, asyncio.CancelledError):
                await asyncio.shield(parts.stop())
            else:
                await parts.abort()
            log.warning(
                "upload_aborted",
                key=key,
                upload_id=parts.upload_id,
                received_bytes=size,
                reason=getattr(exc, "code", type(exc).__name__),
            )
        else:
            log.info(
                "upload_aborted",
                key=key,
                received_bytes=size,
                reason=getattr(exc, "code", type(exc).__name__),
            )
        raise
    return StoredObject(size=size, sha256=digest.hexdigest())
