"""A Brevo send endpoint that answers from a script, for timing tests: each send takes the next
scripted answer (a status with Brevo's headers, or no answer for a while), then 201; it notes
when every send arrived. The Brevo stand-in (``xtyl_devstack.brevo``) checks requests as Brevo
does, but its 429 always says ``x-sib-ratelimit-reset: 1``."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from dataclasses import dataclass, field

from aiohttp import web

from xtyl_devstack.loopback import LoopbackServer

SEND_PATH = "/v3/smtp/email"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict[str, str])
    #: Keep the request this long before answering (until the server stops, at most).
    hold_s: float = 0.0


def rate_limited(reset_s: float) -> Answer:
    """Brevo's 429, with the seconds until its rate limit resets."""
    return Answer(
        429,
        {
            "x-sib-ratelimit-limit": "10",
            "x-sib-ratelimit-remaining": "0",
            "x-sib-ratelimit-reset": f"{reset_s:g}",
        },
    )


class ScriptedBrevo(LoopbackServer):
    what = "a scripted Brevo"

    def __init__(self) -> None:
        super().__init__()
        self.script: deque[Answer] = deque()
        #: ``time.monotonic()`` of every send received, in order.
        self.arrivals: list[float] = []
        self.statuses: list[int] = []
        self._released = asyncio.Event()

    def then(self, *answers: Answer) -> None:
        self.script.extend(answers)

    def gaps(self) -> list[float]:
        """Seconds between one send and the next."""
        return [b - a for a, b in zip(self.arrivals, self.arrivals[1:], strict=False)]

    async def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(SEND_PATH, self._send)
        return app

    async def stop(self) -> None:
        self._released.set()  # let held requests end
        await super().stop()

    async def _send(self, request: web.Request) -> web.Response:
        self.arrivals.append(time.monotonic())
        await request.read()
        answer = self.script.popleft() if self.script else Answer(201)
        self.statuses.append(answer.status)
        if answer.hold_s:
            try:
                async with asyncio.timeout(answer.hold_s):
                    await self._released.wait()
            except TimeoutError:
                pass
        if answer.status == 201:
            message_id = f"<{secrets.token_hex(8)}@smtp-relay.mailin.fr>"
            return web.json_response({"messageId": message_id}, status=201)
        body = {"code": "too_many_requests", "message": "The expected rate limit is exceeded."}
        if answer.status != 429:
            body = {"code": "internal_error", "message": "scripted failure"}
        return web.json_response(body, status=answer.status, headers=answer.headers)
