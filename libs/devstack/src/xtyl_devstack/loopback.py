"""Local stand-ins for third-party APIs (the Supabase issuer, Brevo): an aiohttp app on a
loopback address, started and stopped by tests or served until SIGTERM by ``make up``."""

from __future__ import annotations

import asyncio
import ipaddress
import signal
from collections.abc import Callable
from types import TracebackType
from typing import Self

from aiohttp import web


class LoopbackServer:
    """Start/stop and the URL of an aiohttp app on loopback; ``port=0`` picks a free port.

    Subclasses build their app in :meth:`make_app` (which may do async set-up first).
    """

    #: Named in errors: e.g. "the local issuer mints tokens for anyone".
    what = "a local stand-in"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"{self.what} listens on loopback only")
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    async def make_app(self) -> web.Application:
        raise NotImplementedError

    @property
    def url(self) -> str:
        if self._runner is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        if self._runner is not None:
            return
        runner = web.AppRunner(await self.make_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._port = int(runner.addresses[0][1])
        self._runner = runner

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


async def serve_until_signal(server: LoopbackServer, banner: Callable[[], str]) -> None:
    """Run ``server`` until SIGINT or SIGTERM, printing ``banner()`` once it listens."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        print(banner(), flush=True)
        await stop.wait()
