"""The trace context travels with an event: written with its outbox row (migration 0003 gave
every outbox the columns and ``add_event`` the parameters, old callers unchanged), published
by the relay in the envelope, and continued by the worker's handler span, whose own calls are
its children.

The span test runs in a process of its own: tracing is configured once per process (a global
tracer provider and instrumented drivers), which must not leak into the other tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from xtyl_common.events import (
    EventSettings,
    FileUploaded,
    FileUploadedPayload,
    OutboxRelay,
    add_event,
    decode_event,
    stream_key,
)
from xtyl_common.migrate import apply_migrations, package_migrations
from xtyl_devstack.stack import StackInfo

pytestmark = pytest.mark.integration

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACESTATE = "vendor=opaque"


@pytest.fixture
def settings(redis_prefix: str) -> EventSettings:
    return EventSettings(stream_prefix=redis_prefix + "events", redis_timeout_s=2.0)


def uploaded(**envelope: Any) -> FileUploaded:
    return FileUploaded(
        producer="test",
        payload=FileUploadedPayload(
            file_id=uuid.uuid4(),
            owner_id=uuid.uuid4(),
            key="k",
            name="n.txt",
            content_type="text/plain",
            size=1,
            sha256="0" * 64,
        ),
        **envelope,
    )


async def test_the_context_written_with_the_row_is_published_in_the_envelope(
    pool: asyncpg.Pool, redis: Redis, schema: str, settings: EventSettings
) -> None:
    traced = uploaded(traceparent=TRACEPARENT, tracestate=TRACESTATE)
    async with pool.acquire() as conn, conn.transaction():
        await add_event(conn, traced, schema=schema)
        # what a trigger does: the call of before 0003, five arguments, still works
        await conn.execute(
            "select xtyl_events.add_event($1, 'files', 'file.uploaded', $2::text::jsonb, 'sql')",
            schema,
            msgspec.json.encode(uploaded().payload).decode(),
        )
    rows = await pool.fetch(f"select traceparent, tracestate from {schema}.outbox order by seq")  # noqa: S608
    assert [tuple(r) for r in rows] == [(TRACEPARENT, TRACESTATE), (None, None)]

    relay = OutboxRelay(pool, redis, schemas=[schema], settings=settings, listen=False)
    assert await relay.publish_pending() == 2

    entries = await redis.xrange(stream_key("files", settings.stream_prefix))
    first, second = (fields[b"event"] for _, fields in entries)
    published = decode_event(first)
    assert published.id == traced.id
    assert (published.traceparent, published.tracestate) == (TRACEPARENT, TRACESTATE)
    assert b"traceparent" not in second  # an untraced row adds nothing to its envelope
    assert decode_event(second).traceparent is None


@pytest.fixture
async def fresh_database(devstack: StackInfo) -> AsyncIterator[str]:
    name = f"trace_ctx_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(devstack.dsn("postgres"))
    await admin.execute(f'create database "{name}"')
    try:
        yield devstack.dsn(name)
    finally:
        await admin.execute(f'drop database "{name}" with (force)')
        await admin.close()


async def test_the_migration_gives_an_outbox_installed_before_it_the_columns(
    fresh_database: str,
) -> None:
    common = package_migrations("common", "xtyl_common")
    before = [m for m in common if m.version < 3]
    conn: asyncpg.Connection = await asyncpg.connect(fresh_database)
    try:
        await apply_migrations(conn, before)
        await conn.execute("select xtyl_events.install_outbox('old_svc')")
        await conn.execute(
            "select xtyl_events.add_event('old_svc', 'users', 'user.created',"
            " '{\"user_id\": \"5f0c2b8e-4b8e-4d3a-9f57-000000000001\"}', 'gateway')"
        )

        applied = await apply_migrations(conn, common)

        assert [m.version for m in applied][:1] == [3]  # and the ones after it
        columns = await conn.fetch(
            "select column_name from information_schema.columns"
            " where table_schema = 'old_svc' and table_name = 'outbox'"
        )
        assert {"traceparent", "tracestate"} <= {r["column_name"] for r in columns}
        # one add_event: a call with five arguments is not ambiguous
        overloads = await conn.fetchval(
            "select count(*) from pg_catalog.pg_proc p join pg_catalog.pg_namespace n"
            " on n.oid = p.pronamespace where n.nspname = 'xtyl_events' and p.proname = 'add_event'"
        )
        assert overloads == 1
        await conn.execute(
            "select xtyl_events.add_event('old_svc', 'users', 'user.created',"
            " '{\"user_id\": \"5f0c2b8e-4b8e-4d3a-9f57-000000000002\"}', 'gateway')"
        )
        await conn.execute(
            "select xtyl_events.add_event('old_svc', 'users', 'user.created',"
            " '{\"user_id\": \"5f0c2b8e-4b8e-4d3a-9f57-000000000003\"}', 'gateway',"
            " traceparent => $1, tracestate => $2)",
            TRACEPARENT,
            TRACESTATE,
        )
        rows = await conn.fetch("select traceparent, tracestate from old_svc.outbox order by seq")
        assert [tuple(r) for r in rows] == [
            (None, None),
            (None, None),
            (TRACEPARENT, TRACESTATE),
        ]
        # an outbox installed from now on has them from the start
        await conn.execute("select xtyl_events.install_outbox('new_svc')")
        assert (
            await conn.fetchval(
                "select count(*) from information_schema.columns where table_schema = 'new_svc'"
                " and table_name = 'outbox' and column_name in ('traceparent', 'tracestate')"
            )
            == 2
        )
    finally:
        await conn.close()


#: One process, traced into memory: a request span writes the event to the outbox; the relay
#: publishes it; a consumer's handler makes a Postgres call. Prints every finished span.
TRACED_PATH = """
import asyncio, json, os, uuid
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from xtyl_common.db import DatabaseConfig, create_pool
from xtyl_common.events import (
    EventSettings, FileUploaded, FileUploadedPayload, OutboxRelay, StreamConsumer, add_event,
)
from xtyl_common.redis_client import create_redis
from xtyl_common.tracing import configure_tracing, shutdown_tracing, tracer

