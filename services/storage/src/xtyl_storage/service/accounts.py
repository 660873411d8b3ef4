"""The caller's account in storage: usage against the quotas, the export of their files, and
the erasure of everything storage holds for a deleted user (``user.deleted``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime
from typing import TypeVar

import structlog

from xtyl_common.erasure import ErasureState
from xtyl_common.errors import Unavailable
from xtyl_common.pagination import Cursor
from xtyl_common.quotas import QuotaUse
from xtyl_storage.adapters.erasure import ErasureRepository
from xtyl_storage.adapters.postgres import FileRepository
from xtyl_storage.adapters.s3 import ObjectStore
from xtyl_storage.adapters.usage import UsageRepository
from xtyl_storage.domain.files import StoredFile
from xtyl_storage.domain.quotas import usage_report
from xtyl_storage.settings import StorageSettings

log = structlog.stdlib.get_logger("xtyl.storage")

T = TypeVar("T")
#: Files per page of ``GET /internal/me/export`` (one query each; memory stays flat).
EXPORT_PAGE = 500
#: A presigned PUT sent just before its URL expired may still be landing: an erasure looks at
#: the bucket a last time this long (at most) after the URLs it found expired.
PRESIGNED_PUT_MARGIN_S = 300.0


class Accounts:
    def __init__(
        self,
        store: ObjectStore,
        files: FileRepository,
        settings: StorageSettings,
        *,
        usage: UsageRepository,
        erasures: ErasureRepository,
    ) -> None:
        self.store = store
        self.files = files
        self.settings = settings
        self.usage = usage
        self.erasures = erasures

    async def usage_of(self, owner_id: uuid.UUID) -> dict[str, QuotaUse]:
        """``{quota: QuotaUse}``: the bytes and files the user keeps, of their limits."""
        return usage_report(await self.usage.usage(owner_id), self.usage.limits)

    async def erasure_state(self, user_id: uuid.UUID) -> ErasureState:
        return await self.erasures.state(user_id)

    async def export(self, owner_id: uuid.UUID) -> AsyncIterator[StoredFile]:
        """The owner's ready files, newest first, one page of :data:`EXPORT_PAGE` in memory."""
        after: Cursor | None = None
        while True:
            page = await self.files.list_ready(owner_id, limit=EXPORT_PAGE, after=after)
            for file in page:
                yield file
            if len(page) < EXPORT_PAGE:
                return
            after = Cursor(created_at=page[-1].created_at, id=page[-1].id)

    # -- erasure (user.deleted) -------------------------------------------------------------

    async def erase_user(
        self, user_id: uuid.UUID, *, requested_at: datetime
    ) -> dict[str, int] | None:
        """Erase everything storage holds for a deleted user: every object under
        ``<user id>/`` and every unfinished multipart upload there, their file rows (any
        status), Idempotency-Keys, usage and reservations, and their published outbox rows
        (unpublished ones go out); no event per file. The counts, or None when the erasure had
        already completed (a redelivery).

        From :meth:`ErasureRepository.begin` on, the user's writes are refused; one that was
        in flight committed first and is erased with the rest. Resumable: every step is
        idempotent, so a run killed anywhere is finished by the next delivery. The bucket is
        looked at again after the rows are gone (an object an upload wrote meanwhile); while
        presigned PUT URLs handed out to the user may still write, the erasure is not complete:
        503 ``erasure_waiting`` with ``retry_after_s`` (the stream runs it again then).
        """
        ttl = float(self.settings.presign_ttl_s)
        if not await self.erasures.begin(
            user_id,
            requested_at=requested_at,
            presign_window_s=ttl + min(ttl, PRESIGNED_PUT_MARGIN_S),
        ):
            log.info("erasure_already_complete", user_id=str(user_id))
            return None
        log.info("erasure_started", user_id=str(user_id))
        prefix = f"{user_id}/"
        batch = self.settings.erasure_batch_size
        await self._erase_prefix(user_id, prefix)
        await self.erasures.delete_usage(user_id)
        while await self.erasures.delete_keys_batch(user_id, batch):
            await self._pace()
        while await self.erasures.delete_files_batch(user_id, batch):
            await self._pace()
        while await self.erasures.delete_published_batch(user_id, batch):
            await self._pace()
        await self._erase_prefix(user_id, prefix)  # what an upload in flight wrote meanwhile
        wait_until = await self.erasures.wait_until(user_id)
        if wait_until is not None:
            left = (wait_until - datetime.now(UTC)).total_seconds()
            if left > 0:
                log.info("erasure_waiting", user_id=str(user_id), wait_s=round(left, 1))
                raise Unavailable(
                    "presigned upload URLs handed out to this user may still write; the"
                    " erasure looks at the bucket again once they expired",
                    code="erasure_waiting",
                    retry_after_s=left,
                )
        counts = await self.erasures.complete(user_id)
        log.info("user_erased", user_id=str(user_id), **counts)
        return counts

    async def _erase_prefix(self, user_id: uuid.UUID, prefix: str) -> None:
        """Abort every unfinished multipart upload under ``prefix`` (first: none completes
        after that), then delete every object there, ``ERASURE_BATCH_SIZE`` keys per
        DeleteObjects call, counting both as S3 confirms them."""
        batch = self.settings.erasure_batch_size
        while uploads := await self._s3(self.store.list_uploads(prefix, limit=batch)):
            aborted = 0
            for key, upload_id in uploads:
                aborted += await self._s3(self.store.abort_upload(key, upload_id))
            await self.erasures.count(user_id, "multipart_uploads", aborted)
            if not aborted:
                break  # all gone already: S3 still lists them a moment
            await self._pace()
        previous: list[str] = []
        while keys := await self._s3(self.store.list_keys(prefix, limit=batch)):
            if keys == previous:
                raise Unavailable(
                    "file storage keeps listing objects it reported deleted; try again later",
                    code="storage_unavailable",
                )
            deleted = await self._s3(self.store.delete_keys(keys))
            await self.erasures.count(user_id, "objects", deleted)
            previous = keys
            await self._pace()

    async def _pace(self) -> None:
        """``ERASURE_BATCH_PAUSE_S`` between two batches of an erasure."""
        if self.settings.erasure_batch_pause_s > 0:
            await asyncio.sleep(self.settings.erasure_batch_pause_s)

    async def _s3(self, call: Awaitable[T]) -> T:
        """One S3 call of a background job (botocore retries it), bounded like a request's."""
        async with asyncio.timeout(self.settings.request_deadline_s):
            return await call
