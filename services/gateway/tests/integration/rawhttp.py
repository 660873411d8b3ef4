"""Raw bytes on a socket, as an attacker sends them, and a strict reader of what comes back.

The reader is test code: it reads one response at a time (interim ``1xx`` included) so a test
can say exactly what a client saw, in order, on one connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    header_list: list[tuple[str, str]] = field(default_factory=lambda: [])

    def json(self) -> Any:
        return json.loads(self.body)


class RawConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, base_url: str) -> RawConnection:
        parts = urlsplit(base_url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, timeout_s: float = 10.0) -> RawResponse:
        """The next response on this connection, interim or final, with its whole body."""
        async with asyncio.timeout(timeout_s):
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            header_list: list[tuple[str, str]] = []
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    header_list.append((name.strip().lower(), value.strip()))
            headers = dict(header_list)
            if 100 <= status < 200 or status in (204, 304):
                return RawResponse(status, headers, b"", header_list)
            if "content-length" in headers:
                body = await self.reader.readexactly(int(headers["content-length"]))
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                body = await self._chunked()
            else:
                body = await self.reader.read()
            return RawResponse(status, headers, body, header_list)

    async def final_response(self, timeout_s: float = 10.0) -> tuple[list[int], RawResponse]:
        """Interim statuses seen, then the final response."""
        interim: list[int] = []
        while True:
            resp = await self.response(timeout_s)
            if resp.status >= 200:
                return interim, resp
            interim.append(resp.status)

    async def _chunked(self) -> bytes:
        out = bytearray()
        while True:
            size_line = await self.reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return bytes(out)
            out += await self.reader.readexactly(size)
            await self.reader.readexactly(2)

    async def closed_by_peer(self, timeout_s: float = 10.0) -> bool:
        """Whether the peer closes the connection (EOF or reset) within ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return True

    def reset(self) -> None:
        """Abort with a TCP RST (SO_LINGER 0), as a client that crashes does."""
        sock: socket.socket | None = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def close(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            self.writer.close()
            await self.writer.wait_closed()

    def abort(self) -> None:
        """Drop the connection without flushing what is still buffered."""
        self.writer.transport.abort()


def request_head(
    method: str, target: str, headers: list[tuple[str, str]], *, host: str = "gateway"
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
