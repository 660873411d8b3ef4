"""The plugin's fixtures reach real servers: Postgres + pgvector, Redis, a signature-checking S3."""

from __future__ import annotations

import os
from typing import Any

import asyncpg
import pytest
import redis
from botocore.exceptions import ClientError

from xtyl_devstack.s3 import s3_client
from xtyl_devstack.stack import StackInfo


async def test_database_url_has_pgvector(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        extension = await conn.fetchval("SELECT extname FROM pg_extension WHERE extname = 'vector'")
        distance = await conn.fetchval("SELECT '[1,2,3]'::vector <-> '[1,2,5]'::vector")
        database = await conn.fetchval("SELECT current_database()")
    finally:
        await conn.close()
    assert extension == "vector"
    assert distance == 2.0
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    assert database.startswith(f"xtyl_test_{worker}_")


async def test_default_database_has_pgvector(devstack: StackInfo) -> None:
    conn = await asyncpg.connect(devstack.database_url)
    try:
        extension = await conn.fetchval("SELECT extname FROM pg_extension WHERE extname = 'vector'")
    finally:
        await conn.close()
    assert devstack.database == "xtyl"
    assert extension == "vector"


def test_redis_answers_and_keeps_keys(redis_url: str, redis_prefix: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        assert client.ping() is True
        client.set(f"{redis_prefix}greeting", "hello", ex=60)
        assert client.get(f"{redis_prefix}greeting") == b"hello"


def test_s3_put_then_get_in_fresh_bucket(s3_client: Any, s3_bucket: str) -> None:
    assert s3_client.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0
    s3_client.put_object(Bucket=s3_bucket, Key="docs/a.txt", Body=b"hello s3")
    body = s3_client.get_object(Bucket=s3_bucket, Key="docs/a.txt")["Body"].read()
    assert body == b"hello s3"


def test_s3_default_bucket_exists(s3_client: Any, devstack: StackInfo) -> None:
    s3_client.head_bucket(Bucket=devstack.s3_bucket)  # raises if missing


def test_s3_rejects_a_wrong_secret(devstack: StackInfo) -> None:
    intruder = s3_client(devstack.s3_endpoint, devstack.s3_access_key, "not-the-secret", attempts=1)
    try:
        with pytest.raises(ClientError) as caught:
            intruder.list_buckets()
    finally:
        intruder.close()
    assert caught.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_stack_info_round_trips_through_json(devstack: StackInfo) -> None:
    assert StackInfo.from_json(devstack.to_json()) == devstack
    assert devstack.database_url == f"{devstack.postgres_dsn}/{devstack.database}"