exporter = InMemorySpanExporter()
configure_tracing("trace-test", exporter=exporter)

async def main():
    schema = os.environ["SCHEMA"]
    settings = EventSettings(
        stream_prefix=os.environ["PREFIX"], read_block_ms=100, relay_poll_interval_s=0.05
    )
    pool = await create_pool(DatabaseConfig(url=os.environ["DATABASE_URL"], max_size=4))
    redis = create_redis(os.environ["REDIS_URL"])
    handled = asyncio.Event()

    async def handle(event, ctx):
        await pool.fetchval("select 42")  # the handler's own call
        handled.set()

    consumer = StreamConsumer(redis, group="traced", handlers={FileUploaded: handle},
                              settings=settings)
    relay = OutboxRelay(pool, redis, schemas=[schema], settings=settings, listen=False)
    await consumer.start()
    relay.start()
    with tracer("test").start_as_current_span("upload request"):
        event = FileUploaded(producer="test", payload=FileUploadedPayload(
            file_id=uuid.uuid4(), owner_id=uuid.uuid4(), key="k", name="n", content_type="t",
            size=1, sha256="0" * 64))
        async with pool.acquire() as conn, conn.transaction():
            await add_event(conn, event, schema=schema)
    await asyncio.wait_for(handled.wait(), 30)
    await asyncio.sleep(0.5)  # the relay's and the consumer's polling meanwhile
    await relay.stop()
    await consumer.stop(grace_period_s=1.0)
    await redis.aclose()
    await pool.close()

asyncio.run(main())
shutdown_tracing()
print(json.dumps([
    {
        "name": s.name,
        "trace_id": format(s.context.trace_id, "032x"),
        "span_id": format(s.context.span_id, "016x"),
        "parent_id": format(s.parent.span_id, "016x") if s.parent else None,
        "kind": s.kind.name,
        "attributes": dict(s.attributes or {}),
    }
    for s in exporter.get_finished_spans()
]))
"""


async def test_the_handler_span_continues_the_trace_written_with_the_row(
    migrated_database_url: str, redis_url: str, redis_prefix: str, schema: str
) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": migrated_database_url,
        "REDIS_URL": redis_url,
        "SCHEMA": schema,
        "PREFIX": redis_prefix + "events",
        "LOG_LEVEL": "warning",
    }
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    env.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        TRACED_PATH,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-3000:]
    spans: list[dict[str, Any]] = json.loads(out.decode().strip().splitlines()[-1])

    [request] = [s for s in spans if s["name"] == "upload request"]
    [handler] = [s for s in spans if s["name"] == "handle file.uploaded"]
    [publish] = [s for s in spans if s["name"] == "publish file.uploaded"]
    trace_id = request["trace_id"]
    # the worker's span is a child of the context current when the row was written
    assert handler["trace_id"] == trace_id
    assert handler["parent_id"] == request["span_id"]
    assert handler["kind"] == "CONSUMER"
    attributes = handler["attributes"]
    assert attributes["messaging.destination.name"] == f"{redis_prefix}events:files"
    assert attributes["messaging.consumer.group.name"] == "traced"
    assert attributes["messaging.message.id"]
    assert (attributes["xtyl.attempt"], attributes["xtyl.outcome"]) == (1, "ok")
    # the relay's publish, in the same trace
    assert (publish["trace_id"], publish["parent_id"]) == (trace_id, request["span_id"])
    assert publish["kind"] == "PRODUCER"
    assert publish["attributes"]["messaging.message.id"] == attributes["messaging.message.id"]
    # the handler's Postgres call (asyncpg's instrumentation) is its child
    children = [s for s in spans if s["parent_id"] == handler["span_id"]]
    assert any(s["attributes"].get("db.statement") == "select 42" for s in children), children
    # the backbone's own polling (reads, claims, acknowledgements, the relay's queries) made
    # no span: every span is of this one trace
    assert {s["trace_id"] for s in spans} == {trace_id}, [s["name"] for s in spans]
