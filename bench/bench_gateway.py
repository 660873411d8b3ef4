"""Gateway cost: requests/s, p50/p99 and the gateway's CPU time per request.

Measured in one run, on this machine, for:
  * a proxied GET (/v1/search) through the gateway  vs  the same GET straight to the service;
  * GET /v1/me (token check, rate limit, a Postgres read) through the gateway.
The server under test is pinned to core 0 (the service when measured straight, the gateway
when measured through it; the service then moves to core 1), the load generator (wrk, falling
back to a Python client) to core 1. CPU per request comes from /proc (utime + stime of
the gateway's processes) divided by the requests served. Then an open-loop run at half the
direct rate compares p50 latency through the gateway with p50 straight to the service.

    uv run python bench/bench_gateway.py [--seconds 10] [--connections 32]
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
from pathlib import Path

import aiohttp
import asyncpg
import psutil

from xtyl_common.migrate import migrate
from xtyl_devstack.issuer import LocalIssuer
from xtyl_devstack.processes import ManagedProcess
from xtyl_devstack.service_process import RunningService, running_service_async
from xtyl_devstack.stack import Stack
from xtyl_devstack.testing import TEST_INTERNAL_SECRET

BENCH_DIR = Path(__file__).resolve().parent
SERVER_CORE, CLIENT_CORE = 0, 1


def pin(pid: int, core: int) -> None:
    proc = psutil.Process(pid)
    for p in [proc, *proc.children(recursive=True)]:
        p.cpu_affinity([core])


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


def run_wrk(url: str, token: str, seconds: int, connections: int) -> dict[str, float]:
    wrk = shutil.which("wrk")
    assert wrk is not None
    out = subprocess.run(
        [
            "taskset",
            "-c",
            str(CLIENT_CORE),
            wrk,
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-H",
            f"Authorization: Bearer {token}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_wrk(out)


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
function delay() return interval end
"""


