"""The rag-worker's own arq queue: the API hands it inline documents (file documents arrive
through the ``files`` stream). Job payloads are msgpack (``xtyl_common.events.serialization``).
"""

from __future__ import annotations

import uuid

from arq.connections import ArqRedis, RedisSettings, create_pool

from xtyl_common.events.serialization import deserialize_job, serialize_job

INDEX_DOCUMENT = "index_document"


def queue_name(stream_prefix: str) -> str:
    """``<stream prefix>:rag:jobs``: apart from other services' and other test runs' queues."""
    return f"{stream_prefix}:rag:jobs"


async def open_job_queue(redis_url: str) -> ArqRedis:
    return await create_pool(
        RedisSettings.from_dsn(redis_url),
        job_serializer=serialize_job,
        job_deserializer=deserialize_job,
    )


class JobQueue:
    def __init__(self, redis: ArqRedis, *, queue: str) -> None:
        self._redis = redis
        self.queue = queue

    async def index_document(self, document_id: uuid.UUID, *, key: str | None = None) -> None:
        """Queue indexing. Jobs with the same ``key`` (the reconciler passes the attempt) run
        once while arq remembers them; without one every call queues a job. Either way only
        one run at a time holds the document (its lease), so a duplicate costs a lookup."""
        await self._redis.enqueue_job(
            INDEX_DOCUMENT,
            str(document_id),
            _job_id=f"rag:index:{document_id}:{key or uuid.uuid4().hex}",
            _queue_name=self.queue,
        )
