"""Idempotency keys (what is accepted), the upload deadline (what it counts), the sweep of what
a failed upload may leave in the bucket, and the settings that tie them to the gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from xtyl_common.errors import InvalidInput, Unavailable
from xtyl_common.settings import SettingsError, load_settings
from xtyl_storage.adapters.orphans import OrphanSweeper
from xtyl_storage.adapters.uploads import stream_to_s3
from xtyl_storage.domain.idempotency import parse_idempotency_key, request_fingerprint
from xtyl_storage.service import excluding_client_time
from xtyl_storage.settings import StorageSettings

from .test_cursor_and_settings import ENV
from .test_streaming import MemoryBucket, pieces

# -- Idempotency-Key ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("0b6f3a0e-8a3e-4c1b-9d51-5d0f1f0c2a77", "0b6f3a0e-8a3e-4c1b-9d51-5d0f1f0c2a77"),
        ('"upload-42"', "upload-42"),  # the IETF draft's structured-field string
        ("  k  ", "k"),
        ("~!#$%&'()*+,-./:;<=>?@[]^_`{|}", "~!#$%&'()*+,-./:;<=>?@[]^_`{|}"),
        ("x" * 255, "x" * 255),
    ],
)
def test_idempotency_keys_accepted(raw: str, key: str) -> None:
    assert parse_idempotency_key(raw) == key


@pytest.mark.parametrize(
    "raw", ["", "   ", '""', "a b", "x" * 256, "caf\u00e9", 'a"b', "a\\b", "a\tb", "\x00"]
)
def test_idempotency_keys_refused(raw: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_idempotency_key(raw)
    assert caught.value.code == "invalid_idempotency_key"
    assert caught.value.extra == {"field": "Idempotency-Key"}


def test_the_fingerprint_tells_names_and_types_apart() -> None:
    one = request_fingerprint("a.txt", "text/plain")
    assert one == request_fingerprint("a.txt", "text/plain")
    assert one != request_fingerprint("b.txt", "text/plain")
    assert one != request_fingerprint("a.txt", "text/csv")
    assert request_fingerprint("a", "b/c") != request_fingerprint("a\x00b", "c")  # no ambiguity
    assert request_fingerprint(None, "text/plain") == request_fingerprint("", "text/plain")


# -- the deadline counts the service's own time, not the client's ------------------------------


async def trickle(count: int, pause_s: float) -> AsyncIterator[bytes]:
    for _ in range(count):
        await asyncio.sleep(pause_s)
        yield b"x" * 10


async def test_waiting_for_a_slow_client_does_not_count() -> None:
    received = 0
    async with asyncio.timeout(0.5) as deadline:  # the client takes 1.5 s
        async for chunk in excluding_client_time(trickle(5, 0.3), deadline):
            received += len(chunk)
    assert received == 50
    assert not deadline.expired()


async def slow_writes(deadline_s: float) -> None:
    async with asyncio.timeout(deadline_s) as deadline:
        async for _ in excluding_client_time(trickle(5, 0.01), deadline):
            await asyncio.sleep(0.3)  # a slow S3 write after each chunk: 1.5 s in all


async def test_our_own_work_counts_between_chunks() -> None:
    with pytest.raises(TimeoutError):
        await slow_writes(0.5)


async def test_a_deadline_cancels_an_upload_without_waiting_on_s3_for_the_abort() -> None:
    class StalledParts(MemoryBucket):
        async def upload_part(self, key: str, upload_id: str, number: int, body: bytes) -> str:
            await asyncio.sleep(3600)  # S3 frozen
            raise AssertionError("unreachable")

        async def abort_multipart(self, key: str, upload_id: str) -> bool:
            await asyncio.sleep(3600)  # S3 frozen: an abort would hang as well
            raise AssertionError("unreachable")

    bucket = StalledParts()
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await stream_to_s3(
                bucket,
                "k",
                pieces(b"y" * 5000, 100),
                content_type="text/plain",
                disposition="attachment",
                metadata={},
                max_bytes=10_000,
                part_bytes=1000,
                concurrency=2,
            )
    assert asyncio.get_running_loop().time() - started < 5  # answered, not stuck on S3
    assert bucket.objects == {}


# -- the sweep of what a failed upload may leave ------------------------------------------------


@dataclass
class FlakyBucket:
    """A bucket that is down for its first ``down_for`` requests."""

    down_for: int = 0
    objects: set[str] = field(default_factory=set[str])
    uploads: set[str] = field(default_factory=set[str])
    calls: int = 0

    def _call(self) -> None:
        self.calls += 1
        if self.calls <= self.down_for:
            raise Unavailable("S3 down", code="storage_unavailable")

    async def abort_uploads_under(self, key: str) -> int:
        self._call()
        found = int(key in self.uploads)
        self.uploads.discard(key)
        return found

    async def exists(self, key: str) -> bool:
        self._call()
        return key in self.objects

    async def delete(self, key: str) -> None:
        self._call()
        self.objects.discard(key)


@dataclass
class Rows:
    keys: set[str] = field(default_factory=set[str])

    async def key_is_recorded(self, key: str) -> bool:
        return key in self.keys


async def wait_until_idle(sweeper: OrphanSweeper, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while sweeper.pending:
            await asyncio.sleep(0.01)


async def test_the_sweep_outlasts_an_s3_outage_and_removes_late_writes() -> None:
    bucket = FlakyBucket(down_for=3, objects={"o/f/a.txt"}, uploads={"o/f/a.txt"})
    sweeper = OrphanSweeper(bucket, Rows(), attempt_timeout_s=1.0, recheck_after_s=(0.2, 0.2))
    sweeper.sweep("o/f/a.txt")
    async with asyncio.timeout(10):
        while bucket.objects or bucket.uploads:
            await asyncio.sleep(0.01)
    bucket.objects.add("o/f/a.txt")  # a write S3 applied just after our delete
    await wait_until_idle(sweeper)
    assert bucket.objects == set()
    assert bucket.uploads == set()


async def test_the_sweep_survives_an_unexpected_error() -> None:
    class Broken(FlakyBucket):
        async def abort_uploads_under(self, key: str) -> int:
            self.calls += 1
            if self.calls == 1:
                raise KeyError("UploadId")  # a reply we did not expect
            return 0

    bucket = Broken(objects={"k"})
    sweeper = OrphanSweeper(bucket, Rows(), attempt_timeout_s=1.0, recheck_after_s=())
    sweeper.sweep("k")
    await wait_until_idle(sweeper)
    assert bucket.objects == set()


async def test_the_sweep_never_deletes_an_object_a_row_points_at() -> None:
    bucket = FlakyBucket(objects={"o/f/a.txt"})
    sweeper = OrphanSweeper(
        bucket, Rows({"o/f/a.txt"}), attempt_timeout_s=1.0, recheck_after_s=(0.01,)
    )
    sweeper.sweep("o/f/a.txt")
    await wait_until_idle(sweeper)
    assert bucket.objects == {"o/f/a.txt"}
    assert bucket.calls == 0


async def test_closing_stops_sweeps_still_waiting_for_s3() -> None:
    bucket = FlakyBucket(down_for=10**6, objects={"k"})
    sweeper = OrphanSweeper(bucket, Rows(), attempt_timeout_s=1.0)
    sweeper.sweep("k")
    sweeper.sweep("k")  # one sweep per key
    assert sweeper.pending == 1
    await asyncio.sleep(0.05)
    await sweeper.close()
    assert sweeper.pending == 0
    assert bucket.objects == {"k"}


# -- settings -----------------------------------------------------------------------------------


def test_deadline_defaults_nest_inside_the_gateways_timeout() -> None:
    settings = load_settings(StorageSettings, environ=ENV)
    gateway_upstream_read_timeout_s = 60.0  # GatewaySettings' default
    assert settings.request_deadline_s < gateway_upstream_read_timeout_s
    assert settings.s3_connect_timeout_s + settings.s3_read_timeout_s <= (
        settings.request_deadline_s
    )
    assert settings.idempotency_key_ttl_s == 24 * 3600


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"REQUEST_DEADLINE_S": "10", "S3_READ_TIMEOUT_S": "8"}, "S3_READ_TIMEOUT_S"),
        ({"REQUEST_DEADLINE_S": "0"}, "REQUEST_DEADLINE_S"),
        ({"IDEMPOTENCY_KEY_TTL_S": "59"}, "IDEMPOTENCY_KEY_TTL_S"),
        ({"IDEMPOTENCY_KEY_TTL_S": str(8 * 24 * 3600)}, "IDEMPOTENCY_KEY_TTL_S"),
    ],
)
def test_deadline_settings_that_cannot_work_are_refused(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(StorageSettings, environ={**ENV, **env})
    assert caught.value.variable == variable
