"""The S3 client (Cloudflare R2 in production, SeaweedFS locally): one per process."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

import aioboto3
from botocore.config import Config

from xtyl_storage.settings import StorageSettings


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
    )


@asynccontextmanager
async def open_s3_client(settings: StorageSettings) -> AsyncGenerator[Any]:
    session: Any = aioboto3.Session()
    async with session.client(
        "s3",
        endpoint_url=settings.r2_endpoint,
        aws_access_key_id=settings.r2_access_key,
        aws_secret_access_key=settings.r2_secret_key,
        config=client_config(settings),
    ) as client:
        yield client


async def check_bucket(client: Any, bucket: str) -> None:
    """Readiness check: the bucket answers HEAD with our credentials."""
    await client.head_bucket(Bucket=bucket)
