"""What an operator sees of the whole stack, with every process real: the gateway, storage, rag
and notify services and the rag and notify workers over the embedded Postgres, Redis and S3.

A user signs up (``user.created`` -> a welcome email), makes 1,000 requests to distinct ids,
uploads a file through the gateway and lets the rag worker index it, then searches. Then:

* every process's ``/metrics`` (the services' HTTP port, the workers' ``HEALTH_PORT``) parses
  with prometheus-client's parser, the counters, histograms and lag gauges moved as that work
  implies, the label sets stayed bounded, and every metric of the catalogue (docs/metrics.md,
  which the alerts and the dashboard are checked against) is served by some process;
* with an OTLP/HTTP collector stand-in (below), the upload-to-ready path is one trace: the
  gateway's request, storage's, the event through the outbox and the stream, the rag worker's
  handling and its Postgres calls.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from xtyl_devstack.brevo import LocalBrevo
from xtyl_devstack.issuer import LocalIssuer
from xtyl_devstack.metric_catalogue import catalogue
from xtyl_devstack.ports import free_port
from xtyl_devstack.processes import ManagedProcess
from xtyl_devstack.scrape import sample, scrape, series
from xtyl_devstack.service_process import (
    RunningService,
    running_service_async,
    start_worker_process,
)
from xtyl_devstack.stack import StackInfo
from xtyl_devstack.users import ensure_user

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DISTINCT_IDS = 1000
TEXT = (
    b"Observability notes. The relay publishes the outbox to the stream; the worker embeds the"
    b" chunks and the document becomes ready. Operators read the lag of each consumer group."
)


# --------------------------------------------------------------------------- OTLP stand-in
@dataclass(frozen=True)
class SpanRecord:
    service: str
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    attributes: dict[str, Any]


@dataclass
class OtlpCollector:
    """An OTLP/HTTP receiver (``POST /v1/traces``, protobuf) that keeps every span it gets."""

    spans: list[SpanRecord] = field(default_factory=list[SpanRecord])
    requests: int = 0

    async def traces(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf", request.content_type
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        self.requests += 1
        for resource_spans in export.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        SpanRecord(
                            service=resource.get("service.name", "?"),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            name=span.name,
                            kind=span.kind,
                            attributes={a.key: _attribute_value(a.value) for a in span.attributes},
                        )
                    )
        return web.Response(status=200, content_type="application/x-protobuf", body=b"")

    def trace(self, trace_id: str) -> list[SpanRecord]:
        return [s for s in self.spans if s.trace_id == trace_id]


def _attribute_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture
async def collector() -> AsyncIterator[tuple[OtlpCollector, str]]:
    sink = OtlpCollector()
    app = web.Application()
    app.router.add_post("/v1/traces", sink.traces)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield sink, f"http://127.0.0.1:{port}"
    await runner.cleanup()


# --------------------------------------------------------------------------- the stack
@dataclass
class Stack:
    gateway: RunningService
    storage: RunningService
    rag: RunningService
    notify: RunningService
    workers: dict[str, tuple[ManagedProcess, str]]  # name -> (process, health URL)
    brevo: LocalBrevo

    def base_urls(self) -> dict[str, str]:
        """Where each process serves ``/metrics``: the services' port, the workers' health."""
        urls = {
            name: service.url
            for name, service in (
                ("gateway", self.gateway),
                ("storage", self.storage),
                ("rag", self.rag),
                ("notify", self.notify),
            )
        }
        urls |= {name: url for name, (_, url) in self.workers.items()}
        return urls


@pytest.fixture
async def stack(
    migrated_database_url: str,
    redis_url: str,
    devstack: StackInfo,
    s3_bucket: str,
    auth_env: dict[str, str],
    service_log_dir: Path,
    collector: tuple[OtlpCollector, str],
    tmp_path: Path,
) -> AsyncIterator[Stack]:
    _, otlp_url = collector
    storage_port = free_port()
    common = {
        **auth_env,
        "DATABASE_URL": migrated_database_url,
        "REDIS_URL": redis_url,
        "EVENTS_STREAM_PREFIX": f"test:observability:{secrets.token_hex(4)}:events",
        "EVENTS_READ_BLOCK_MS": "200",
        "EVENTS_RELAY_POLL_INTERVAL_S": "0.2",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    storage_env = common | {
        "R2_ENDPOINT": devstack.s3_endpoint,
        "R2_ACCESS_KEY": devstack.s3_access_key,
        "R2_SECRET_KEY": devstack.s3_secret_key,
        "R2_BUCKET": s3_bucket,
    }
    rag_env = common | {
        "STORAGE_URL": f"http://127.0.0.1:{storage_port}",
        "EMBEDDING_THREADS": "1",
    }
    async with AsyncExitStack() as exits:
        brevo = await exits.enter_async_context(LocalBrevo(tmp_path, api_key="observability"))
        notify_env = common | {
            "BREVO_API_URL": brevo.url,
            "BREVO_API_KEY": "observability",
            "EMAIL_HASH_PEPPER": "test-email-hash-pepper-0123456789abcdef",
            "PUBLIC_API_URL": "http://127.0.0.1:9",
            "APP_URL": "http://localhost:3000",
        }
        storage, notify = await asyncio.gather(
            exits.enter_async_context(
                running_service_async(
                    "xtyl_storage",
                    storage_env,
                    log_dir=service_log_dir,
                    name="storage-observed",
                    port=storage_port,
                    ready_path="/readyz",
                )
            ),
            exits.enter_async_context(
                running_service_async(
                    "xtyl_notify",
                    notify_env,
                    log_dir=service_log_dir,
                    name="notify-observed",
                    ready_path="/readyz",
                )
            ),
        )
        rag = await exits.enter_async_context(
            running_service_async(
                "xtyl_rag",
                rag_env,
                log_dir=service_log_dir,
                name="rag-observed",
                ready_path="/readyz",
                timeout_s=60.0,
            )
        )
        workers: dict[str, tuple[ManagedProcess, str]] = {}
        for name, module, env, ready in (
            ("rag-worker", "xtyl_rag.worker", rag_env, b"rag_worker_started"),
            ("notify-worker", "xtyl_notify.worker", notify_env, b"consumer_started"),
        ):
            port = free_port()
            process = await asyncio.to_thread(
                start_worker_process,
                module,
                env | {"HEALTH_PORT": str(port)},
                log_dir=service_log_dir,
                name=f"{name}-observed",
                ready_log=ready,
            )
            exits.callback(process.stop)
            workers[name] = (process, f"http://127.0.0.1:{port}")
        gateway = await exits.enter_async_context(
            running_service_async(
                "xtyl_gateway",
                common
                | {
                    "STORAGE_URL": storage.url,
                    "RAG_URL": rag.url,
                    "NOTIFY_URL": notify.url,
                    "RATE_LIMIT_REQUESTS": "100000",
                },
                log_dir=service_log_dir,
                name="gateway-observed",
                ready_path="/readyz",
            )
        )
        yield Stack(gateway, storage, rag, notify, workers, brevo)


# --------------------------------------------------------------------------- scraping
async def wait_until_ready(
    http: aiohttp.ClientSession, gateway: str, headers: dict[str, str], file_id: str
) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while True:
        async with http.get(f"{gateway}/v1/documents?limit=100", headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            items = {d["file_id"]: d for d in (await resp.json())["items"]}
        document = items.get(file_id)
        if document is not None and document["status"] in ("ready", "failed"):
            return document
        assert time.monotonic() < deadline, f"not indexed in 90 s: {document}"
        await asyncio.sleep(0.2)


@pytest.mark.timeout(300)
async def test_every_process_shows_the_work_it_did_and_one_trace_follows_an_upload(
    stack: Stack,
    collector: tuple[OtlpCollector, str],
    http: aiohttp.ClientSession,
    issuer: LocalIssuer,
    migrated_database_url: str,
) -> None:
    sink, _ = collector
    email = f"observed-{secrets.token_hex(4)}@example.com"
    user_id, _ = await ensure_user(migrated_database_url, email, "Observed User")
    headers = {"Authorization": f"Bearer {issuer.mint(user_id=user_id, email=email)}"}
    gateway = stack.gateway.url

    # the work: a welcome email, 1,000 distinct ids, an upload indexed, a search
    await stack.brevo.wait_for_emails(email, 1, timeout_s=30)
    async with http.get(f"{gateway}/v1/me", headers=headers) as resp:
        assert resp.status == 200
    for _ in range(DISTINCT_IDS):
        async with http.get(f"{gateway}/v1/files/{uuid.uuid4()}", headers=headers) as resp:
            assert resp.status == 404
    async with http.post(
        f"{gateway}/v1/files?filename=observed.txt",
        data=TEXT,
        headers={**headers, "Content-Type": "text/plain"},
    ) as resp:
        assert resp.status == 201, await resp.text()
        file_id: str = (await resp.json())["id"]
    document = await wait_until_ready(http, gateway, headers, file_id)
    assert document["status"] == "ready", document
    async with http.post(
        f"{gateway}/v1/search", json={"query": "consumer group lag"}, headers=headers
    ) as resp:
        assert resp.status == 200, await resp.text()
    async with http.get(f"{gateway}/v1/files/{file_id}/content", headers=headers) as resp:
        assert await resp.read() == TEXT

    # what the operator reads
    await asyncio.sleep(1.5)  # the workers' lag gauges refresh every few seconds
    scrapes = {name: await scrape(http, url) for name, url in stack.base_urls().items()}
    gw, storage, rag_worker = scrapes["gateway"], scrapes["storage"], scrapes["rag-worker"]

    # HTTP: counted by route template, the 1,000 ids in one series
    requests = "xtyl_http_requests_total"
    assert sample(gw, requests, service="gateway", route="/v1/files", status="404") >= DISTINCT_IDS
    assert sample(storage, requests, service="storage", status="201") >= 1
    for name, scraped in scrapes.items():
        routes = {labels.get("route", "") for labels in series(scraped, requests)}
        assert len(routes) < 30, (name, routes)
        assert not any(len(part) == 36 for r in routes for part in r.split("/")), (name, routes)
    assert sample(gw, "xtyl_http_request_duration_seconds_count", service="gateway") >= 1000
    # the gateway's own view of its upstreams and limits
    upstream = "xtyl_gateway_upstream_request_duration_seconds_count"
    assert sample(gw, upstream, upstream="storage") >= DISTINCT_IDS
    assert sample(gw, "xtyl_gateway_rate_limit_decisions_total", decision="allowed") >= DISTINCT_IDS
    assert sample(gw, "xtyl_gateway_token_verifications_total", outcome="valid") >= 1
    # storage: the bytes in and out, the event published
    assert sample(storage, "xtyl_storage_bytes_received_total") >= len(TEXT)
    assert sample(storage, "xtyl_storage_bytes_sent_total") >= len(TEXT)
    assert sample(storage, "xtyl_relay_published_total") >= 1
    assert sample(gw, "xtyl_relay_published_total") >= 1  # user.created
    # the rag worker: the entry handled, each ingest stage timed, the chunks embedded
    assert sample(rag_worker, "xtyl_stream_job_attempts_total", group="rag", outcome="ok") >= 1
    for stage in ("download", "extract", "chunk", "embed", "store"):
        count = sample(rag_worker, "xtyl_rag_ingest_stage_duration_seconds_count", stage=stage)
        assert count >= 1, stage
    assert sample(rag_worker, "xtyl_rag_chunks_embedded_total") >= document["chunk_count"] >= 1
    assert list(series(rag_worker, "xtyl_stream_lag")), "the rag worker reports its groups' lag"
    assert sample(rag_worker, "xtyl_stream_lag", group="rag") == 0
    assert sample(scrapes["rag"], "xtyl_rag_search_duration_seconds_count") >= 1
    # notify: the welcome email
    notify_worker = scrapes["notify-worker"]
    assert sample(notify_worker, "xtyl_notify_emails_total", outcome="sent") >= 1
    assert sample(notify_worker, "xtyl_worker_healthy", worker="notify-worker") == 1
    assert sample(rag_worker, "xtyl_worker_healthy", worker="rag-worker") == 1
    # each service measured its erasure ledger at start: nobody deleted, nothing overdue
    for process, schema in (
        ("storage", "xtyl_storage"),
        ("rag-worker", "xtyl_rag"),
        ("notify-worker", "xtyl_notify"),
    ):
        for gauge in ("xtyl_erasures_incomplete", "xtyl_erasure_oldest_incomplete_age_seconds"):
            assert series(scrapes[process], gauge) == [{"schema": schema}], (process, gauge)
            assert sample(scrapes[process], gauge) == 0, (process, gauge)

    # every metric of the catalogue (what the alerts and the dashboard may name) is served
    served = {
        family.name for text in scrapes.values() for family in text_string_to_metric_families(text)
    }
    missing = sorted(
        name
        for name in catalogue()
        if name not in served and name.removesuffix("_total") not in served
    )
    assert missing == [], f"named in docs/metrics.md but served by no process: {missing}"

    # one trace: gateway -> storage -> outbox -> stream -> rag worker -> Postgres
    deadline = time.monotonic() + 20
    while True:
        handled = [s for s in sink.spans if s.service == "rag-worker" and "file.uploaded" in s.name]
        if handled or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)
    assert handled, f"no span of the rag worker handling file.uploaded in {len(sink.spans)} spans"
    trace = sink.trace(handled[0].trace_id)
    by_service: dict[str, list[SpanRecord]] = defaultdict(list)
    for span in trace:
        by_service[span.service].append(span)
    assert {"gateway", "storage", "rag-worker"} <= set(by_service), sorted(by_service)
    # the relay's publish of the outbox row, in storage's process, joins the same trace
    assert any(s.name == "publish file.uploaded" for s in by_service["storage"]), [
        s.name for s in by_service["storage"]
    ]
    assert any(s.attributes.get("db.system") == "postgresql" for s in by_service["rag-worker"]), [
        s.name for s in by_service["rag-worker"]
    ]
    ids = {s.span_id for s in trace}
    roots = [s for s in trace if not s.parent_span_id or s.parent_span_id not in ids]
    assert len(roots) == 1, [(s.service, s.name) for s in roots]
    assert roots[0].service == "gateway", roots[0]
