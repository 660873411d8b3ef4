"""The files use cases behind the routes: :class:`StorageService`.

Ownership is enforced here: every lookup is by ``(owner_id, file_id)`` and anything that is
not the caller's answers exactly like a file that does not exist (404 ``file_not_found``), so
ids of other users' files reveal nothing and change nothing.

Upload order: the object first (streamed, hashed, size-limited), then the row and its
``file.uploaded`` event (:mod:`xtyl_storage.domain.events`) in one transaction. A crash between
the two leaves only an object without a row, never a row without an object.

Deadlines nest: the gateway gives a service ``UPSTREAM_READ_TIMEOUT_S`` from the end of the
request body to the answer, so an upload's own work (S3 with its retries, Postgres) is bounded
by ``REQUEST_DEADLINE_S``, set below it; time spent waiting for the client's bytes does not
count (:func:`~xtyl_storage.service.bodies.excluding_client_time`). Past the deadline the
answer is 504 ``storage_timeout`` and nothing is stored: the row is written within the deadline
or not at all, and what S3 may still apply of a write we gave up on is swept in the background
(:class:`~xtyl_storage.adapters.orphans.OrphanSweeper`). So the gateway never answers 504 for
an upload that commits later.

``Idempotency-Key`` (:mod:`xtyl_storage.domain.idempotency`): the key is claimed before the
bytes are stored and completed in the transaction that records the file; a failed upload gives
it back, so its retry runs again, and a retry after a success gets the same file.

Quotas (:mod:`xtyl_storage.domain.quotas`): an upload holds room for its bytes before any of
them is read (:meth:`StorageService.upload_quota`), more as they arrive past it, and the
transaction that records the file checks once more with the real size; the room is given back
on every failure. A deleted user (:meth:`~xtyl_storage.service.accounts.Accounts.erase_user`,
on ``user.deleted``) is refused by every transaction that holds room or records a file (403
``account_deleted``); an object written by an upload refused there is deleted before the
answer. The caller's account (usage, export, erasure) is :mod:`.accounts`.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import msgspec
import structlog

from xtyl_common.erasure import AccountDeleted, ErasureState
from xtyl_common.errors import (
    ClientError,
    Conflict,
    InvalidInput,
    NotFound,
    TimedOut,
    UnsupportedMediaType,
    XtylError,
)
from xtyl_common.health import HealthCheck
from xtyl_common.pagination import Page, keyset_page
from xtyl_common.quotas import QuotaExceeded, QuotaUse
from xtyl_storage.adapters.idempotency import IdempotencyKeyRepository
from xtyl_storage.adapters.orphans import OrphanSweeper
from xtyl_storage.adapters.postgres import FileRepository
from xtyl_storage.adapters.s3 import (
    ObjectBody,
    ObjectMissing,
    ObjectStore,
)
from xtyl_storage.adapters.uploads import stream_to_s3
from xtyl_storage.adapters.usage import QuotaHold, UsageRepository
from xtyl_storage.domain.events import file_deleted, file_uploaded
from xtyl_storage.domain.files import FileStatus, StoredFile, too_large
from xtyl_storage.domain.idempotency import (
    LEASE_S,
    RENEW_EVERY_S,
    KeyClaim,
    KeyRecord,
    in_progress,
    key_reused,
    request_fingerprint,
    same_bytes,
)
from xtyl_storage.domain.media_types import is_allowed, normalize_media_type
from xtyl_storage.domain.names import clean_display_name, content_disposition, object_key
from xtyl_storage.domain.quotas import (
    PRESIGN_HOLD_GRACE_S,
    UPLOAD_LEASE_S,
    first_hold,
)
from xtyl_storage.service.accounts import Accounts
from xtyl_storage.service.bodies import excluding_client_time, non_empty
from xtyl_storage.settings import StorageSettings

log = structlog.stdlib.get_logger("xtyl.storage")

T = TypeVar("T")

FILE_NOT_FOUND = "file_not_found"
#: How long a failed upload waits on Postgres to give its Idempotency-Key and its room back.
RELEASE_TIMEOUT_S = 2.0


def not_found() -> NotFound:
    return NotFound("no such file", code=FILE_NOT_FOUND)


def storage_timeout(deadline_s: float) -> TimedOut:
    return TimedOut(
        f"file storage did not finish within {deadline_s:g} s; nothing was stored: retry"
        " (with the same Idempotency-Key)",
        code="storage_timeout",
    )


class Upload(msgspec.Struct, frozen=True, kw_only=True):
    file: StoredFile
    #: A retry with the Idempotency-Key of an upload that succeeded: ``file`` is its file.
    replayed: bool = False


class PresignedUpload(msgspec.Struct, frozen=True, kw_only=True):
    file: StoredFile
    url: str
    headers: dict[str, str]
    expires_at: datetime


class StorageService:
    def __init__(
        self,
        store: ObjectStore,
        files: FileRepository,
        settings: StorageSettings,
        *,
        keys: IdempotencyKeyRepository,
        orphans: OrphanSweeper,
        usage: UsageRepository,
        accounts: Accounts,
        readiness: Mapping[str, HealthCheck] | None = None,
    ) -> None:
        self.store = store
        self.files = files
        self.settings = settings
        self.keys = keys
        self.orphans = orphans
        self.usage = usage
        #: The caller's account: usage, export, erasure.
        self.accounts = accounts
        #: What ``/readyz`` checks of the service's own dependencies.
        self.readiness: dict[str, HealthCheck] = dict(readiness or {})
        self._patterns = settings.content_type_patterns()
        self._part_bytes = settings.part_bytes()

    # -- checks ----------------------------------------------------------------------------

    def accepted_content_type(self, raw: str | None) -> str:
        """The normalized media type, or 415 when settings do not allow it."""
        media_type = normalize_media_type(raw)
        if not is_allowed(media_type, self._patterns):
            raise UnsupportedMediaType(
                f"files of type {media_type} are not accepted",
                code="content_type_not_allowed",
                extra={"content_type": media_type},
            )
        return media_type

    def check_declared_size(self, declared: int | None, *, overhead: int = 0) -> None:
        """Refuse before reading anything when Content-Length already exceeds the limit."""
        if declared is not None and declared > self.settings.max_upload_bytes + overhead:
            raise too_large(self.settings.max_upload_bytes)

    # -- upload through the service --------------------------------------------------------

    @asynccontextmanager
    async def upload_quota(
        self,
        owner_id: uuid.UUID,
        *,
        declared: int | None = None,
        overhead: int = 0,
        keyed: bool = False,
    ) -> AsyncGenerator[QuotaHold]:
        """Room for one upload, held before a byte of it is read: ``declared`` (its
        Content-Length, of which up to ``overhead`` may be form boundaries and headers), else
        grown as the bytes arrive. 403 ``quota_*`` when it cannot fit, 403 ``account_deleted``
        for a deleted user. Given back on the way out unless the upload recorded its file.
        With an Idempotency-Key (``keyed``) a quota refusal is raised only once the request is
        known not to be a retry of an upload that succeeded (which answers its file)."""
        need, want = first_hold(
            declared, overhead=overhead, max_bytes=self.settings.max_upload_bytes
        )
        hold_id = uuid.uuid4()
        try:
            granted = await self.usage.hold(
                owner_id, hold_id, need=need, want=want, lease_s=UPLOAD_LEASE_S
            )
            hold = QuotaHold(self.usage, owner_id, hold_id, granted)
        except QuotaExceeded as exc:
            if not keyed:
                raise
            hold = QuotaHold(self.usage, owner_id, hold_id, 0, refused=exc)
        try:
            yield hold
        finally:
            if not hold.settled and hold.refused is None:
                await self._release(hold)

    async def _release(self, hold: QuotaHold) -> None:
        """A failed upload's room is free again (if Postgres does not answer, the reservation
        stops counting when its lease runs out)."""
        try:
            await asyncio.shield(self.usage.release(hold.id, timeout_s=RELEASE_TIMEOUT_S))
        except (XtylError, TimeoutError) as exc:
            log.warning("quota_release_failed", error=type(exc).__name__)

    async def upload(
        self,
        owner_id: uuid.UUID,
        *,
        raw_name: str | None,
        content_type: str,
        chunks: AsyncIterable[bytes],
        idempotency_key: str | None = None,
        hold: QuotaHold | None = None,
    ) -> Upload:
        """Stream ``chunks`` into the bucket and record the file (``content_type`` is checked),
        within ``REQUEST_DEADLINE_S`` of work of our own; with an ``idempotency_key``, a retry
        gets the first upload's file (see the module). ``hold``: the room
        :meth:`upload_quota` held for it (else held here, growing with the bytes)."""
        async with AsyncExitStack() as stack:
            if hold is None:
                keyed = idempotency_key is not None
                hold = await stack.enter_async_context(self.upload_quota(owner_id, keyed=keyed))
            return await self._upload(
                owner_id,
                raw_name=raw_name,
                content_type=content_type,
                chunks=chunks,
                idempotency_key=idempotency_key,
                hold=hold,
            )

    async def _upload(
        self,
        owner_id: uuid.UUID,
        *,
        raw_name: str | None,
        content_type: str,
        chunks: AsyncIterable[bytes],
        idempotency_key: str | None,
        hold: QuotaHold,
    ) -> Upload:
        file_id = hold.id
        name = clean_display_name(raw_name)
        key = object_key(owner_id, file_id, name)
        deadline_s = self.settings.request_deadline_s
        deadline = asyncio.timeout(deadline_s)
        claim: KeyClaim | None = None
        writing = streamed = False
        try:
            async with deadline:
                timed = excluding_client_time(chunks, deadline)
                if idempotency_key is not None:
                    held = await self.keys.claim(
                        owner_id,
                        idempotency_key,
                        request_fingerprint(raw_name, content_type),
                        ttl_s=self.settings.idempotency_key_ttl_s,
                        lease_s=LEASE_S,
                    )
                    if isinstance(held, KeyRecord):
                        return await self._replay(owner_id, held, raw_name, content_type, timed)
                    claim = held
                if hold.refused is not None:
                    raise hold.refused
                async with self._holding(claim):
                    writing = True
                    stored = await stream_to_s3(
                        self.store,
                        key,
                        non_empty(hold.metered(timed, max_bytes=self.settings.max_upload_bytes)),
                        content_type=content_type,
                        disposition=content_disposition(name),
                        metadata={"owner-id": str(owner_id), "file-id": str(file_id)},
                        max_bytes=self.settings.max_upload_bytes,
                        part_bytes=self._part_bytes,
                        concurrency=self.settings.upload_part_concurrency,
                    )
                    streamed = True
                    now = datetime.now(UTC)
                    record = StoredFile(
                        id=file_id,
                        owner_id=owner_id,
                        key=key,
                        name=name,
                        content_type=content_type,
                        size=stored.size,
                        sha256=stored.sha256,
                        status=FileStatus.READY,
                        created_at=now,
                        updated_at=now,
                    )
                    saved = await self.files.add_ready(
                        record, event=file_uploaded(record), claim=claim
                    )
                    hold.settled = True
        except BaseException as exc:
            if claim is not None:
                await self._give_back(claim)
            if writing and streamed and isinstance(exc, ClientError):
                # Refused by the transaction that records the file (account deleted, quota,
                # key taken over): rolled back, so no row points at the object S3 just took.
                await self._discard(key)
            elif writing and (streamed or not isinstance(exc, ClientError)):
                # A client error while streaming was refused before S3 took the object (the
                # multipart upload is aborted); anything else may leave a write S3 applies
                # later.
                self.orphans.sweep(key)
            if isinstance(exc, TimeoutError) and deadline.expired():
                log.warning("upload_timed_out", file_id=str(file_id), deadline_s=deadline_s)
                raise storage_timeout(deadline_s) from None
            raise
        log.info(
            "file_uploaded",
            file_id=str(file_id),
            size=saved.size,
            content_type=content_type,
            idempotency_key=claim is not None,
        )
        return Upload(file=saved)

    async def _replay(
        self,
        owner_id: uuid.UUID,
        record: KeyRecord,
        raw_name: str | None,
        content_type: str,
        chunks: AsyncIterable[bytes],
    ) -> Upload:
        """A retry under a key already held: the first upload's file when the request is the
        same (name and type, then size and sha256 of the bytes, read but not stored)."""
        if record.fingerprint != request_fingerprint(raw_name, content_type):
            raise key_reused()
        if record.file_id is None:
            raise in_progress()
        digest = hashlib.sha256()
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            digest.update(chunk)
        if not same_bytes(record, size, digest.hexdigest()):
            raise key_reused()
        found = await self.files.get(owner_id, record.file_id)
        if found is None or found.status is FileStatus.DELETED:
            raise not_found()
        log.info("upload_replayed", file_id=str(found.id))
        return Upload(file=found, replayed=True)

    @asynccontextmanager
    async def _holding(self, claim: KeyClaim | None) -> AsyncGenerator[None]:
        """Keep ``claim`` renewed while the upload runs (a lapsed one may be taken over)."""
        if claim is None:
            yield
            return
        renewer = asyncio.create_task(self._renew(claim))
        try:
            yield
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)

    async def _renew(self, claim: KeyClaim) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY_S)
            try:
                if not await self.keys.renew(claim, lease_s=LEASE_S):
                    return  # taken over: completing will fail with ClaimLost
            except (XtylError, TimeoutError) as exc:
                log.warning("idempotency_renew_failed", error=type(exc).__name__)

    async def _discard(self, key: str) -> None:
        """Delete an object no row points at, before the answer; swept in the background when
        S3 does not do it in one attempt's time."""
        try:
            async with asyncio.timeout(
                self.settings.s3_connect_timeout_s + self.settings.s3_read_timeout_s
            ):
                await self.store.delete(key)
        except (XtylError, TimeoutError):
            self.orphans.sweep(key)
        except asyncio.CancelledError:
            self.orphans.sweep(key)
            raise

    async def _give_back(self, claim: KeyClaim) -> None:
        """A failed upload stored nothing: its key is free for the retry (a key completed by a
        commit whose answer was lost stays completed). If Postgres does not answer, the claim
        lapses unrenewed after ``LEASE_S``."""
        try:
            await asyncio.shield(self.keys.release(claim, timeout_s=RELEASE_TIMEOUT_S))
        except (XtylError, TimeoutError) as exc:
            log.warning("idempotency_release_failed", error=type(exc).__name__)

    # -- reading ---------------------------------------------------------------------------

    async def get(self, owner_id: uuid.UUID, file_id: uuid.UUID) -> StoredFile:
        """The caller's file (ready or pending); 404 for anything else."""
        found = await self.files.get(owner_id, file_id)
        if found is None or found.status is FileStatus.DELETED:
            raise not_found()
        return found

    async def get_ready(self, owner_id: uuid.UUID, file_id: uuid.UUID) -> StoredFile:
        found = await self.get(owner_id, file_id)
        if found.status is not FileStatus.READY:
            raise Conflict("the upload of this file is not complete", code="file_not_ready")
        return found

    async def get_for_service(self, file_id: uuid.UUID, user_id: uuid.UUID | None) -> StoredFile:
        """For internal callers; when the token names a user, only that user's files."""
        found = (
            await self.files.get_any_owner(file_id)
            if user_id is None
            else await self.files.get(user_id, file_id)
        )
        if found is None or found.status is not FileStatus.READY:
            raise not_found()
        return found

    async def page(
        self, owner_id: uuid.UUID, *, limit: int, cursor: str | None
    ) -> Page[StoredFile]:
        """The owner's ready files, newest first, one cursor page."""
        return await keyset_page(
            lambda n, after: self.files.list_ready(owner_id, limit=n, after=after),
            limit=limit,
            cursor=cursor,
        )

    async def url_for(self, file: StoredFile) -> str:
        """Public URL of a public bucket, else a presigned GET (at most 15 minutes)."""
        return await self.store.download_url(file.key, disposition=content_disposition(file.name))

    async def open_content(self, file: StoredFile) -> ObjectBody:
        """The file's bytes for a download (a user's, or another service's read)."""
        return await self._open(file, download=True)

    async def _open(self, file: StoredFile, *, download: bool) -> ObjectBody:
        deadline_s = self.settings.request_deadline_s
        try:
            async with asyncio.timeout(deadline_s):
                return await self.store.open(file.key, download=download)
        except TimeoutError:
            raise storage_timeout(deadline_s) from None
        except ObjectMissing:
            log.error("object_missing", file_id=str(file.id), key=file.key)
            raise not_found() from None

    # -- deleting --------------------------------------------------------------------------

    async def delete(self, owner_id: uuid.UUID, file_id: uuid.UUID) -> None:
        """Remove the object, then mark the row deleted (with ``file.deleted``). Repeating it
        is harmless; another user's id is 404 and changes nothing."""
        found = await self.files.get(owner_id, file_id)
        if found is None:
            raise not_found()
        if found.status is FileStatus.DELETED:
            return
        await self.store.delete(found.key)
        if await self.files.mark_deleted(owner_id, file_id, event=file_deleted(found)):
            log.info("file_deleted", file_id=str(file_id))

    # -- presigned uploads -----------------------------------------------------------------

    async def start_presigned_upload(
        self, owner_id: uuid.UUID, *, raw_name: str, content_type: str, size: int
    ) -> PresignedUpload:
        if size < 1:
            raise InvalidInput("size must be at least 1 byte", code="empty_file")
        if size > self.settings.max_presigned_upload_bytes:
            raise too_large(self.settings.max_presigned_upload_bytes)
        media_type = self.accepted_content_type(content_type)
        file_id = uuid.uuid4()
        name = clean_display_name(raw_name)
        key = object_key(owner_id, file_id, name)
        now = datetime.now(UTC)
        url = await self.store.upload_url(key, content_type=media_type, size=size)
        pending = await self.files.add_pending(
            StoredFile(
                id=file_id,
                owner_id=owner_id,
                key=key,
                name=name,
                content_type=media_type,
                size=size,
                sha256=None,
                status=FileStatus.PENDING,
                created_at=now,
                updated_at=now,
            ),
            hold_s=self.settings.presign_ttl_s + PRESIGN_HOLD_GRACE_S,
        )
        return PresignedUpload(
            file=pending,
            url=url,
            headers={"Content-Type": media_type, "Content-Length": str(size)},
            expires_at=now + timedelta(seconds=self.settings.presign_ttl_s),
        )

    async def complete_presigned_upload(
        self, owner_id: uuid.UUID, file_id: uuid.UUID
    ) -> StoredFile:
        """Check the object the client PUT (HEAD: size and type; then its sha256) and record
        it as ready with its ``file.uploaded`` event. A completed file is returned as it is.
        For a deleted user (403 ``account_deleted``) or past the quota (403 ``quota_*``, when
        its reservation ran out and the room was taken meanwhile) the object is deleted."""
        found = await self.files.get(owner_id, file_id)
        if found is None and await self.accounts.erasures.is_erased(owner_id):
            # the erasure removed the row; a PUT may have landed since
            await self._discard_prefix(f"{owner_id}/{file_id}/")
            raise AccountDeleted("this account was deleted; nothing more is stored for it")
        if found is None or found.status is FileStatus.DELETED:
            raise not_found()
        if found.status is FileStatus.READY:
            return found
        head = await self.store.head(found.key)
        if head is None:
            raise Conflict("nothing was uploaded to this file's URL yet", code="upload_incomplete")
        if head.size != found.size or normalize_media_type(head.content_type) != (
            found.content_type
        ):
            await self.store.delete(found.key)
            await self.files.remove_pending(owner_id, file_id)
            raise InvalidInput(
                "the uploaded object does not match the declared size or content type",
                code="upload_mismatch",
                extra={"size": head.size, "content_type": head.content_type},
            )
        sha256 = await self._hash_object(found)
        uploaded = msgspec.structs.replace(found, sha256=sha256, status=FileStatus.READY)
        try:
            ready = await self.files.mark_ready(
                owner_id, file_id, sha256, event=file_uploaded(uploaded)
            )
        except (AccountDeleted, QuotaExceeded) as exc:
            await self._discard(found.key)
            if isinstance(exc, QuotaExceeded):
                await self.files.remove_pending(owner_id, file_id)
            log.info("upload_refused", file_id=str(file_id), code=exc.code, presigned=True)
            raise
        log.info("file_uploaded", file_id=str(file_id), size=ready.size, presigned=True)
        return ready

    async def _discard_prefix(self, prefix: str) -> None:
        keys = await self._s3(self.store.list_keys(prefix, limit=1000))
        await self._s3(self.store.delete_keys(keys))

    async def _hash_object(self, file: StoredFile) -> str:
        body = await self._open(file, download=False)
        digest = hashlib.sha256()
        async for chunk in body.chunks:
            digest.update(chunk)
        return digest.hexdigest()

    # -- the caller's account (the gateway's /v1/me/*, on behalf of a user: .accounts) ----

    async def usage_of(self, owner_id: uuid.UUID) -> dict[str, QuotaUse]:
        return await self.accounts.usage_of(owner_id)

    async def erasure_state(self, user_id: uuid.UUID) -> ErasureState:
        return await self.accounts.erasure_state(user_id)

    def export(self, owner_id: uuid.UUID) -> AsyncIterator[StoredFile]:
        return self.accounts.export(owner_id)

    async def erase_user(
        self, user_id: uuid.UUID, *, requested_at: datetime
    ) -> dict[str, int] | None:
        return await self.accounts.erase_user(user_id, requested_at=requested_at)

    async def _s3(self, call: Awaitable[T]) -> T:
        """One S3 call of a background job (botocore retries it), bounded like a request's."""
        async with asyncio.timeout(self.settings.request_deadline_s):
            return await call
