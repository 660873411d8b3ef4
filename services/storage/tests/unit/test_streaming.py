"""The upload engine and the multipart reader, against an in-memory bucket."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from xtyl_common.errors import ClientError, InvalidInput, PayloadTooLarge, Unavailable
from xtyl_storage.adapters.uploads import stream_to_s3
from xtyl_storage.routes.bodies import RequestBody, StreamingForm

PART = 1000


@dataclass
class MemoryBucket:
    """An in-memory implementation of the upload target, recording what happened."""

    fail_part: int | None = None
    objects: dict[str, bytes] = field(default_factory=dict[str, bytes])
    uploads: dict[str, dict[int, bytes]] = field(default_factory=dict[str, dict[int, bytes]])
    aborted: list[str] = field(default_factory=list[str])
    in_flight: int = 0
    max_in_flight: int = 0

    async def put(
        self,
        key: str,
        body: bytes,
        *,
        content_type: str,
        disposition: str,
        metadata: dict[str, str],
    ) -> None:
        self.objects[key] = body

    async def create_multipart(
        self, key: str, *, content_type: str, disposition: str, metadata: dict[str, str]
    ) -> str:
        upload_id = f"u{len(self.uploads)}"
        self.uploads[upload_id] = {}
        return upload_id

    async def upload_part(self, key: str, upload_id: str, number: int, body: bytes) -> str:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.001)
            if number == self.fail_part:
                raise Unavailable("boom", code="storage_unavailable")
            self.uploads[upload_id][number] = body
            return f"etag{number}"
        finally:
            self.in_flight -= 1

    async def complete_multipart(self, key: str, upload_id: str, etags: list[str]) -> None:
        parts = self.uploads.pop(upload_id)
        assert etags == [f"etag{n}" for n in range(1, len(parts) + 1)]
        self.objects[key] = b"".join(parts[n] for n in sorted(parts))

    async def abort_multipart(self, key: str, upload_id: str) -> bool:
        self.uploads.pop(upload_id, None)
        self.aborted.append(upload_id)
        return True


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def store(bucket: MemoryBucket, data: bytes, *, max_bytes: int = 10_000, chunk: int = 77):
    return await stream_to_s3(
        bucket,
        "k",
        pieces(data, chunk),
        content_type="text/plain",
        disposition="attachment",
        metadata={},
        max_bytes=max_bytes,
        part_bytes=PART,
        concurrency=2,
    )


async def test_small_body_is_one_put() -> None:
    bucket = MemoryBucket()
    result = await store(bucket, b"x" * 999)
    assert bucket.objects == {"k": b"x" * 999}
    assert result.size == 999
    assert result.sha256 == hashlib.sha256(b"x" * 999).hexdigest()
    assert bucket.uploads == {}


@pytest.mark.parametrize("size", [1000, 1001, 3500, 7000])
async def test_large_body_is_equal_parts_with_bounded_concurrency(size: int) -> None:
    bucket = MemoryBucket()
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    result = await store(bucket, data)
    assert bucket.objects["k"] == data
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert bucket.max_in_flight <= 2
    assert bucket.uploads == {}


async def test_parts_but_the_last_are_equal() -> None:
    seen: list[int] = []

    class Recording(MemoryBucket):
        async def upload_part(self, key: str, upload_id: str, number: int, body: bytes) -> str:
            seen.append(len(body))
            return await super().upload_part(key, upload_id, number, body)

    await store(Recording(), b"y" * 4321, chunk=333)
    assert seen[:-1] == [PART] * (len(seen) - 1)
    assert 0 < seen[-1] <= PART


async def test_too_large_aborts_the_multipart_upload() -> None:
    bucket = MemoryBucket()
    with pytest.raises(PayloadTooLarge):
        await store(bucket, b"z" * 5000, max_bytes=4000)
    assert bucket.aborted == ["u0"]
    assert bucket.uploads == {}
    assert bucket.objects == {}


async def test_a_failing_part_aborts_and_raises_503() -> None:
    bucket = MemoryBucket(fail_part=2)
    with pytest.raises(Unavailable):
        await store(bucket, b"q" * 5000)
    assert bucket.aborted == ["u0"]
    assert bucket.objects == {}


# -- the multipart reader --------------------------------------------------------------------


def form(data: bytes, *, extra: bytes = b"") -> bytes:
    return (
        b"--BOUND\r\n"
        b'Content-Disposition: form-data; name="file"; filename="a b.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\n" + data + b"\r\n" + extra + b"--BOUND--\r\n"
    )


def receive_from(body: bytes, size: int):
    chunks = [body[i : i + size] for i in range(0, len(body), size)] or [b""]

    async def receive() -> dict[str, object]:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    return receive


async def read_file(body: bytes, size: int) -> tuple[str | None, str | None, bytes]:
    reader = RequestBody(receive_from(body, size))
    parsed = StreamingForm(reader.chunks(max_bytes=10**6, file_limit=10**6), "BOUND")
    part = await parsed.file()
    out = bytearray()
    async for chunk in part.chunks():
        out += chunk
    return part.filename, part.content_type, bytes(out)


@pytest.mark.parametrize("size", [1, 2, 7, 13, 64, 4096])
async def test_form_parses_whatever_the_chunk_boundaries(size: int) -> None:
    data = b"line one\r\n--BOUN not a boundary\r\n" * 20
    assert await read_file(form(data), size) == ("a b.txt", "text/plain", data)


async def test_a_second_part_after_the_file_is_refused() -> None:
    extra = b'--BOUND\r\nContent-Disposition: form-data; name="owner_id"\r\n\r\nx\r\n'
    with pytest.raises(InvalidInput) as caught:
        await read_file(form(b"data", extra=extra), 10)
    assert caught.value.code == "unexpected_field"


async def test_a_truncated_form_is_malformed() -> None:
    with pytest.raises(ClientError) as caught:
        await read_file(form(b"data")[:-12], 10)
    assert caught.value.code == "malformed_multipart"


async def test_the_body_limit_counts_real_bytes() -> None:
    reader = RequestBody(receive_from(b"x" * 5000, 100))
    with pytest.raises(PayloadTooLarge):
        async for _ in reader.chunks(max_bytes=4000, file_limit=4000):
            pass
