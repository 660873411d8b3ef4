"""The drill of the "504 that was really a success": S3 frozen past the gateway's timeout.

Real processes: client → gateway → storage → S3, where S3 is a SeaweedFS of this module's own
(not the session's shared one) that the test freezes with SIGSTOP and thaws with SIGCONT, like
an S3 that stops answering without closing anything. A frozen S3 still accepts connections and
request bytes into its socket buffers, and applies those requests when it comes back.

What must hold: every answer the client got matches what is stored once S3 is back (a failure
answer: no row, no object, no event, ever; a 201: the file, whole); storage gives its own answer
before the gateway would give up; and a retry with the same ``Idempotency-Key`` yields exactly
one file per key.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import signal
import time
import uuid
from collections.abc import AsyncGenerator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from xtyl_devstack.s3 import S3Server, delete_bucket
from xtyl_devstack.service_process import RunningService, running_service_async

from .conftest import MIB, User, events_of, rows_of
from .test_uploads import multipart_body

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: The gateway gives up this long after the request body (a short UPSTREAM_READ_TIMEOUT_S) …
GATEWAY_TIMEOUT_S = 8.0
#: … and storage's own deadline sits well below it, with one S3 attempt (1 + 2 s) inside.
STORAGE_ENV = {
    "REQUEST_DEADLINE_S": "3",
    "S3_CONNECT_TIMEOUT_S": "1",
    "S3_READ_TIMEOUT_S": "2",
    "MAX_UPLOAD_BYTES": str(10 * 1000 * 1000),
    "UPLOAD_PART_BYTES": str(5 * MIB),
}
#: S3 stays frozen this long past the gateway's timeout for the uploads sent into the freeze.
FROZEN_PAST_GATEWAY_S = 3.0
#: After S3 is back, how long everything has to settle (what S3 applies late is swept).
SETTLE_WITHIN_S = 60.0


@pytest.fixture(scope="module")
def private_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS for this module alone: freezing it cannot stall any other test."""
    root = tmp_path_factory.mktemp("frozen-s3")
    server = S3Server(
        root / "s3",
        access_key="frozen-s3-access",
        secret_key="frozen-s3-secret-key-0123456789",
        bucket="frozen-default",
        log_path=root / "s3.log",
    )
    server.start()
    try:
        yield server
    finally:
        thaw(server)
        server.stop()


def thaw(server: S3Server) -> None:
    if server.pid is not None:
        os.kill(server.pid, signal.SIGCONT)


@pytest.fixture
def private_bucket(private_s3: S3Server) -> Iterator[tuple[Any, str]]:
    client = private_s3.client()
    name = f"frozen-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    yield client, name
    thaw(private_s3)
    delete_bucket(client, name)
    client.close()


@asynccontextmanager
async def gateway_and_storage(
    storage_env: dict[str, str],
    auth_env: dict[str, str],
    log_dir: Path,
    s3: S3Server,
    bucket: str,
) -> AsyncGenerator[RunningService]:
    env = {
        **storage_env,
        **STORAGE_ENV,
        "R2_ENDPOINT": s3.endpoint,
        "R2_ACCESS_KEY": s3.access_key,
        "R2_SECRET_KEY": s3.secret_key,
        "R2_BUCKET": bucket,
    }
    async with running_service_async(
        "xtyl_storage", env, log_dir=log_dir, name="storage-frozen", ready_path="/readyz"
    ) as storage:
        gateway_env = {
            **auth_env,
            "DATABASE_URL": env["DATABASE_URL"],
            "REDIS_URL": env["REDIS_URL"],
            "STORAGE_URL": storage.url,
            "RATE_LIMIT_REQUESTS": "100000",
            "UPSTREAM_READ_TIMEOUT_S": str(GATEWAY_TIMEOUT_S),
        }
        async with running_service_async(
            "xtyl_gateway", gateway_env, log_dir=log_dir, name="gateway-frozen"
        ) as gateway:
            yield gateway


@dataclass(frozen=True)
class Upload:
    """One file a client uploads, under its own Idempotency-Key."""

    name: str
    data: bytes
    form: bool = False

    @property
    def key(self) -> str:
        return f"drill-{self.name}"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class Answer:
    upload: Upload
    status: int
    body: dict[str, Any]
    replayed: bool
    seconds: float


async def send(
    http: aiohttp.ClientSession, gateway: RunningService, user: User, upload: Upload
) -> Answer:
    headers = {**user.headers, "Idempotency-Key": upload.key}
    params: dict[str, str] = {}
    if upload.form:
        data, headers["Content-Type"] = multipart_body(
            [("file", upload.name, "text/plain", upload.data)]
        )
    else:
        data, params["filename"] = upload.data, upload.name
        headers["Content-Type"] = "application/octet-stream"
    started = time.monotonic()
    async with http.post(
        f"{gateway.url}/v1/files", params=params, headers=headers, data=io.BytesIO(data)
    ) as resp:
        body: dict[str, Any] = await resp.json(content_type=None)
        return Answer(
            upload,
            resp.status,
            body,
            resp.headers.get("Idempotent-Replayed") == "true",
            time.monotonic() - started,
        )


@dataclass(frozen=True)
class Stored:
    rows: list[dict[str, Any]]
    objects: list[str]
    open_uploads: list[str]

    @property
    def consistent(self) -> bool:
        """Every object is a ready row's, every ready row has its object, no parts linger."""
        ready = sorted(row["key"] for row in self.rows if row["status"] == "ready")
        return ready == sorted(self.objects) and not self.open_uploads


