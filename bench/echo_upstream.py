"""A minimal ASGI upstream for the gateway benchmark: the cheapest possible "service"."""

from __future__ import annotations

from typing import Any

BODY = (
    b'{"results":[{"document_id":"7d6c","chunk":3,"score":0.82,"snippet":"' + b"x" * 120 + b'"}]}'
)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    while True:  # drain the request body
        message = await receive()
        if not message.get("more_body", False):
            break
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": BODY})
