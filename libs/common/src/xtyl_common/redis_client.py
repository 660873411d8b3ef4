"""Redis clients with timeouts on by default."""

from __future__ import annotations

from redis.asyncio import Redis


def create_redis(
    url: str, *, socket_timeout_s: float = 5.0, connect_timeout_s: float = 3.0
) -> Redis:
    """A client for ``url``; commands fail after ``socket_timeout_s`` instead of hanging."""
    client: Redis = Redis.from_url(
        url,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=connect_timeout_s,
        health_check_interval=30,
        decode_responses=False,
    )
    return client


async def check_redis(client: Redis) -> None:
    """Readiness check: PING."""
    await client.ping()  # pyright: ignore[reportUnknownMemberType]
