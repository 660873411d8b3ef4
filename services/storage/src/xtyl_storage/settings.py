"""The storage service's settings, read once from the environment (see the README's table).

The R2 variable names are the original design's: ``R2_ENDPOINT``, ``R2_ACCESS_KEY``,
``R2_SECRET_KEY``, ``R2_BUCKET``, ``R2_PUBLIC_URL``. Locally they point at SeaweedFS.
"""

from __future__ import annotations

from xtyl_common.settings import BaseSettings


class StorageSettings(BaseSettings, frozen=True, kw_only=True):
    database_url: str
    redis_url: str
    r2_endpoint: str
    r2_access_key: str
    r2_secret_key: str
    r2_bucket: str
    #: Public base URL of the bucket (``https://pub-xxx.r2.dev``); empty: presigned URLs instead.
    r2_public_url: str = ""
    db_pool_max: int = 10
    s3_connect_timeout_s: float = 5.0
    s3_read_timeout_s: float = 60.0
