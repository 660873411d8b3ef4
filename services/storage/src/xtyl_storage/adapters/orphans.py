"""Removing what a failed upload may still leave in the bucket, after its answer was sent.

An upload answered with a failure has no row, and must not leave an object either. But when S3
stalls past the request's deadline, a write we gave up on may still be on its way: a frozen S3
keeps the request in its socket buffers and applies it when it comes back, after the client was
told "failed" (seen with SeaweedFS under SIGSTOP: every PUT we had cancelled landed on SIGCONT).
So each such key is swept in the background, never on the answer's path:

* until S3 answers: abort every multipart upload of the key (also one whose id we never got)
  and delete the object, tried again under :data:`SWEEP_RETRIES` (backoff, for up to 15
  minutes);
* then look again ``RECHECK_AFTER_S`` later, so a write S3 applied just after our delete is
  removed too;
* never while a row points at the key (the row is the truth: an upload whose commit went
  through, though its answer was lost, keeps its object).

Sweeps live in this process: a restart abandons the ones running (logged, with their keys); the
bucket's lifecycle rule still aborts incomplete multipart uploads.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import structlog

from xtyl_common.errors import XtylError
from xtyl_common.retry import RetryPolicy

log = structlog.stdlib.get_logger("xtyl.storage.orphans")

#: After a successful sweep, look again this many seconds later (one after the other).
RECHECK_AFTER_S = (1.0, 5.0, 30.0, 120.0)
#: A sweep that found S3 down for this long gives up (S3 refuses requests signed over 15
#: minutes earlier, so a write we gave up on cannot land after that).
GIVE_UP_AFTER_S = 15 * 60.0
#: One sweep while S3 or Postgres fails (or answers what we did not expect): tried again 0.5 s
#: doubling to 5 s later, until GIVE_UP_AFTER_S; the time bounds it, not the count of tries.
SWEEP_RETRIES = RetryPolicy(
    attempts=1_000,
    timeout_s=GIVE_UP_AFTER_S,
    wait_initial_s=0.5,
    wait_max_s=5.0,
    wait_jitter_s=0.25,
)
#: Most sweeps at once; more are dropped (logged) rather than held in memory.
MAX_SWEEPS = 10_000


class SweptBucket(Protocol):
    async def abort_uploads_under(self, key: str) -> int: ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None: ...


class FileRows(Protocol):
    async def key_is_recorded(self, key: str) -> bool: ...


class OrphanSweeper:
    def __init__(
        self,
        bucket: SweptBucket,
        rows: FileRows,
        *,
        attempt_timeout_s: float,
        recheck_after_s: tuple[float, ...] = RECHECK_AFTER_S,
    ) -> None:
        self._bucket = bucket
        self._rows = rows
        self._attempt_timeout_s = attempt_timeout_s
        self._recheck_after_s = recheck_after_s
        self._sweeps: dict[str, asyncio.Task[None]] = {}
        self._swept_once: set[str] = set()

    @property
    def pending(self) -> int:
        return len(self._sweeps)

    def sweep(self, key: str) -> None:
        """Remove ``key``'s object and unfinished uploads in the background (see module)."""
        if key in self._sweeps:
            return
        if len(self._sweeps) >= MAX_SWEEPS:
            log.error("orphan_sweep_dropped", key=key, pending=len(self._sweeps))
            return
        task = asyncio.create_task(self._run(key), name=f"orphan-sweep {key}")
        self._sweeps[key] = task
        task.add_done_callback(lambda _: self._forget(key))

    def _forget(self, key: str) -> None:
        self._sweeps.pop(key, None)
        self._swept_once.discard(key)

    async def close(self) -> None:
        """Stop every sweep (process shutdown); keys never swept yet are logged."""
        tasks = list(self._sweeps.values())
        unswept = [key for key in self._sweeps if key not in self._swept_once]
        if unswept:
            log.warning("orphan_sweeps_abandoned", count=len(unswept), keys=unswept[:20])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, key: str) -> None:
        rechecks = iter(self._recheck_after_s)
        while True:
            try:
                # S3 or Postgres down, or a bug: never end the sweep early
                outcome = await SWEEP_RETRIES.call(Exception, self._attempt, key)
            except Exception as exc:
                log.error("orphan_sweep_gave_up", key=key, error=type(exc).__name__)
                return
            if outcome == "recorded":
                return
            self._swept_once.add(key)
            wait = next(rechecks, None)
            if wait is None:
                return
            await asyncio.sleep(wait)  # not a retry: the next look, after a sweep that worked

    async def _attempt(self, key: str) -> str:
        try:
            async with asyncio.timeout(self._attempt_timeout_s):
                return await self._sweep_once(key)
        except Exception as exc:
            if not isinstance(exc, XtylError | TimeoutError):
                log.exception("orphan_sweep_failed", key=key)
            raise

    async def _sweep_once(self, key: str) -> str:
        if await self._rows.key_is_recorded(key):
            log.info("orphan_sweep_skipped", key=key, reason="recorded")
            return "recorded"
        aborted = await self._bucket.abort_uploads_under(key)
        found = await self._bucket.exists(key)
        if found:
            await self._bucket.delete(key)
        if aborted or found:
            log.warning("orphan_removed", key=key, object=found, uploads_aborted=aborted)
        return "clean"
