"""Gateway cost: requests/s, p50/p99 and the gateway's CPU time per request.

Measured in one run, on this machine, for:
  * a proxied GET through the gateway  vs  the same GET straight to the service;
  * GET /v1/me (token check, rate limit, a Postgres read) through the gateway.
The proxied GET is measured against two upstreams: a bare ASGI app (the cheapest conceivable
service, behind /v1/search: the gateway's own cost, undiluted) and the real storage service
(GET /v1/files: its token check and a Postgres query, behind /v1/files).
The server under test is pinned to core 0 (the service when measured straight, the gateway
when measured through it; the service then moves to core 1), the load generator (wrk, falling
back to a Python client) to core 1. CPU per request comes from /proc (utime + stime of
the gateway's processes) divided by the requests served. Then paced runs (each connection
waits an exponentially distributed pause between requests, so arrivals are close to Poisson
rather than synchronised bursts) at half the direct rate compare p50 latency through the
gateway with p50 straight to the service.

Last, what metrics and tracing cost per proxied request (bare app behind): three gateways side
by side, measured in turn for ``--rounds`` rounds, medians printed with the difference to the
first: metrics off (bench/gateway_without_metrics.py: prometheus-client's metric classes
replaced by no-ops before the gateway is imported; production has no such switch), as is
(metrics on, tracing off), and metrics with tracing on (OTLP/HTTP to a sink in this process
that answers 200); then the metric calls of one proxied request timed alone, in process.

    uv run python bench/bench_gateway.py [--seconds 10] [--connections 32]
    uv run python bench/bench_gateway.py --observability-only [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import NamedTuple

import aiohttp
import asyncpg
import psutil
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from xtyl_common import metrics
from xtyl_common.auth.metrics import TokenMetrics
from xtyl_common.migrate import migrate
from xtyl_devstack.issuer import LocalIssuer
from xtyl_devstack.processes import ManagedProcess
from xtyl_devstack.s3 import ensure_bucket, s3_client
from xtyl_devstack.service_process import RunningService, answers, running_service_async
from xtyl_devstack.stack import Stack, StackInfo
from xtyl_devstack.testing import TEST_INTERNAL_SECRET
from xtyl_gateway.adapters.metrics import RATE_LIMIT, UPSTREAM_DURATION

BENCH_DIR = Path(__file__).resolve().parent
SERVER_CORE, CLIENT_CORE = 0, 1


def pin(pid: int, core: int | None) -> None:
    """Pin a process and its children to one core (``None``: let them run on any)."""
    proc = psutil.Process(pid)
    cores = [core] if core is not None else list(range(psutil.cpu_count() or 1))
    for p in [proc, *proc.children(recursive=True)]:
        p.cpu_affinity(cores)


def backing_servers(info: StackInfo) -> list[int]:
    """The stack's Postgres (postmaster: new backends inherit its affinity) and Redis."""
    redis_port = info.redis_url.rsplit(":", 1)[1].split("/")[0]
    found: list[int] = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        postgres = proc.info["name"] == "postgres" and info.data_dir in cmdline
        redis = "valkey" in (proc.info["name"] or "") and f":{redis_port}" in cmdline
        if postgres or redis:
            found.append(proc.pid)
    return found


def cpu_seconds(pid: int) -> float:
    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        times = p.cpu_times()
        total += times.user + times.system
    return total


def parse_wrk(output: str) -> dict[str, float]:
    def ms(value: str, unit: str) -> float:
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    pct = dict(re.findall(r"\s+(\d+)%\s+([\d.]+(?:us|ms|s))", output))
    p50 = re.match(r"([\d.]+)(us|ms|s)", pct["50"])
    p99 = re.match(r"([\d.]+)(us|ms|s)", pct["99"])
    assert p50 is not None
    assert p99 is not None
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "rps": rps,
        "requests": requests,
        "p50_ms": ms(*p50.groups()),
        "p99_ms": ms(*p99.groups()),
        "errors": float(non2xx.group(1)) if non2xx else 0.0,
    }


