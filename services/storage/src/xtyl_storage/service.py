"""What the storage service does, whatever the transport: the use cases behind the routes.

Ownership is enforced here: every lookup is by ``(owner_id, file_id)`` and anything that is
not the caller's answers exactly like a file that does not exist (404 ``file_not_found``), so
ids of other users' files reveal nothing and change nothing.

Upload order: the object first (streamed, hashed, size-limited), then the row and its
``file.uploaded`` event in one transaction; if the row cannot be written the object is deleted
again. A crash between the two leaves only an object without a row, never a row without an
object.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from datetime import UTC, datetime, timedelta

import msgspec
import structlog

from xtyl_common.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from xtyl_common.pagination import Cursor, check_limit, decode_cursor, encode_cursor
from xtyl_storage.adapters.postgres import FileRepository
from xtyl_storage.adapters.s3 import ObjectBody, ObjectMissing, ObjectStore
from xtyl_storage.adapters.uploads import stream_to_s3, too_large
from xtyl_storage.domain.files import FileStatus, StoredFile
from xtyl_storage.domain.media_types import is_allowed, normalize_media_type
from xtyl_storage.domain.names import clean_display_name, content_disposition, object_key
from xtyl_storage.settings import StorageSettings

log = structlog.stdlib.get_logger("xtyl.storage")

FILE_NOT_FOUND = "file_not_found"


def not_found() -> NotFound:
    return NotFound("no such file", code=FILE_NOT_FOUND)


class FilePage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[StoredFile]
    next_cursor: str | None


class PresignedUpload(msgspec.Struct, frozen=True, kw_only=True):
    file: StoredFile
    url: str
    headers: dict[str, str]
    expires_at: datetime


class StorageService:
    def __init__(
        self, store: ObjectStore, files: FileRepository, settings: StorageSettings
    ) -> None:
        self.store = store
        self.files = files
        self.settings = settings
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

    async def upload(
        self,
        owner_id: uuid.UUID,
        *,
        raw_name: str | None,
        content_type: str,
        chunks: AsyncIterable[bytes],
    ) -> StoredFile:
        """Stream ``chunks`` into the bucket and record the file; ``content_type`` is checked."""
        file_id = uuid.uuid4()
        name = clean_display_name(raw_name)
        key = object_key(owner_id, file_id, name)
        stored = await stream_to_s3(
            self.store,
            key,
            _non_empty(chunks),
            content_type=content_type,
            disposition=content_disposition(name),
            metadata={"owner-id": str(owner_id), "file-id": str(file_id)},
            max_bytes=self.settings.max_upload_bytes,
            part_bytes=self._part_bytes,
            concurrency=self.settings.upload_part_concurrency,
        )
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
        try:
            saved = await self.files.add_ready(record)
        except BaseException:
            await self.store.delete_quietly(key)
            log.warning("upload_aborted", key=key, reason="database")
            raise
        log.info(
            "file_uploaded",
            file_id=str(file_id),
            size=saved.size,
            content_type=content_type,
        )
        return saved

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

    async def page(self, owner_id: uuid.UUID, *, limit: int, cursor: str | None) -> FilePage:
        check_limit(limit)
        after = decode_cursor(cursor) if cursor else None
        items = await self.files.list_ready(owner_id, limit=limit + 1, after=after)
        more = len(items) > limit
        items = items[:limit]
        next_cursor = (
            encode_cursor(Cursor(created_at=items[-1].created_at, id=items[-1].id))
            if more
            else None
        )
        return FilePage(items=items, next_cursor=next_cursor)

    async def url_for(self, file: StoredFile) -> str:
        """Public URL of a public bucket, else a presigned GET (at most 15 minutes)."""
        return await self.store.download_url(file.key, disposition=content_disposition(file.name))

    async def open_content(self, file: StoredFile) -> ObjectBody:
        try:
            return await self.store.open(file.key)
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
        if await self.files.mark_deleted(owner_id, file_id):
            log.info("file_deleted", file_id=str(file_id))

    # -- presigned uploads -----------------------------------------------------------------

    async def start_presigned_upload(
        self, owner_id: uuid.UUID, *, raw_name: str, content_type: str, size: int
    ) -> PresignedUpload:
        if size < 1:
            raise InvalidInput("size must be at least 1 byte", code="empty_file")
        limit = self.settings.max_presigned_upload_bytes
        if size > limit:
            raise PayloadTooLarge(
                f"the file is larger than the {limit} bytes allowed",
                code="file_too_large",
                extra={"max_bytes": limit},
            )
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
            )
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
        it as ready with its ``file.uploaded`` event. A completed file is returned as it is."""
        found = await self.get(owner_id, file_id)
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
        ready = await self.files.mark_ready(owner_id, file_id, sha256)
        log.info("file_uploaded", file_id=str(file_id), size=ready.size, presigned=True)
        return ready

    async def _hash_object(self, file: StoredFile) -> str:
        body = await self.open_content(file)
        digest = hashlib.sha256()
        async for chunk in body.chunks:
            digest.update(chunk)
        return digest.hexdigest()


async def _non_empty(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """``chunks``, refusing a body with no bytes at all (422 ``empty_file``)."""
    seen = False
    async for chunk in chunks:
        if chunk:
            seen = True
            yield chunk
    if not seen:
        raise InvalidInput("the file is empty", code="empty_file")
