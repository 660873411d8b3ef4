"""The gateway's HTTP/1.1 client: keep-alive reuse, streaming, early answers, errors."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from xtyl_gateway.adapters.h1client import (
    UpstreamPool,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)

pytestmark = pytest.mark.integration


class Upstream:
    def __init__(self) -> None:
        self.client_ports: list[int] = []
        self.url_port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.client_ports.append(int(peer[1]) if peer else -1)
        if request.path == "/slow":
            await asyncio.sleep(2)
        if request.path == "/limit":
            return web.json_response({"code": "too_large"}, status=413)
        if request.path == "/chunked":
            resp = web.StreamResponse()
            await resp.prepare(request)
            for i in range(5):
                await resp.write(f"part{i};".encode())
            await resp.write_eof()
            return resp
        body = await request.read()
        return web.Response(body=b"got:" + body)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    state = Upstream()
    app = web.Application(client_max_size=64 << 20)
    app.router.add_route("*", "/{tail:.*}", state.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url_port = runner.addresses[0][1]
    yield state
    await runner.cleanup()


async def fetch(pool: UpstreamPool, method: str, path: bytes, body: bytes | None = None) -> bytes:
    resp = await pool.request(method, path, [], body)
    return b"".join([chunk async for chunk in resp.iter_body()])


async def test_sequential_requests_reuse_one_connection(upstream: Upstream) -> None:
    pool = UpstreamPool("127.0.0.1", upstream.url_port, connect_timeout_s=2, read_timeout_s=5)
    for i in range(20):
        assert await fetch(pool, "POST", b"/echo", f"n{i}".encode()) == f"got:n{i}".encode()
    assert len(set(upstream.client_ports)) == 1
    await pool.close()


async def test_chunked_response_streams_whole_and_connection_is_reused(upstream: Upstream) -> None:
    pool = UpstreamPool("127.0.0.1", upstream.url_port, connect_timeout_s=2, read_timeout_s=5)
    assert await fetch(pool, "GET", b"/chunked") == b"part0;part1;part2;part3;part4;"
    assert await fetch(pool, "GET", b"/chunked") == b"part0;part1;part2;part3;part4;"
    assert len(set(upstream.client_ports)) == 1
    await pool.close()


async def test_streamed_body_and_early_answer(upstream: Upstream) -> None:
    pool = UpstreamPool("127.0.0.1", upstream.url_port, connect_timeout_s=2, read_timeout_s=5)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b"x" * 65536

    resp = await pool.request("POST", b"/echo", [], body())
    got = b"".join([chunk async for chunk in resp.iter_body()])
    assert got == b"got:" + b"x" * (64 * 65536)
    early = await pool.request("POST", b"/limit", [], body())
    assert early.status == 413
    assert b"too_large" in b"".join([chunk async for chunk in early.iter_body()])
    await pool.close()


async def test_refused_and_silent_upstreams_raise_clear_errors(upstream: Upstream) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    refused = UpstreamPool("127.0.0.1", closed_port, connect_timeout_s=1, read_timeout_s=1)
    with pytest.raises(UpstreamUnavailableError):
        await refused.request("GET", b"/", [], None)
    slow = UpstreamPool("127.0.0.1", upstream.url_port, connect_timeout_s=1, read_timeout_s=0.2)
    with pytest.raises(UpstreamTimeoutError):
        await slow.request("GET", b"/slow", [], None)
    await slow.close()
