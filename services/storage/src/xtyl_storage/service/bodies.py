"""A request body as the service reads it: the deadline paused while the client is slow, and
an empty body refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator

from xtyl_common.errors import InvalidInput


async def excluding_client_time(
    chunks: AsyncIterable[bytes], deadline: asyncio.Timeout
) -> AsyncIterator[bytes]:
    """``chunks``, with ``deadline`` stopped while waiting for the next one: the deadline
    counts the service's own time, not a slow client's (nor a big body's)."""
    loop = asyncio.get_running_loop()
    iterator = aiter(chunks)
    while True:
        when = deadline.when()
        if when is None or deadline.expired():
            chunk = await anext(iterator, None)
        else:
            left = when - loop.time()
            deadline.reschedule(None)
            try:
                chunk = await anext(iterator, None)
            finally:
                deadline.reschedule(loop.time() + left)
        if chunk is None:
            return
        yield chunk


async def non_empty(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """``chunks``, refusing a body with no bytes at all (422 ``empty_file``)."""
    seen = False
    async for chunk in chunks:
        if chunk:
            seen = True
            yield chunk
    if not seen:
        raise InvalidInput("the file is empty", code="empty_file")