def run_wrk(
    url: str,
    token: str,
    seconds: int,
    connections: int,
    *,
    rate: float | None = None,
    script: Path | None = None,
) -> dict[str, float]:
    """wrk on the client core; with ``rate`` and the pacing ``script``, each connection pauses
    between requests so the offered load is ``rate`` requests/s."""
    wrk = shutil.which("wrk")
    assert wrk is not None
    env = dict(os.environ)
    paced: list[str] = []
    if rate is not None and script is not None:
        env["XTYL_BENCH_DELAY_MS"] = str(max(1.0, connections / rate * 1000))
        paced = ["-s", str(script)]
    out = subprocess.run(
        [
            *("taskset", "-c", str(CLIENT_CORE), wrk, "-t1"),
            *(f"-c{connections}", f"-d{seconds}s", "--latency", *paced),
            *("-H", f"Authorization: Bearer {token}", url),
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    result = parse_wrk(out)
    if rate is not None:
        result["rate"] = rate
    return result


async def run_python_closed(
    url: str, token: str, seconds: int, connections: int
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                async with http.get(url, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "requests": len(latencies),
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "errors": float(errors),
    }


async def closed_loop(
    url: str, token: str, seconds: int, connections: int, server_pid: int
) -> dict[str, float]:
    before = cpu_seconds(server_pid)
    if shutil.which("wrk"):
        result = await asyncio.to_thread(run_wrk, url, token, seconds, connections)
    else:
        result = await run_python_closed(url, token, seconds, connections)
    result["cpu_us_per_req"] = (cpu_seconds(server_pid) - before) / result["requests"] * 1e6
    return result


_PACED_LUA = """
local interval = tonumber(os.getenv("XTYL_BENCH_DELAY_MS"))
math.randomseed(os.time())
-- exponential pauses: the connections drift apart instead of firing in lock-step bursts
function delay() return math.floor(-math.log(1 - math.random()) * interval + 0.5) end
"""


async def open_loop(url: str, token: str, rate: float, seconds: float) -> dict[str, float]:
    """Requests sent at a fixed rate (not waiting for answers): latency at that load."""
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {token}"}
    interval = 1.0 / rate
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as http:

        async def one() -> None:
            start = time.perf_counter()
            async with http.get(url, headers=headers) as resp:
                await resp.read()
            latencies.append(time.perf_counter() - start)

        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter()
        n = 0
        while time.perf_counter() - start < seconds:
            tasks.append(asyncio.create_task(one()))
            n += 1
            delay = start + n * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "rate": rate,
        "rps": len(latencies) / elapsed,
        "requests": len(latencies),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


def row(name: str, r: dict[str, float]) -> str:
    cpu = f"{r['cpu_us_per_req']:8.0f}" if "cpu_us_per_req" in r else "       -"
    return (
        f"  {name:<34} {r['rps']:9.0f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms"
        f"  cpu {cpu} µs/req  errors {r['errors']:.0f}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--profile", help="py-spy the gateway during the proxied run, to FILE")
    parser.add_argument(
        "--observability-only",
        action="store_true",
        help="only what metrics and tracing cost per proxied request",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of that comparison")
    args = parser.parse_args()
    os.sched_setaffinity(0, {CLIENT_CORE})
    tmp = Path(tempfile.mkdtemp(prefix="xtyl-bench-gw-"))
    tmp.chmod(0o755)  # the unprivileged Postgres user must be able to enter it
    try:
        with Stack(tmp / "stack", durable=False) as info:
            await migrate(info.database_url)
            ensure_bucket(
                s3_client(info.s3_endpoint, info.s3_access_key, info.s3_secret_key), "bench"
            )
            async with LocalIssuer(tmp / "keys") as issuer:
                await bench(args, info, issuer, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _upstream(name: str, target: str, port: int, tmp: Path) -> ManagedProcess:
    return ManagedProcess(
        name,
        [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-ws",
            "--log-level",
            "warning",
            target,
        ],
        cwd=BENCH_DIR,
        log_path=tmp / f"{name}.log",
    )


async def bench(args: argparse.Namespace, info: StackInfo, issuer: LocalIssuer, tmp: Path) -> None:
    echo = _upstream("echo-upstream", "echo_upstream:app", 18791, tmp)
    echo_url = "http://127.0.0.1:18791"
    echo.start()
    await asyncio.to_thread(echo.wait_ready, lambda: answers(echo_url + "/v1/search"), timeout=30)
    assert echo.pid is not None
    common = {
        "SUPABASE_URL": issuer.supabase_url,
        "INTERNAL_JWT_SECRET": TEST_INTERNAL_SECRET,
        "DATABASE_URL": info.database_url,
        "REDIS_URL": info.redis_url,
        "LOG_LEVEL": "warning",
    }
    storage_env = {
        **common,
        "R2_ENDPOINT": info.s3_endpoint,
        "R2_ACCESS_KEY": info.s3_access_key,
        "R2_SECRET_KEY": info.s3_secret_key,
        "R2_BUCKET": "bench",
    }
    user_id = uuid.uuid4()
    conn = await asyncpg.connect(info.database_url)
    await conn.execute(
        "insert into auth.users (id, email, raw_user_meta_data) values ($1, $2, $3::jsonb)",
        user_id,
        "bench@example.com",
        '{"full_name": "Bench"}',
    )
    await conn.close()
    token = issuer.mint(user_id=user_id, email="bench@example.com")
    gateway_env = {
        **common,
        "RAG_URL": echo_url,  # /v1/search -> the bare ASGI app
        "NOTIFY_URL": echo_url,
        "RATE_LIMIT_REQUESTS": "100000000",
        "RATE_LIMIT_ROUTES": "",
        # one user drives every connection here: lift the per-user in-flight cap
        "USER_MAX_IN_FLIGHT": "1000",
        "UPSTREAM_POOL_SIZE": "1024",
    }
    try:
        if not args.observability_only:
            async with (
                running_service_async(
                    "xtyl_storage", storage_env, log_dir=tmp, name="storage"
                ) as storage,
                running_service_async(
                    "xtyl_gateway",
                    # /v1/files -> the storage service
                    {**gateway_env, "STORAGE_URL": storage.url},
                    log_dir=tmp,
                    name="gateway",
                ) as gateway,
            ):
                pin(gateway.pid, SERVER_CORE)
                upstreams = {
                    "bare": Upstream(echo.pid, echo_url + "/v1/search", gateway.url + "/v1/search"),
                    "storage": Upstream(
                        storage.pid, storage.url + "/v1/files", gateway.url + "/v1/files"
                    ),
                }
                await report(args, gateway, upstreams, token, backing_servers(info))
        pin(echo.pid, CLIENT_CORE)  # through the gateway: the gateway is under test
        await observability_cost(args, {**gateway_env, "STORAGE_URL": echo_url}, token, tmp)
    finally:
        echo.stop()


class Upstream(NamedTuple):
    pid: int
    direct_url: str
    gateway_url: str


PACED_CONNECTIONS = 128  # long pauses per connection: the response time barely slows pacing


async def report(
    args: argparse.Namespace,
    gateway: RunningService,
    upstreams: dict[str, Upstream],
    token: str,
    backing: list[int],
) -> None:
    s, c = args.seconds, args.connections
    tool = "wrk" if shutil.which("wrk") else "python aiohttp client"
    print(
        f"gateway benchmark: {s} s per run, {c} connections, load from {tool} on core "
        f"{CLIENT_CORE}, servers on core {SERVER_CORE}"
    )
    bare, storage = upstreams["bare"], upstreams["storage"]
    # warm-up: caches, pools, connection set-up
    for upstream in (bare, storage):
        await closed_loop(upstream.direct_url, token, 2, c, upstream.pid)
        await closed_loop(upstream.gateway_url, token, 2, c, gateway.pid)
    closed: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
    for name, upstream in upstreams.items():
        pin(upstream.pid, SERVER_CORE)  # straight to the service: the service is under test
        direct = await closed_loop(upstream.direct_url, token, s, c, upstream.pid)
        pin(upstream.pid, CLIENT_CORE)  # through the gateway: the gateway is, the service not
        spy = _start_profiler(args.profile, gateway.pid, s) if name == "bare" else None
        proxied = await closed_loop(upstream.gateway_url, token, s, c, gateway.pid)
        if spy is not None:
            spy.wait()
        closed[name] = (direct, proxied)
    me = await closed_loop(gateway.url + "/v1/me", token, s, c, gateway.pid)
    print("closed loop (as fast as the server answers):")
    print(row("GET straight to a bare ASGI app", closed["bare"][0]))
    print(row("  the same through the gateway", closed["bare"][1]))
    print(row("GET /v1/files straight to storage", closed["storage"][0]))
    print(row("  the same through the gateway", closed["storage"][1]))
    print(row("GET /v1/me (gateway, Postgres)", me))
    cpu = closed["bare"][1]["cpu_us_per_req"]
    print(f"  gateway CPU per proxied request: {cpu:.0f} µs (aim: <= 400)")
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(_PACED_LUA)
    print(f"paced load ({PACED_CONNECTIONS} connections, exponential pauses):")
    rate = closed["bare"][1]["rps"] / 2
    d, g = await _paced_pair(bare, gateway.pid, token, rate, s, script, direct_core=SERVER_CORE)
    _print_paced(f"half the gateway's own rate, bare app behind ({rate:.0f} req/s offered)", d, g)
    # The storage service with its Postgres and Redis and the load generator all on core 1 in
    # both runs, the gateway alone on core 0: the gateway is the only difference between them.
    pin(storage.pid, CLIENT_CORE)
    assert len(backing) == 2, f"expected the stack's Postgres and Redis, found {backing}"
    for pid in backing:
        pin(pid, CLIENT_CORE)
    shared = await closed_loop(storage.direct_url, token, s, c, storage.pid)
    print(
        f"  storage's direct rate sharing core {CLIENT_CORE} with Postgres, Redis and the load"
        f" generator: {shared['rps']:.0f} req/s (on a core of its own: "
        f"{closed['storage'][0]['rps']:.0f} req/s)"
    )
    for label, rate in (
        ("half that shared-core direct rate", shared["rps"] / 2),
        ("half its direct rate on a core of its own", closed["storage"][0]["rps"] / 2),
    ):
        d, g = await _paced_pair(
            storage, gateway.pid, token, rate, s, script, direct_core=CLIENT_CORE
        )
        _print_paced(f"GET /v1/files at {label} ({rate:.0f} req/s offered)", d, g)
    for pid in backing:
        pin(pid, None)
    script.unlink()


def _print_paced(label: str, d: dict[str, float], g: dict[str, float]) -> None:
    print(f"  {label}:")
    print(
        f"    straight p50 {d['p50_ms']:6.2f} ms  p99 {d['p99_ms']:7.2f} ms"
        f"  ({d['rps']:.0f} req/s served, service CPU {d['cpu_us_per_req']:.0f} µs/req)"
    )
    print(
        f"    gateway  p50 {g['p50_ms']:6.2f} ms  p99 {g['p99_ms']:7.2f} ms"
        f"  ({g['rps']:.0f} req/s served, gateway CPU {g['cpu_us_per_req']:.0f} µs/req)"
    )
    print(f"    added to p50: {g['p50_ms'] - d['p50_ms']:.2f} ms (aim: <= 2 ms)")


async def _paced_pair(
    upstream: Upstream,
    gateway_pid: int,
    token: str,
    rate: float,
    seconds: int,
    script: Path,
    *,
    direct_core: int,
) -> tuple[dict[str, float], dict[str, float]]:
    if not shutil.which("wrk"):
        before = cpu_seconds(upstream.pid)
        d = await open_loop(upstream.direct_url, token, rate, seconds)
        d["cpu_us_per_req"] = (cpu_seconds(upstream.pid) - before) / d["requests"] * 1e6
        before = cpu_seconds(gateway_pid)
        g = await open_loop(upstream.gateway_url, token, rate, seconds)
        g["cpu_us_per_req"] = (cpu_seconds(gateway_pid) - before) / g["requests"] * 1e6
        return d, g
    pin(upstream.pid, direct_core)
    before = cpu_seconds(upstream.pid)
    d = await asyncio.to_thread(
        run_wrk,
        upstream.direct_url,
        token,
        seconds,
        PACED_CONNECTIONS,
        rate=rate,
        script=script,
    )
    d["cpu_us_per_req"] = (cpu_seconds(upstream.pid) - before) / d["requests"] * 1e6
    pin(upstream.pid, CLIENT_CORE)
    before = cpu_seconds(gateway_pid)
    g = await asyncio.to_thread(
        run_wrk,
        upstream.gateway_url,
        token,
        seconds,
        PACED_CONNECTIONS,
        rate=rate,
        script=script,
    )
    g["cpu_us_per_req"] = (cpu_seconds(gateway_pid) - before) / g["requests"] * 1e6
    return d, g


@asynccontextmanager
async def otlp_sink() -> AsyncGenerator[tuple[str, list[int]]]:
    """An OTLP/HTTP receiver on this process's core: answers 200 to every ``POST /v1/traces``
    and counts the spans (the list's one item); its base URL."""
    spans = [0]

    async def traces(request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        spans[0] += sum(
            len(scope.spans) for resource in export.resource_spans for scope in resource.scope_spans
        )
        return web.Response(content_type="application/x-protobuf", body=b"")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", spans
    finally:
        await runner.cleanup()


def observation_calls_alone(iterations: int = 200_000) -> tuple[float, float]:
    """µs of the metric calls one proxied request makes, with the real objects, in this
    process: the shared middleware's (in-flight gauge, request counter and histogram) and the
    gateway's own (token cache, rate limiter's decision, upstream histogram)."""
    tokens = TokenMetrics()
    allowed = RATE_LIMIT.labels("allowed")
    in_flight = metrics.HTTP_IN_FLIGHT.labels("bench")
    durations = {("rag", "200"): UPSTREAM_DURATION.labels("rag", "200")}  # as UpstreamClient

    def middleware() -> None:
        in_flight.inc()
        in_flight.dec()
        method, route = metrics.http_labels("GET", "/v1/search")
        labels = ("bench", route, method, "200")
        metrics.HTTP_REQUESTS.labels(*labels).inc()
        metrics.HTTP_DURATION.labels(*labels).observe(0.002)

    def gateway() -> None:
        tokens.cache_lookup(hit=True)
        allowed.inc()
        durations["rag", "200"].observe(0.001)

    def timed(call: Callable[[], None]) -> float:
        started = time.perf_counter()
        for _ in range(iterations):
            call()
        return (time.perf_counter() - started) / iterations * 1e6

    def nothing() -> None:
        pass

    def median_of(call: Callable[[], None]) -> float:
        return statistics.median(timed(call) - timed(nothing) for _ in range(5))

    return median_of(middleware), median_of(gateway)


async def observability_cost(
    args: argparse.Namespace, gateway_env: dict[str, str], token: str, tmp: Path
) -> None:
    s, c = args.seconds, args.connections
    async with otlp_sink() as (sink_url, spans), AsyncExitStack() as stack:
        variants = {
            "metrics off (bench build)": (
                "gateway_without_metrics",
                {"PYTHONPATH": str(BENCH_DIR)},
            ),
            "as is: metrics on": ("xtyl_gateway", {}),
            "metrics and tracing on": (
                "xtyl_gateway",
                {"OTEL_EXPORTER_OTLP_ENDPOINT": sink_url, "OTEL_SERVICE_NAME": "gateway-bench"},
            ),
        }
        gateways: dict[str, RunningService] = {}
        for n, (name, (module, extra)) in enumerate(variants.items()):
            gateways[name] = await stack.enter_async_context(
                running_service_async(
                    module, {**gateway_env, **extra}, log_dir=tmp, name=f"gateway-obs{n}"
                )
            )
            pin(gateways[name].pid, SERVER_CORE)
        for gateway in gateways.values():  # warm-up
            await closed_loop(gateway.url + "/v1/search", token, 2, c, gateway.pid)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in gateways}
        traced_requests = 0.0
        spans_before = spans[0]
        for _ in range(args.rounds):
            for name, gateway in gateways.items():
                result = await closed_loop(gateway.url + "/v1/search", token, s, c, gateway.pid)
                runs[name].append(result)
                if name == "metrics and tracing on":
                    traced_requests += result["requests"]
        await asyncio.sleep(6)  # the last batch of spans (the SDK exports every 5 s)
        exported = (spans[0] - spans_before) / traced_requests
    print(
        f"metrics and tracing per proxied request (bare app behind /v1/search; median of"
        f" {args.rounds} runs of {s} s each, the three gateways in turn, each on core"
        f" {SERVER_CORE}):"
    )
    print(f"  {'':<28} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU µs/req':>11}  vs metrics off")
    base = statistics.median(r["cpu_us_per_req"] for r in next(iter(runs.values())))
    for name, results in runs.items():
        rps, p50, p99, cpu = (
            statistics.median(r[key] for r in results)
            for key in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req")
        )
        versus = f"{cpu - base:+6.1f} µs ({cpu / base:.3f}x)"
        each = " / ".join(f"{r['cpu_us_per_req']:.0f}" for r in results)
        print(
            f"  {name:<28} {rps:8.0f} {p50:7.2f} {p99:7.2f} {cpu:11.1f}  {versus}"
            f"  (CPU of each run: {each})"
        )
    print(f"  tracing on: {exported:.2f} spans exported per request (OTLP/HTTP, SDK defaults)")
    shared, own = observation_calls_alone()
    print(
        f"  the metric calls of one proxied request, timed alone in process: {shared + own:.2f}"
        f" µs ({shared:.2f} the shared HTTP middleware's, {own:.2f} the gateway's own)"
    )


def _start_profiler(
    path: str | None, gateway_pid: int, seconds: int
) -> subprocess.Popen[bytes] | None:
    if not path:
        return None
    worker = psutil.Process(gateway_pid).children(recursive=True)[-1].pid
    return subprocess.Popen(
        [
            *("uvx", "--from", "py-spy", "py-spy", "record", "--format", "raw"),
            *("-o", path, "-d", str(seconds), "-p", str(worker)),
        ],
    )


if __name__ == "__main__":
    asyncio.run(main())