def run_wrk_paced(
    url: str, token: str, rate: float, seconds: int, connections: int, script: Path
) -> dict[str, float]:
    """wrk with a per-connection pause so the offered load is ``rate`` requests/s."""
    wrk = shutil.which("wrk")
    assert wrk is not None
    delay_ms = max(1, round(connections / rate * 1000))
    out = subprocess.run(
        [
            "taskset",
            "-c",
            str(CLIENT_CORE),
            wrk,
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            "-H",
            f"Authorization: Bearer {token}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "XTYL_BENCH_DELAY_MS": str(delay_ms)},
    ).stdout
    result = parse_wrk(out)
    result["rate"] = rate
    return result


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
    latencies.sort()
    return {
        "rate": rate,
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
    args = parser.parse_args()
    os.sched_setaffinity(0, {CLIENT_CORE})
    tmp = Path(tempfile.mkdtemp(prefix="xtyl-bench-gw-"))
    tmp.chmod(0o755)  # the unprivileged Postgres user must be able to enter it
    try:
        with Stack(tmp / "stack", durable=False) as info:
            await migrate(info.database_url)
            async with LocalIssuer(tmp / "keys") as issuer:
                await bench(args, info.database_url, info.redis_url, issuer, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def bench(
    args: argparse.Namespace, database_url: str, redis_url: str, issuer: LocalIssuer, tmp: Path
) -> None:
    upstream = ManagedProcess(
        "echo-upstream",
        [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--host",
            "127.0.0.1",
            "--port",
            "18791",
            "--no-ws",
            "--log-level",
            "warning",
            "echo_upstream:app",
        ],
        cwd=BENCH_DIR,
        log_path=tmp / "upstream.log",
    )
    upstream.start()
    upstream_url = "http://127.0.0.1:18791"
    await asyncio.to_thread(
        upstream.wait_ready, lambda: _answers(upstream_url + "/v1/search"), timeout=30
    )
    assert upstream.pid is not None
    pin(upstream.pid, SERVER_CORE)
    env = {
        "SUPABASE_URL": issuer.supabase_url,
        "INTERNAL_JWT_SECRET": TEST_INTERNAL_SECRET,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "STORAGE_URL": upstream_url,
        "RAG_URL": upstream_url,
        "NOTIFY_URL": upstream_url,
        "RATE_LIMIT_REQUESTS": "100000000",
        "LOG_LEVEL": "warning",
    }
    user_id = uuid.uuid4()
    conn = await asyncpg.connect(database_url)
    await conn.execute(
        "insert into auth.users (id, email, raw_user_meta_data) values ($1, $2, $3::jsonb)",
        user_id,
        "bench@example.com",
        '{"full_name": "Bench"}',
    )
    await conn.close()
    token = issuer.mint(user_id=user_id, email="bench@example.com")
    try:
        async with running_service_async(
            "xtyl_gateway", env, log_dir=tmp, name="gateway"
        ) as gateway:
            pin(gateway.pid, SERVER_CORE)
            await report(args, gateway, upstream.pid, upstream_url, token)
    finally:
        upstream.stop()


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310
            return int(resp.status) == 200
    except OSError:
        return False


async def report(
    args: argparse.Namespace,
    gateway: RunningService,
    upstream_pid: int,
    upstream_url: str,
    token: str,
) -> None:
    s, c = args.seconds, args.connections
    tool = "wrk" if shutil.which("wrk") else "python aiohttp client"
    print(
        f"gateway benchmark: {s} s per run, {c} connections, load from {tool} on core "
        f"{CLIENT_CORE}, servers on core {SERVER_CORE}"
    )
    # warm-up: caches, pools, JIT-free but connection set-up
    await closed_loop(gateway.url + "/v1/search", token, 2, c, gateway.pid)
    pin(upstream_pid, SERVER_CORE)  # straight to the service: the service is under test
    direct = await closed_loop(upstream_url + "/v1/search", token, s, c, upstream_pid)
    pin(upstream_pid, CLIENT_CORE)  # through the gateway: the gateway is, the service is not
    spy = None
    if args.profile:
        worker = psutil.Process(gateway.pid).children(recursive=True)[-1].pid
        spy = subprocess.Popen(
            [
                "uvx",
                "--from",
                "py-spy",
                "py-spy",
                "record",
                "--format",
                "raw",
                "-o",
                args.profile,
                "-d",
                str(s),
                "-p",
                str(worker),
            ],
        )
    proxied = await closed_loop(gateway.url + "/v1/search", token, s, c, gateway.pid)
    if spy is not None:
        spy.wait()
    me = await closed_loop(gateway.url + "/v1/me", token, s, c, gateway.pid)
    print(row("GET /v1/search straight to service", direct))
    print(row("GET /v1/search through gateway", proxied))
    print(row("GET /v1/me (gateway, Postgres)", me))
    print(f"  proxied / direct rate: {proxied['rps'] / direct['rps']:.2f}x")
    print(f"  gateway CPU per proxied request: {proxied['cpu_us_per_req']:.0f} µs (aim: <= 400)")
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(_PACED_LUA)
    for label, rate in (
        ("half the direct rate", direct["rps"] / 2),
        ("half the gateway's own rate", proxied["rps"] / 2),
    ):
        if shutil.which("wrk"):
            pin(upstream_pid, SERVER_CORE)
            d = await asyncio.to_thread(
                run_wrk_paced, upstream_url + "/v1/search", token, rate, s, c, script
            )
            pin(upstream_pid, CLIENT_CORE)
            g = await asyncio.to_thread(
                run_wrk_paced, gateway.url + "/v1/search", token, rate, s, c, script
            )
        else:
            d = await open_loop(upstream_url + "/v1/search", token, rate, s)
            g = await open_loop(gateway.url + "/v1/search", token, rate, s)
        print(f"  paced load at {label} ({rate:.0f} req/s offered):")
        print(f"    straight p50 {d['p50_ms']:6.2f} ms  p99 {d['p99_ms']:7.2f} ms")
        print(
            f"    gateway  p50 {g['p50_ms']:6.2f} ms  p99 {g['p99_ms']:7.2f} ms"
            f"  ({g.get('rps', rate):.0f} req/s served)"
        )
        print(f"    added to p50: {g['p50_ms'] - d['p50_ms']:.2f} ms (aim: <= 2 ms)")
    script.unlink()


if __name__ == "__main__":
    asyncio.run(main())
