"""When each entry a stream consumer holds runs: at most ``max_jobs`` handlers at once, ready
entries in the order they came, retries at their time (a heap of due times).

No I/O here: :class:`~xtyl_common.events.consumer.StreamConsumer` reads, claims, heartbeats and
acknowledges the entries; :class:`~xtyl_common.events.handling.EntryHandling` runs one attempt.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from xtyl_common.events.handling import TRANSIENT, Entry, Outcome
from xtyl_common.supervise import log_failure

log = structlog.stdlib.get_logger("xtyl.events.consumer")

EntryKey = tuple[str, str]  # (stream, entry id)
RunEntry = Callable[[Entry], Coroutine[Any, Any, Outcome]]


class EntryScheduler:
    """The entries of one consumer (pending in its group under its name), each running,
    ready, waiting for its retry, or done and waiting for its acknowledgement."""

    def __init__(self, run: RunEntry, *, max_jobs: int) -> None:
        self._run = run
        self.max_jobs = max_jobs
        self.entries: dict[EntryKey, Entry] = {}
        self.running: dict[EntryKey, asyncio.Task[Outcome]] = {}
        self._ready: deque[EntryKey] = deque()
        self._retries: list[tuple[int, int, EntryKey]] = []  # heap of (due ms, seq, key)
        self._seq = itertools.count()
        #: Set whenever a handler ends (a slot may be free).
        self.slot_freed = asyncio.Event()
        self.closed = False

    @property
    def free_slots(self) -> int:
        """How many more entries to take now: ``max_jobs`` minus running and ready ones."""
        return max(0, self.max_jobs - len(self.running) - len(self._ready))

    def hold(self, entry: Entry, *, due_ms: int | None = None, now_ms: int = 0) -> None:
        """Take an entry: ready now, or due at ``due_ms`` when that is later than ``now_ms``.
        :meth:`fill` starts it."""
        self.entries[entry.key] = entry
        if due_ms is not None and due_ms > now_ms:
            self._schedule(entry, due_ms)
        else:
            self._ready.append(entry.key)

    def forget(self, key: EntryKey) -> None:
        """Drop an entry that is not running (acknowledged, or no longer pending)."""
        if key not in self.running:
            self.entries.pop(key, None)

    def fill(self) -> None:
        """Start ready entries while slots are free (none once closed)."""
        while self._ready and len(self.running) < self.max_jobs and not self.closed:
            key = self._ready.popleft()
            entry = self.entries.get(key)
            if entry is None or key in self.running:
                continue  # forgotten meanwhile (no longer pending), or already running
            task = asyncio.create_task(self._run(entry), name=f"stream-entry {entry.entry_id}")
            self.running[key] = task
            task.add_done_callback(lambda t, entry=entry: self._finished(entry, t))

    def start_due(self, now_ms: int) -> None:
        """Make the entries whose retry time has come ready, then :meth:`fill`."""
        while self._retries and self._retries[0][0] <= now_ms:
            due, _, key = heapq.heappop(self._retries)
            entry = self.entries.get(key)
            if entry is not None and entry.due_ms == due and key not in self.running:
                entry.due_ms = None
                self._ready.append(key)
        self.fill()

    def close(self) -> None:
        """Start nothing more."""
        self.closed = True
        self.slot_freed.set()

    async def drain(self, grace_s: float) -> tuple[int, int]:
        """Let running handlers finish within ``grace_s``, cancel the rest; returns (finished,
        cancelled). What was not handled is left as it is: pending, for other consumers."""
        running = list(self.running.values())
        if not running:
            return 0, 0
        done, pending = await asyncio.wait(running, timeout=grace_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return len(done), len(pending)

    def clear(self) -> None:
        self.entries.clear()
        self._ready.clear()
        self._retries.clear()
        self.closed = False

    def _schedule(self, entry: Entry, due_ms: int) -> None:
        entry.due_ms = due_ms
        heapq.heappush(self._retries, (due_ms, next(self._seq), entry.key))

    def _finished(self, entry: Entry, task: asyncio.Task[Outcome]) -> None:
        key = entry.key
        self.running.pop(key, None)
        held = self.entries.get(key) is entry
        if task.cancelled():  # stopped after the grace period: pending, for others
            self.entries.pop(key, None)
        elif (exc := task.exception()) is not None:
            # Redis failed while the outcome was being recorded (or a bug): let it go; it
            # stays pending and is taken over once idle (a delivery more).
            log_failure(
                log,
                "entry_released",
                exc,
                expected=TRANSIENT,
                stream=entry.stream,
                entry_id=entry.entry_id,
            )
            self.entries.pop(key, None)
        elif not held:
            pass  # no longer pending (acknowledged elsewhere, or Redis lost it)
        elif (outcome := task.result()) is Outcome.DEAD_LETTERED:
            self.entries.pop(key, None)
        elif outcome is Outcome.RETRY and entry.state is not None:
            self._schedule(entry, entry.state.next_attempt_ms)
        # Outcome.DONE: held until acknowledged (forget)
        self.fill()
        self.slot_freed.set()
