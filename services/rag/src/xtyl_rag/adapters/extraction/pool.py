"""A small pool of extraction children (see ``child.py``): reused across documents, replaced
after a timeout, a memory failure, a crash or ``max_jobs_per_child`` documents.

A document that is too big, too slow or too hungry fails with :class:`ExtractionFailed` and a
stable reason; the calling process only ever waits on a pipe.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from typing import Self, cast

import msgspec
import structlog

from xtyl_common.errors import Unavailable
from xtyl_rag.adapters.extraction.contracts import (
    EXIT_MEMORY,
    FRAME_HEADER,
    ChildReply,
    ChildRequest,
    ExtractedText,
    ExtractionLimits,
)
from xtyl_rag.adapters.extraction.detect import detect_kind
from xtyl_rag.adapters.extraction.errors import REASONS, ExtractionFailed, ExtractionReason

log = structlog.stdlib.get_logger("xtyl.rag.extraction")

CHILD_MODULE = "xtyl_rag.adapters.extraction.child"
#: the only variables a child sees: it parses untrusted files and needs no secrets.
CHILD_ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR")
START_TIMEOUT_S = 30.0

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ChildReply)


class ExtractionChild:
    """One child process and its pipes; one document at a time."""

    def __init__(self, process: asyncio.subprocess.Process, started_ms: float) -> None:
        self.process = process
        self.started_ms = started_ms
        self.jobs = 0

    @classmethod
    async def start(cls) -> ExtractionChild:
        started = time.perf_counter()
        env = {name: os.environ[name] for name in CHILD_ENVIRONMENT if name in os.environ}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            CHILD_MODULE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        child = cls(process, 0.0)
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                ready = await child._read_frame()
        except (TimeoutError, asyncio.IncompleteReadError) as exc:
            await child.kill()
            raise Unavailable(
                "the extraction child did not start", code="extraction_unavailable"
            ) from exc
        if ready != b"":
            await child.kill()
            raise Unavailable(
                "the extraction child spoke out of turn", code="extraction_unavailable"
            )
        child.started_ms = (time.perf_counter() - started) * 1000
        log.debug("extraction_child_started", pid=process.pid, ms=round(child.started_ms))
        return child

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def run(self, request: ChildRequest) -> ExtractedText:
        """The child's answer; on a timeout, a death or a memory failure the child is gone."""
        self.jobs += 1
        body = _encoder.encode(request)
        assert self.process.stdin is not None
        try:
            async with asyncio.timeout(request.limits.timeout_s):
                self.process.stdin.write(FRAME_HEADER.pack(len(body)) + body)
                del body
                await self.process.stdin.drain()
                frame = await self._read_frame()
        except TimeoutError:
            await self.kill()
            raise ExtractionFailed(
                "timeout", f"extraction took longer than {request.limits.timeout_s:g} s"
            ) from None
        except (asyncio.IncompleteReadError, ConnectionError):
            raise await self._death() from None
        except BaseException:  # cancelled mid-document: the pipes are out of step
            await self.kill()
            raise
        reply = _decoder.decode(frame)
        if reply.result is not None:
            return reply.result
        if reply.reason == "memory_limit":
            await self.process.wait()  # it exits by itself after a MemoryError
        reason: ExtractionReason = "extractor_crashed"
        if reply.reason in REASONS:
            reason = cast(ExtractionReason, reply.reason)
        raise ExtractionFailed(reason, reply.detail)

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        if self.process.stdin is not None:
            self.process.stdin.close()
        await self.process.wait()

    async def _read_frame(self) -> bytes:
        assert self.process.stdout is not None
        (size,) = FRAME_HEADER.unpack(await self.process.stdout.readexactly(FRAME_HEADER.size))
        return await self.process.stdout.readexactly(size) if size else b""

    async def _death(self) -> ExtractionFailed:
        code = await self.process.wait()
        if code in (EXIT_MEMORY, -signal.SIGKILL):
            return ExtractionFailed("memory_limit", "the extractor ran out of memory")
        if code == -signal.SIGXCPU:
            return ExtractionFailed("timeout", "the extractor ran out of CPU time")
        return ExtractionFailed("extractor_crashed", f"the extractor died (status {code})")


class ExtractorPool:
    """Up to ``size`` documents at once, each in a child process of its own.

    Open it in the lifespan (``async with ExtractorPool(...) as pool``, or :meth:`start` and
    :meth:`aclose`); children start lazily, or ahead with :meth:`start`.
    """

    def __init__(
        self,
        limits: ExtractionLimits | None = None,
        *,
        size: int = 1,
        max_jobs_per_child: int = 200,
    ) -> None:
        if size < 1:
            raise ValueError("an extraction pool needs at least one child")
        self.limits = limits or ExtractionLimits()
        self.size = size
        self.max_jobs_per_child = max_jobs_per_child
        self._idle: list[ExtractionChild] = []
        self._slots = asyncio.Semaphore(size)
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start every child now rather than on the first documents."""
        children = await asyncio.gather(
            *(ExtractionChild.start() for _ in range(self.size - len(self._idle)))
        )
        self._idle.extend(children)

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(child.kill() for child in idle))

    async def extract_text(
        self,
        data: bytes,
        content_type: str,
        filename: str,
        limits: ExtractionLimits | None = None,
    ) -> ExtractedText:
        limits = limits or self.limits
        started = time.perf_counter()
        try:
            if len(data) > limits.max_input_bytes:
                raise ExtractionFailed(
                    "too_large",
                    f"the file has {len(data)} bytes, the limit is {limits.max_input_bytes}",
                )
            kind, charset = detect_kind(data, content_type, filename)
            request = ChildRequest(kind=kind, data=data, charset=charset, limits=limits)
            result = await self._run(request)
        except ExtractionFailed as exc:
            log.info(
                "extraction_failed",
                filename=filename,
                reason=exc.reason,
                detail=exc.detail,
                ms=round((time.perf_counter() - started) * 1000),
            )
            raise
        log.info(
            "document_extracted",
            filename=filename,
            kind=kind,
            bytes=len(data),
            chars=len(result.text),
            pages=len(result.pages) if result.pages is not None else None,
            ms=round((time.perf_counter() - started) * 1000),
        )
        return result

    async def _run(self, request: ChildRequest) -> ExtractedText:
        if self._closed:
            raise Unavailable("the extraction pool is closed", code="extraction_unavailable")
        async with self._slots:
            child = self._idle.pop() if self._idle else await ExtractionChild.start()
            try:
                return await child.run(request)
            finally:
                await self._release(child)

    async def _release(self, child: ExtractionChild) -> None:
        if child.alive and not self._closed and child.jobs < self.max_jobs_per_child:
            self._idle.append(child)
        else:
            await child.kill()


async def extract_text(
    data: bytes,
    content_type: str,
    filename: str,
    limits: ExtractionLimits | None = None,
    *,
    pool: ExtractorPool | None = None,
) -> ExtractedText:
    """Text of one document; with no ``pool``, in a child started for this document alone."""
    if pool is not None:
        return await pool.extract_text(data, content_type, filename, limits)
    async with ExtractorPool(limits) as own:
        return await own.extract_text(data, content_type, filename)
