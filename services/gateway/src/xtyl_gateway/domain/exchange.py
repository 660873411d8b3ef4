"""What one proxied exchange is made of, whatever carries it. Types only, no I/O.

``routes/`` reads a public request off the transport into an :class:`IncomingRequest` and
hands the service a :class:`ClientConnection`: where the request body comes from and where the
answer goes. The upstream adapter reads the body and writes the service's answer through
these interfaces, so it never sees the server's protocol (ASGI), and routes never see the
upstream client (aiohttp).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Protocol

import msgspec

from xtyl_common.errors import XtylError


class IncomingRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A public request as the gateway received it."""

    method: str
    #: the path as the client sent it (percent-encoded, never decoded): routing, the
    #: suspect-path check and the upstream request all use these very bytes
    path: str
    #: the query string as sent, without the ``?``
    query: str
    #: the request headers, lower-cased names, in the order sent (ASGI's: a list, read as
    #: often as needed)
    headers: Iterable[tuple[bytes, bytes]]
    #: the first ``Authorization`` header, if any
    authorization: str | None
    #: the client's address as the server saw it
    client_host: str | None
    #: ``http`` or ``https``, as the server saw it
    scheme: str


class RequestBody(Protocol):
    """The client's request body as it arrives.

    Every read may fail with an :class:`~xtyl_common.errors.XtylError` (the client went
    silent, went away, or broke the chunked framing); the failure is also kept in
    :attr:`error`, because the upstream client may read the body in a task of its own and
    report only its own error.
    """

    @property
    def complete(self) -> bool:
        """The client has sent the whole body."""
        ...

    @property
    def error(self) -> XtylError | None:
        """Why reading the body failed, if it did."""
        ...

    async def read_small(self, limit: int) -> bytes | None:
        """The whole body when it ends within ``limit`` bytes, else ``None`` (stream it)."""
        ...

    def stream(self) -> AsyncIterator[bytes]:
        """The body (what :meth:`read_small` already took first), chunk by chunk."""
        ...

    async def drain(self, *, max_bytes: int, timeout_s: float) -> None:
        """Read and drop what is left of the body, within bounds; never raises."""
        ...


class ClientConnection(Protocol):
    """The client's side of one exchange: its request body, and the answer it gets."""

    def body(self, *, chunked: bool, idle_timeout_s: float) -> RequestBody:
        """The request body, framed as the headers said (``chunked``), failing with 408
        ``request_timeout`` after ``idle_timeout_s`` without a byte."""
        ...

    async def start_response(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """The status and headers (lower-cased names); once sent, they cannot be taken back."""
        ...

    async def send_body(self, chunk: bytes) -> None:
        """One more chunk of the response body."""
        ...

    async def end_response(self) -> None:
        """The response body is complete."""
        ...
