"""The S3 client (Cloudflare R2 in production, SeaweedFS locally): one per process.

:class:`ObjectStore` is every call the service makes to the bucket. Failures of S3 itself
(refused connections, timeouts, 5xx, a missing bucket, refused credentials) become
:class:`~xtyl_common.errors.Unavailable` with code ``storage_unavailable`` (503); a missing
object on HEAD/GET is ``None`` / :class:`ObjectMissing`, for the caller to decide.

With tracing on, every call to S3 is a span of the maintained botocore instrumentation
(``AiobotocoreInstrumentor``, opentelemetry-instrumentation-botocore >= 0.62b0: its
``BotocoreInstrumentor`` alone wraps ``BaseClient._make_api_call``, which aiobotocore's client
overrides). Multipart parts sent and download bytes streamed out are counted
(:mod:`xtyl_storage.adapters.metrics`).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import aioboto3
import aiohttp
import msgspec
import structlog
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from opentelemetry.instrumentation.botocore import AiobotocoreInstrumentor

from xtyl_common.errors import Unavailable
from xtyl_common.tracing import tracing_enabled
from xtyl_storage.adapters.metrics import BYTES_SENT, MULTIPART_PARTS
from xtyl_storage.settings import StorageSettings

log = structlog.stdlib.get_logger("xtyl.storage.s3")

STORAGE_UNAVAILABLE = "storage_unavailable"
#: Bytes read from S3 per chunk when streaming an object out.
DOWNLOAD_CHUNK_BYTES = 256 * 1024
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
#: Exceptions that mean "S3 did not do it": the error tree's 503.
S3_ERRORS: tuple[type[BaseException], ...] = (
    BotoCoreError,
    ClientError,
    aiohttp.ClientError,
    OSError,
    TimeoutError,
)


def client_config(settings: StorageSettings) -> Config:
    # boto3 >= 1.36 sends CRC32 checksums by default, which R2 rejects: only when required.
    return Config(
        signature_version="s3v4",
        region_name="auto",
        connect_timeout=settings.s3_connect_timeout_s,
        read_timeout=settings.s3_read_timeout_s,
        retries={"max_attempts": 3, "mode": "standard"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"},
        max_pool_connections=50,
    )


def instrument_s3() -> None:
    """Spans of the S3 calls, once per process, when tracing is on (spans carry the operation,
    region, endpoint, status and request id: no keys, no file names)."""
    instrumentor = AiobotocoreInstrumentor()
    if tracing_enabled() and not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()  # pyright: ignore[reportUnknownMemberType]


def add_content_md5(request: Any, **_: Any) -> None:
    """``Content-MD5`` on DeleteObjects: botocore >= 1.36 sends only a CRC32 checksum, which
    some S3-compatible servers refuse there ("requires one valid Content-MD5 header"); with
    both, every server takes it."""
    body = request.body
    if isinstance(body, bytes | bytearray) and "Content-MD5" not in request.headers:
        digest = hashlib.md5(body, usedforsecurity=False).digest()
        request.headers["Content-MD5"] = base64.b64encode(digest).decode("ascii")


@asynccontextmanager
async def open_s3_client(settings: StorageSettings) -> AsyncGenerator[Any]:
    instrument_s3()
    session: Any = aioboto3.Session()
    async with session.client(
        "s3",
        endpoint_url=settings.r2_endpoint,
        aws_access_key_id=settings.r2_access_key,
        aws_secret_access_key=settings.r2_secret_key,
        config=client_config(settings),
    ) as client:
        client.meta.events.register("before-sign.s3.DeleteObjects", add_content_md5)
        yield client


async def check_bucket(client: Any, bucket: str) -> None:
    """Readiness check: the bucket answers HEAD with our credentials."""
    await client.head_bucket(Bucket=bucket)


def error_code(exc: BaseException) -> str:
    """S3's error code (``NoSuchKey``, ``AccessDenied``…) or the exception's class name."""
    if isinstance(exc, ClientError):
        error: Mapping[str, Any] = exc.response.get("Error", {})
        return str(error.get("Code", "Unknown"))
    return type(exc).__name__


def unavailable(operation: str, exc: BaseException) -> Unavailable:
    log.warning("s3_failed", operation=operation, error=error_code(exc))
    return Unavailable("file storage is unavailable, try again later", code=STORAGE_UNAVAILABLE)


class ObjectMissing(Exception):
    """The object a row points at is not in the bucket."""


class ObjectHead(msgspec.Struct, frozen=True, kw_only=True):
    size: int
    content_type: str
    etag: str


class ObjectBody(msgspec.Struct, frozen=True, kw_only=True):
    size: int
    content_type: str
    chunks: AsyncIterator[bytes]


class ObjectStore:
    """One bucket through the process's one aioboto3 client."""

    def __init__(self, client: Any, bucket: str, *, public_url: str, presign_ttl_s: int) -> None:
        self.client = client
        self.bucket = bucket
        self.public_url = public_url.rstrip("/")
        self.presign_ttl_s = presign_ttl_s

    # -- writing ---------------------------------------------------------------------------

    async def put(
        self,
        key: str,
        body: bytes,
        *,
        content_type: str,
        disposition: str,
        metadata: dict[str, str],
    ) -> None:
        try:
            await self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentLength=len(body),
                ContentType=content_type,
                ContentDisposition=disposition,
                Metadata=metadata,
            )
        except S3_ERRORS as exc:
            raise unavailable("put_object", exc) from exc

    async def create_multipart(
        self, key: str, *, content_type: str, disposition: str, metadata: dict[str, str]
    ) -> str:
        try:
            response = await self.client.create_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                ContentType=content_type,
                ContentDisposition=disposition,
                Metadata=metadata,
            )
        except S3_ERRORS as exc:
            raise unavailable("create_multipart_upload", exc) from exc
        upload_id: str = response["UploadId"]
        return upload_id

    async def upload_part(self, key: str, upload_id: str, number: int, body: bytes) -> str:
        try:
            response = await self.client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
                ContentLength=len(body),
            )
        except S3_ERRORS as exc:
            raise unavailable("upload_part", exc) from exc
        MULTIPART_PARTS.inc()
        etag: str = response["ETag"]
        return etag

    async def complete_multipart(self, key: str, upload_id: str, etags: list[str]) -> None:
        parts = [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(etags, start=1)]
        try:
            await self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except S3_ERRORS as exc:
            raise unavailable("complete_multipart_upload", exc) from exc

    async def abort_multipart(self, key: str, upload_id: str) -> bool:
        """Abort an unfinished multipart upload; False (logged) when S3 would not."""
        try:
            await self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id
            )
        except ClientError as exc:
            if error_code(exc) == "NoSuchUpload":
                return True
            log.error("upload_abort_failed", key=key, upload_id=upload_id, error=error_code(exc))
            return False
        except S3_ERRORS as exc:
            log.error("upload_abort_failed", key=key, upload_id=upload_id, error=error_code(exc))
            return False
        return True

    async def abort_uploads_under(self, key: str) -> int:
        """Abort every unfinished multipart upload of exactly ``key`` (also ones whose id we
        never learnt: a CreateMultipartUpload S3 applied after we gave up); how many."""
        try:
            response = await self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
            uploads = [u for u in response.get("Uploads", []) if u.get("Key") == key]
            for upload in uploads:
                await self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload["UploadId"]
                )
        except ClientError as exc:
            if error_code(exc) == "NoSuchUpload":
                return 0
            raise unavailable("abort_multipart_upload", exc) from exc
        except S3_ERRORS as exc:
            raise unavailable("abort_multipart_upload", exc) from exc
        return len(uploads)

    async def delete(self, key: str) -> None:
        """Delete an object; deleting one that is not there is fine."""
        try:
            await self.client.delete_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in _MISSING_CODES:
                return
            raise unavailable("delete_object", exc) from exc
        except S3_ERRORS as exc:
            raise unavailable("delete_object", exc) from exc

    # -- erasing a prefix (a deleted user's objects) ----------------------------------------

    async def list_keys(self, prefix: str, *, limit: int) -> list[str]:
        """Up to ``limit`` keys under ``prefix`` (the first ones: deleting them moves on)."""
        try:
            response = await self.client.list_objects_v2(
                Bucket=self.bucket, Prefix=prefix, MaxKeys=limit
            )
        except S3_ERRORS as exc:
            raise unavailable("list_objects_v2", exc) from exc
        return [str(item["Key"]) for item in response.get("Contents", [])]

    async def delete_keys(self, keys: list[str]) -> int:
        """Delete up to 1000 objects in one DeleteObjects call; how many S3 reports deleted
        (a key already gone counts: S3 answers deleted). 503 when S3 failed any of them."""
        if not keys:
            return 0
        try:
            response = await self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": key} for key in keys], "Quiet": False},
            )
        except S3_ERRORS as exc:
            raise unavailable("delete_objects", exc) from exc
        errors: list[Mapping[str, Any]] = response.get("Errors", [])
        failed = [e for e in errors if str(e.get("Code", "")) not in _MISSING_CODES]
        if failed:
            log.warning(
                "s3_failed",
                operation="delete_objects",
                error=str(failed[0].get("Code", "Unknown")),
                failed=len(failed),
            )
            raise Unavailable(
                "file storage is unavailable, try again later", code=STORAGE_UNAVAILABLE
            )
        return len(response.get("Deleted", [])) + len(errors)

    async def list_uploads(self, prefix: str, *, limit: int) -> list[tuple[str, str]]:
        """Up to ``limit`` unfinished multipart uploads under ``prefix``: ``(key, upload id)``."""
        try:
            response = await self.client.list_multipart_uploads(
                Bucket=self.bucket, Prefix=prefix, MaxUploads=limit
            )
        except S3_ERRORS as exc:
            raise unavailable("list_multipart_uploads", exc) from exc
        return [(str(u["Key"]), str(u["UploadId"])) for u in response.get("Uploads", [])]

    async def abort_upload(self, key: str, upload_id: str) -> bool:
        """Abort one multipart upload: True when it was aborted, False when it was gone
        already; 503 when S3 would not."""
        try:
            await self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id
            )
        except ClientError as exc:
            if error_code(exc) in {"NoSuchUpload", *_MISSING_CODES}:
                return False
            raise unavailable("abort_multipart_upload", exc) from exc
        except S3_ERRORS as exc:
            raise unavailable("abort_multipart_upload", exc) from exc
        return True

    # -- reading ---------------------------------------------------------------------------

    async def exists(self, key: str) -> bool:
        try:
            await self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in _MISSING_CODES:
                return False
            raise unavailable("head_object", exc) from exc
        except S3_ERRORS as exc:
            raise unavailable("head_object", exc) from exc
        return True

    async def head(self, key: str) -> ObjectHead | None:
        try:
            response = await self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in _MISSING_CODES:
                return None
            raise unavailable("head_object", exc) from exc
        except S3_ERRORS as exc:
            raise unavailable("head_object", exc) from exc
        return ObjectHead(
            size=int(response["ContentLength"]),
            content_type=str(response.get("ContentType", "")),
            etag=str(response.get("ETag", "")),
        )

    async def open(self, key: str, *, download: bool = False) -> ObjectBody:
        """Start reading an object; iterate ``chunks`` to the end (or close it) to release it.
        ``download``: the chunks go out to a client (counted as bytes sent)."""
        try:
            response = await self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in _MISSING_CODES:
                raise ObjectMissing(key) from exc
            raise unavailable("get_object", exc) from exc
        except S3_ERRORS as exc:
            raise unavailable("get_object", exc) from exc
        body: Any = response["Body"]
        return ObjectBody(
            size=int(response["ContentLength"]),
            content_type=str(response.get("ContentType", "application/octet-stream")),
            chunks=_body_chunks(body, key, download=download),
        )

    # -- URLs ------------------------------------------------------------------------------

    @property
    def is_public(self) -> bool:
        return bool(self.public_url)

    async def download_url(self, key: str, *, disposition: str) -> str:
        """``R2_PUBLIC_URL/key`` for a public bucket, else a presigned GET."""
        if self.public_url:
            return f"{self.public_url}/{quote(key, safe='/')}"
        try:
            url: str = await self.client.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self.bucket,
                    "Key": key,
                    "ResponseContentDisposition": disposition,
                },
                ExpiresIn=self.presign_ttl_s,
            )
        except S3_ERRORS as exc:
            raise unavailable("presign_get", exc) from exc
        return url

    async def upload_url(self, key: str, *, content_type: str, size: int) -> str:
        """A presigned PUT whose signature covers ``Content-Type`` and ``Content-Length``."""
        try:
            url: str = await self.client.generate_presigned_url(
                "put_object",
                Params={
                    "Bucket": self.bucket,
                    "Key": key,
                    "ContentType": content_type,
                    "ContentLength": size,
                },
                ExpiresIn=self.presign_ttl_s,
            )
        except S3_ERRORS as exc:
            raise unavailable("presign_put", exc) from exc
        return url


async def _body_chunks(body: Any, key: str, *, download: bool) -> AsyncIterator[bytes]:
    try:
        async for chunk in body.iter_chunks(DOWNLOAD_CHUNK_BYTES):
            if download:
                BYTES_SENT.inc(len(chunk))
            yield chunk
    except S3_ERRORS as exc:
        # The status line is already sent: all we can do is cut the stream.
        log.warning("download_broken", key=key, error=error_code(exc))
        raise
    finally:
        body.close()
