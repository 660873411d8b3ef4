"""The storage service's settings, read once from the environment (see the README's table).

The R2 variable names are the original design's: ``R2_ENDPOINT``, ``R2_ACCESS_KEY``,
``R2_SECRET_KEY``, ``R2_BUCKET``, ``R2_PUBLIC_URL``. Locally they point at SeaweedFS.
"""

from __future__ import annotations

from xtyl_common.identity import AuthSettings
from xtyl_storage.domain.media_types import parse_patterns
from xtyl_storage.domain.parts import MAX_SINGLE_PUT_BYTES, MIB, part_size_for

#: The longest a presigned URL may live: 15 minutes.
MAX_PRESIGN_TTL_S = 900
#: Most keys a DeleteObjects call takes (S3's limit), so the largest ERASURE_BATCH_SIZE.
MAX_ERASURE_BATCH_SIZE = 1000
#: Bounds of IDEMPOTENCY_KEY_TTL_S: a minute (longer than any retry loop) to a week.
MIN_IDEMPOTENCY_TTL_S = 60
MAX_IDEMPOTENCY_TTL_S = 7 * 24 * 3600

DEFAULT_ALLOWED_CONTENT_TYPES = ",".join(
    (
        "application/pdf",
        "text/*",
        "application/json",
        "application/msword",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/epub+zip",
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
    )
)


class StorageSettings(AuthSettings, frozen=True, kw_only=True):
    database_url: str
    redis_url: str
    r2_endpoint: str
    r2_access_key: str
    r2_secret_key: str
    r2_bucket: str
    #: Public base URL of the bucket (``https://pub-xxx.r2.dev``); empty: presigned URLs instead.
    r2_public_url: str = ""
    db_pool_max: int = 10
    #: One S3 attempt (of 3); both together must fit in ``request_deadline_s``.
    s3_connect_timeout_s: float = 5.0
    s3_read_timeout_s: float = 20.0
    #: The most an upload's own work (S3 with retries, Postgres) may take, waiting for the
    #: client's bytes not counted; past it 504 ``storage_timeout`` and nothing is stored. Keep
    #: it below the gateway's ``UPSTREAM_READ_TIMEOUT_S`` (60 s), so the gateway never gives up
    #: on an upload that later commits. Also bounds the start of a download.
    request_deadline_s: float = 45.0
    #: How long an ``Idempotency-Key`` of ``POST /v1/files`` is remembered.
    idempotency_key_ttl_s: int = 24 * 3600
    #: Largest file accepted through ``POST /v1/files`` (bytes); more is 413.
    max_upload_bytes: int = 100 * MIB
    #: Largest file accepted through a presigned PUT (bytes; S3 allows one PUT of 5 GiB).
    max_presigned_upload_bytes: int = 1024 * MIB
    #: Comma-separated ``type/subtype``, ``type/*`` or ``*/*``; anything else is 415.
    allowed_content_types: str = DEFAULT_ALLOWED_CONTENT_TYPES
    #: Preferred multipart part size (at least 5 MiB; raised when needed to fit 10 000 parts).
    upload_part_bytes: int = 5 * MIB
    #: Parts of one upload sent to S3 at once (memory per upload ≈ (this + 1) x part size).
    upload_part_concurrency: int = 3
    #: Lifetime of presigned GET and PUT URLs, seconds (at most 900).
    presign_ttl_s: int = 900
    #: Bytes one user may keep stored (ready files; uploads in progress hold their share);
    #: past it 403 ``quota_storage_bytes``.
    quota_storage_bytes: int = 5 * 1024 * MIB
    #: Files one user may keep (ready files and uploads in progress); past it 403
    #: ``quota_files``.
    quota_files: int = 10_000
    #: Erasing a deleted user: objects per DeleteObjects call, rows per delete (each batch its
    #: own short transaction). 1 to 1000.
    erasure_batch_size: int = 500
    #: Pause between two erasure batches: paces a big erasure so it does not crowd out the
    #: requests of everyone else (Postgres, R2's request rate). 0 to 10 s.
    erasure_batch_pause_s: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_upload_bytes < 1:
            raise ValueError("must be at least 1 (at `$.max_upload_bytes`)")
        if not 1 <= self.max_presigned_upload_bytes <= MAX_SINGLE_PUT_BYTES:
            raise ValueError(
                f"must be between 1 and {MAX_SINGLE_PUT_BYTES} (at `$.max_presigned_upload_bytes`)"
            )
        try:
            parse_patterns(self.allowed_content_types)
        except ValueError as exc:
            raise ValueError(f"{exc} (at `$.allowed_content_types`)") from None
        try:
            self.part_bytes()
        except ValueError as exc:
            raise ValueError(f"{exc} (at `$.upload_part_bytes`)") from None
        if not 1 <= self.upload_part_concurrency <= 16:
            raise ValueError("must be between 1 and 16 (at `$.upload_part_concurrency`)")
        if not 1 <= self.presign_ttl_s <= MAX_PRESIGN_TTL_S:
            raise ValueError(f"must be between 1 and {MAX_PRESIGN_TTL_S} (at `$.presign_ttl_s`)")
        if self.request_deadline_s <= 0:
            raise ValueError("must be a positive number (at `$.request_deadline_s`)")
        if self.s3_connect_timeout_s <= 0 or self.s3_read_timeout_s <= 0:
            raise ValueError("must be a positive number (at `$.s3_read_timeout_s`)")
        if self.s3_connect_timeout_s + self.s3_read_timeout_s > self.request_deadline_s:
            raise ValueError(
                "S3_CONNECT_TIMEOUT_S + S3_READ_TIMEOUT_S must not exceed REQUEST_DEADLINE_S, so"
                " one S3 attempt fits in a request (at `$.s3_read_timeout_s`)"
            )
        if not MIN_IDEMPOTENCY_TTL_S <= self.idempotency_key_ttl_s <= MAX_IDEMPOTENCY_TTL_S:
            raise ValueError(
                f"must be between {MIN_IDEMPOTENCY_TTL_S} and {MAX_IDEMPOTENCY_TTL_S}"
                " (at `$.idempotency_key_ttl_s`)"
            )
        self._check_user_limits()
        if self.r2_public_url and not self.r2_public_url.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL or empty (at `$.r2_public_url`)")

    def _check_user_limits(self) -> None:
        if self.quota_storage_bytes < 0:
            raise ValueError("must be 0 or more (at `$.quota_storage_bytes`)")
        if self.quota_files < 0:
            raise ValueError("must be 0 or more (at `$.quota_files`)")
        if not 0 <= self.erasure_batch_pause_s <= 10:
            raise ValueError("must be between 0 and 10 seconds (at `$.erasure_batch_pause_s`)")
        if not 1 <= self.erasure_batch_size <= MAX_ERASURE_BATCH_SIZE:
            raise ValueError(
                f"must be between 1 and {MAX_ERASURE_BATCH_SIZE} (at `$.erasure_batch_size`)"
            )

    def part_bytes(self) -> int:
        return part_size_for(self.max_upload_bytes, self.upload_part_bytes)

    def content_type_patterns(self) -> tuple[str, ...]:
        return parse_patterns(self.allowed_content_types)
