"""The rag-worker's own arq queue: the API hands it inline documents (file documents arrive
through the ``files`` stream). Job payloads are msgpack (``xtyl_common.events.serialization``).

The client connects on first use (``xtyl-rag-reembed`` opens the service without Redis).
"""

from __future__ import annotations

import uuid

from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool

from xtyl_common.events.serialization import deserialize_job, serialize_job

INDEX_DOCUMENT = "index_document"
#: Redis command and connect timeouts of the queue's client.
SOCKET_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 3.0


def queue_name(stream_prefix: str) -> str:
    """``<stream prefix>:rag:jobs``: apart from other services' and other test runs' queues."""
    return f"{stream_prefix}:rag:jobs"


def open_job_queue(redis_url: str, *, queue: str) -> JobQueue:
    """The queue on ``redis_url``; nothing connects until the first job or ping."""
    pool = ConnectionPool.from_url(
        redis_url,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        health_check_interval=30,
    )
    redis = ArqRedis(pool, job_serializer=serialize_job, job_deserializer=deserialize_job)
    return JobQueue(redis, queue=queue)


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

    async def ping(self) -> None:
        """Readiness: Redis answers."""
        await self._redis.ping()  # pyright: ignore[reportUnknownMemberType]

    async def aclose(self) -> None:
        await self._redis.aclose(close_connection_pool=True)
