"""With tracing on, a real storage process sends a span for each of its S3 calls (the maintained
botocore instrumentation's aiobotocore instrumentor) in the trace of the request that made it,
with bounded attributes: the operation, never an object key or a file name."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from xtyl_devstack.service_process import RunningService, running_service_async

from .conftest import User

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    attributes: dict[str, Any]


@dataclass
class Collector:
    """An OTLP/HTTP receiver (``POST /v1/traces``, protobuf) keeping every span it gets."""

    spans: list[Span] = field(default_factory=list[Span])

    async def traces(self, request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        for resource_spans in export.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(
                    Span(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        name=span.name,
                        attributes={
                            a.key: getattr(a.value, a.value.WhichOneof("value") or "string_value")
                            for a in span.attributes
                        },
                    )
                    for span in scope_spans.spans
                )
        return web.Response(content_type="application/x-protobuf", body=b"")


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, str]]:
    sink = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", sink.traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield sink, f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.fixture
async def traced_storage(
    storage_env: dict[str, str], service_log_dir: Path, collector: tuple[Collector, str]
) -> AsyncIterator[RunningService]:
    env = {
        **storage_env,
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector[1],
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "EVENTS_STREAM_PREFIX": f"test:{uuid.uuid4().hex[:8]}:events",
    }
    async with running_service_async(
        "xtyl_storage", env, log_dir=service_log_dir, name="traced-storage", ready_path="/readyz"
    ) as service:
        yield service


async def test_each_s3_call_is_a_span_of_the_request_that_made_it(
    traced_storage: RunningService,
    collector: tuple[Collector, str],
    http: aiohttp.ClientSession,
    alice: User,
) -> None:
    sink, _ = collector
    name = f"secret-plan-{uuid.uuid4().hex[:6]}.txt"
    async with http.post(
        f"{traced_storage.url}/v1/files",
        params={"filename": name},
        headers={**alice.headers, "Content-Type": "text/plain"},
        data=b"some text\n",
    ) as resp:
        assert resp.status == 201, await resp.text()
        file_id = (await resp.json())["id"]

    def puts() -> list[Span]:
        return [s for s in sink.spans if s.attributes.get("rpc.method") == "PutObject"]

    def roots() -> list[Span]:  # the server span ends with the answer: exported after the S3 one
        return [s for s in sink.spans if not s.parent_span_id and s.name == "POST /v1/files"]

    async with asyncio.timeout(10):
        while not (puts() and roots()):
            await asyncio.sleep(0.05)
    [put] = puts()
    assert put.name == "S3.PutObject"
    assert put.attributes["rpc.system"] == "aws-api"
    assert put.attributes["rpc.service"] == "S3"
    # in the upload's trace, under its server span
    trace = {s.span_id: s for s in sink.spans if s.trace_id == put.trace_id}
    ancestors: list[Span] = []
    parent = trace.get(put.parent_span_id)
    while parent is not None:
        ancestors.append(parent)
        parent = trace.get(parent.parent_span_id)
    assert ancestors, "the S3 span has a parent: the request's"
    root = ancestors[-1]
    assert (root.parent_span_id, root.name) == ("", "POST /v1/files"), ancestors
    assert root.attributes["http.status_code"] == 201
    # bounded: the object key (owner, file id, name) is in no attribute
    values = " ".join(str(v) for v in put.attributes.values())
    assert name not in values
    assert file_id not in values
    assert str(alice.id) not in values