async def stored(db: asyncpg.Connection, user: User, client: Any, bucket: str) -> Stored:
    listed = await asyncio.to_thread(client.list_objects_v2, Bucket=bucket)
    uploads = await asyncio.to_thread(client.list_multipart_uploads, Bucket=bucket)
    return Stored(
        rows=await rows_of(db, user.id),
        objects=[item["Key"] for item in listed.get("Contents", [])],
        open_uploads=[item["Key"] for item in uploads.get("Uploads", [])],
    )


def mismatches(answers: list[Answer], now: Stored) -> list[str]:
    """Answers that do not match what is stored."""
    by_name = {row["name"]: row for row in now.rows}
    wrong: list[str] = []
    for answer in answers:
        row = by_name.get(answer.upload.name)
        if answer.status == 201:
            if row is None or str(row["id"]) != answer.body["id"] or row["key"] not in now.objects:
                wrong.append(f"{answer.upload.name}: answered 201, not stored")
        elif row is not None:
            wrong.append(f"{answer.upload.name}: answered {answer.status}, stored as {row['id']}")
    return wrong


async def test_s3_frozen_past_the_gateway_timeout_answers_match_what_is_stored(
    storage_env: dict[str, str],
    auth_env: dict[str, str],
    service_log_dir: Path,
    private_s3: S3Server,
    private_bucket: tuple[Any, str],
    http: aiohttp.ClientSession,
    alice: User,
    db: asyncpg.Connection,
) -> None:
    client, bucket = private_bucket
    before = Upload("before.txt", os.urandom(100_000))
    into_the_freeze = [
        Upload("tiny.txt", os.urandom(20_000)),  # small PUTs fit in a frozen server's buffers
        Upload("small.txt", os.urandom(60_000)),
        Upload("one.txt", os.urandom(200_000)),
        Upload("two.txt", os.urandom(300_000)),
        Upload("three.txt", os.urandom(150_000)),
        Upload("form.txt", os.urandom(1_000_000), form=True),
        Upload("large.bin", os.urandom(6 * MIB)),  # a multipart upload to S3: 5 MiB + 1 MiB
    ]
    everything = [before, *into_the_freeze]
    async with gateway_and_storage(
        storage_env, auth_env, service_log_dir, private_s3, bucket
    ) as gateway:
        first = await send(http, gateway, alice, before)
        assert first.status == 201, first.body

        assert private_s3.pid is not None
        os.kill(private_s3.pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            frozen = list(
                await asyncio.gather(*(send(http, gateway, alice, u) for u in into_the_freeze))
            )
            # S3 stays frozen until the gateway's timeout has passed for every upload
            await asyncio.sleep(
                max(0.0, frozen_at + GATEWAY_TIMEOUT_S + FROZEN_PAST_GATEWAY_S - time.monotonic())
            )
        finally:
            thaw(private_s3)
        thawed_at = time.monotonic()

        # Once S3 is back it applies what it had received; then everything settles.
        now = await stored(db, alice, client, bucket)
        late_objects = set(now.objects)
        while not now.consistent and time.monotonic() - thawed_at < SETTLE_WITHIN_S:
            await asyncio.sleep(0.5)
            now = await stored(db, alice, client, bucket)
            late_objects |= set(now.objects)
        await asyncio.sleep(7)  # and stays settled (what S3 applies late is looked for again)
        now = await stored(db, alice, client, bucket)
        answers = [first, *frozen]
        summary = [
            (a.upload.name, a.status, a.body.get("code"), round(a.seconds, 1)) for a in answers
        ]
        assert mismatches(answers, now) == [], summary
        assert now.consistent, (summary, now)
        # The drill's point: storage answered, itself, before the gateway would have given up.
        for answer in frozen:
            assert answer.status == 504, summary
            assert answer.body["code"] == "storage_timeout", summary
            assert answer.seconds < GATEWAY_TIMEOUT_S, summary
        print(
            f"\nanswers {summary}; objects S3 applied after the failure answers, then swept:"
            f" {sorted(late_objects - set(now.objects))}"
        )
        ids = {str(row["id"]) for row in now.rows}
        assert ids == {first.body["id"]}
        assert [e["type"] for e in await events_of(db, first.body["id"])] == ["file.uploaded"]

        # The client retries every upload with its key: one file per key, whatever it was told.
        retried = list(await asyncio.gather(*(send(http, gateway, alice, u) for u in everything)))
        again = list(await asyncio.gather(*(send(http, gateway, alice, u) for u in everything)))
        for one, two in zip(retried, again, strict=True):
            assert one.status == two.status == 201, (one, two)
            assert two.replayed
            assert one.body["id"] == two.body["id"]
            assert one.body["sha256"] == one.upload.sha256
        assert retried[0].replayed
        assert retried[0].body["id"] == first.body["id"]
        assert not any(answer.replayed for answer in retried[1:])

        now = await stored(db, alice, client, bucket)
        assert now.consistent, now
        assert sorted(str(row["id"]) for row in now.rows) == sorted(a.body["id"] for a in retried)
        for answer in retried:
            async with http.get(
                f"{gateway.url}/v1/files/{answer.body['id']}/content", headers=alice.headers
            ) as resp:
                assert resp.status == 200
                assert hashlib.sha256(await resp.read()).hexdigest() == answer.upload.sha256
