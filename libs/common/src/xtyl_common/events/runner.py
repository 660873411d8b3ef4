"""arq's ``Worker`` used as the stream consumer's job runner.

The consumer owns one of these per worker process: arq's own machinery (``start_jobs`` with its
in-progress lock, ``run_job`` with tries, timeouts, ``Retry`` deferral and results) runs the jobs
the consumer enqueues, but nothing polls on a timer for new work: the consumer starts each job
right after enqueueing it, and polls only for deferred retries. See :mod:`.consumer`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import structlog
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Function, Worker
from redis.asyncio import Redis

from xtyl_common.events.handling import TRANSIENT, describe
from xtyl_common.events.serialization import deserialize_job, serialize_job

log = structlog.stdlib.get_logger("xtyl.events.consumer")


class StreamJobRunner(Worker):
    """Runs stream jobs from one private arq queue; never started with ``main()``."""

    def __init__(
        self,
        function: Function,
        *,
        redis: Redis,
        queue_name: str,
        ctx: dict[str, Any],
        max_jobs: int,
        job_timeout_s: float,
        keep_result_s: float,
        max_tries: int,
        on_job_done: Callable[[str], None],
        on_slot_freed: Callable[[], None],
    ) -> None:
        super().__init__(
            functions=[function],
            queue_name=queue_name,
            redis_pool=cast(ArqRedis, redis),
            handle_signals=False,
            max_jobs=max_jobs,
            job_timeout=job_timeout_s,
            keep_result=keep_result_s,
            max_tries=max_tries,
            job_serializer=serialize_job,
            job_deserializer=deserialize_job,
            log_results=False,
        )
        # The host worker's ctx, shared live: what its on_startup put there reaches handlers.
        self.ctx = ctx
        self._on_job_done = on_job_done
        self._on_slot_freed = on_slot_freed

    @property
    def free_slots(self) -> int:
        return max(0, self.max_jobs - self.job_counter)

    @property
    def running(self) -> int:
        return self.job_counter

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """arq's ``start_jobs`` with one pipeline per batch instead of four round trips per job.

        Same guarantees: a job starts only if this worker takes its in-progress key (``SET NX``,
        so a job runs once at a time across workers) and it is still due in the queue.
        """
        wanted = list(dict.fromkeys(j.decode() for j in job_ids if j.decode() not in self.tasks))
        batch = wanted[: self.free_slots]
        if not batch:
            return
        self.job_counter += len(batch)  # reserve the slots before awaiting
        in_progress_ms = int(self.in_progress_timeout_s * 1000)
        try:
            async with self.pool.pipeline(transaction=False) as pipe:
                for job_id in batch:
                    pipe.set(in_progress_key_prefix + job_id, b"1", px=in_progress_ms, nx=True)
                    pipe.zscore(self.queue_name, job_id)
                replies: list[Any] = await pipe.execute()
        except BaseException:
            self.job_counter -= len(batch)
            raise
        now = timestamp_ms()
        not_due: list[str] = []
        for index, job_id in enumerate(batch):
            taken, score = replies[2 * index], replies[2 * index + 1]
            if not taken or score is None or score > now or job_id in self.tasks:
                self.job_counter -= 1
                if taken:
                    not_due.append(job_id)
                continue
            await self.sem.acquire()
            task = self.loop.create_task(self.run_job(job_id, int(score)))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task
        if not_due:
            await self.pool.delete(*(in_progress_key_prefix + job_id for job_id in not_due))

    async def run_job(self, job_id: str, score: int) -> None:
        try:
            await super().run_job(job_id, score)
        except TRANSIENT as exc:
            # Redis failed before the job started or while arq recorded its end: the entry
            # stays pending and its job queued; it runs again once arq's in-progress key
            # expires (nobody awaits this task, so this is where the failure is logged).
            log.warning("stream_job_redis_failed", job_id=job_id, error=describe(exc))
        finally:
            # arq prunes finished tasks only in its poll loop, which this runner never runs.
            self.tasks.pop(job_id, None)
            self._on_job_done(job_id)

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self._on_slot_freed()
