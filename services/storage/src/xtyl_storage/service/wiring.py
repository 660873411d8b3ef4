"""The one place that wires storage: :func:`open_service` builds the service and its adapters,
opened by the app's lifespan and the worker's start-up."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack, asynccontextmanager

from xtyl_common.db import DatabaseConfig, create_pool
from xtyl_common.erasure import ErasureBacklog, ErasureLedger
from xtyl_common.events.relay import OutboxRelay
from xtyl_common.events.settings import EventSettings
from xtyl_common.health import HealthCheck
from xtyl_common.redis_client import check_redis, create_redis
from xtyl_storage.adapters.erasure import ErasureRepository
from xtyl_storage.adapters.event_sources import EVENT_SOURCES
from xtyl_storage.adapters.idempotency import IdempotencyKeyRepository
from xtyl_storage.adapters.orphans import OrphanSweeper
from xtyl_storage.adapters.outbox import OUTBOX_SCHEMA
from xtyl_storage.adapters.postgres import FileRepository
from xtyl_storage.adapters.s3 import (
    ObjectStore,
    check_bucket,
    open_s3_client,
)
from xtyl_storage.adapters.usage import UsageRepository
from xtyl_storage.domain.quotas import StorageLimits
from xtyl_storage.service.accounts import Accounts
from xtyl_storage.service.files import StorageService
from xtyl_storage.settings import StorageSettings

#: The schema of storage's erasure ledger (``xtyl_storage.erasures``).
SCHEMA = "xtyl_storage"


@asynccontextmanager
async def open_service(
    settings: StorageSettings,
    *,
    events: EventSettings | None = None,
    run_relay: bool = True,
) -> AsyncGenerator[StorageService]:
    """The service and its adapters, closed on exit: the Postgres pool, the S3 client, the
    orphan sweeper and the outbox relay (publishing to Redis with ``events``; it also announces
    files again after Redis lost what the outbox no longer holds). ``run_relay=False`` leaves
    outbox rows unpublished (tests that read the outbox)."""
    async with AsyncExitStack() as stack:
        pool = await create_pool(
            DatabaseConfig(url=settings.database_url, max_size=settings.db_pool_max)
        )
        stack.push_async_callback(pool.close)
        redis = create_redis(settings.redis_url)
        stack.push_async_callback(redis.aclose)
        s3 = await stack.enter_async_context(open_s3_client(settings))
        store = ObjectStore(
            s3,
            settings.r2_bucket,
            public_url=settings.r2_public_url,
            presign_ttl_s=settings.presign_ttl_s,
        )
        ledger = ErasureLedger(SCHEMA)
        backlog = ErasureBacklog(pool, ledger)
        backlog.start()
        stack.push_async_callback(backlog.stop)
        limits = StorageLimits(
            storage_bytes=settings.quota_storage_bytes, files=settings.quota_files
        )
        files = FileRepository(pool, ledger, limits)
        orphans = OrphanSweeper(
            store,
            files,
            attempt_timeout_s=settings.s3_connect_timeout_s + settings.s3_read_timeout_s,
        )
        stack.push_async_callback(orphans.close)
        readiness: dict[str, HealthCheck] = {
            "postgres": files.check,
            "redis": lambda: check_redis(redis),
            "s3": lambda: check_bucket(s3, settings.r2_bucket),
        }
        if run_relay:
            relay = OutboxRelay(
                pool,
                redis,
                schemas=[OUTBOX_SCHEMA],
                settings=events or EventSettings(),
                sources=EVENT_SOURCES,
            )
            relay.start()
            stack.push_async_callback(relay.stop)
            readiness["outbox_relay"] = relay.check_health
        usage = UsageRepository(pool, ledger, limits)
        accounts = Accounts(
            store, files, settings, usage=usage, erasures=ErasureRepository(pool, ledger)
        )
        yield StorageService(
            store,
            files,
            settings,
            keys=IdempotencyKeyRepository(pool),
            orphans=orphans,
            usage=usage,
            accounts=accounts,
            readiness=readiness,
        )
