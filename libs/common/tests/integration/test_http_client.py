"""The internal client: request ids forwarded, retries only where they are safe."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from xtyl_common.context import set_request_id
from xtyl_common.errors import TimedOut, Unavailable
from xtyl_common.http import HttpConfig, InternalClient, create_session
from xtyl_common.retry import RetryPolicy


class Upstream:
    """A real HTTP server on 127.0.0.1 that records what it receives."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []
        self.fail_first = 0
        self.delay_s = 0.0

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append((request.method, request.headers.get("X-Request-ID")))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.Response(status=503)
        return web.json_response({"ok": True})


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    state = Upstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield state, f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def client() -> AsyncIterator[InternalClient]:
    session = create_session()
    yield InternalClient(
        session,
        HttpConfig(
            retry=RetryPolicy(attempts=3, timeout_s=None, wait_initial_s=0.001, wait_jitter_s=0.001)
        ),
    )
    await session.close()


async def test_request_id_is_forwarded(
    upstream: tuple[Upstream, str], client: InternalClient
) -> None:
    state, url = upstream
    set_request_id("req-abc")
    try:
        resp = await client.request("GET", url + "/x")
    finally:
        set_request_id(None)
    assert resp.status == 200
    assert resp.json() == {"ok": True}
    assert state.calls == [("GET", "req-abc")]


async def test_idempotent_request_is_retried_on_503(
    upstream: tuple[Upstream, str], client: InternalClient
) -> None:
    state, url = upstream
    state.fail_first = 2
    resp = await client.request("GET", url + "/x")
    assert resp.status == 200
    assert len(state.calls) == 3


async def test_post_is_never_retried(
    upstream: tuple[Upstream, str], client: InternalClient
) -> None:
    state, url = upstream
    state.fail_first = 1
    resp = await client.request("POST", url + "/x", json={"a": 1})
    assert resp.status == 503
    assert len(state.calls) == 1


async def test_slow_upstream_is_timed_out(
    upstream: tuple[Upstream, str], client: InternalClient
) -> None:
    state, url = upstream
    state.delay_s = 1.0
    with pytest.raises(TimedOut):
        await client.request("POST", url + "/x", timeout_s=0.1)


async def test_refused_connection_is_unavailable(client: InternalClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(Unavailable):
        await client.request("GET", f"http://127.0.0.1:{port}/x")
