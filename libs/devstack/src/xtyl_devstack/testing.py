"""Constants of the test "Supabase project", and helpers shared by fixtures and tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

#: The legacy HS256 secret of the test project and the internal service-token secret.
TEST_JWT_SECRET = "test-supabase-jwt-secret-" + "x" * 24
TEST_INTERNAL_SECRET = "test-internal-secret-" + "y" * 24


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 15.0, interval_s: float = 0.02
) -> None:
    """Poll ``check`` until it is true: for state in another server or process, which has
    nothing to await. ``TimeoutError`` after ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while not await check():  # noqa: ASYNC110 - the state lives in another server
            await asyncio.sleep(interval_s)
