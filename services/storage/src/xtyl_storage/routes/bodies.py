"""Request bodies read straight from the ASGI stream, never held whole in memory.

Litestar's own form parsing buffers the body, so uploads read ``receive`` themselves:
:func:`body_chunks` yields the raw body and stops it at a byte limit whatever
``Content-Length`` claimed; :class:`StreamingForm` parses ``multipart/form-data`` incrementally
with the sans-io ``multipart.PushMultipartParser`` and hands out the one file part as a stream.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import multipart

from xtyl_common.errors import ClientDisconnected, ClientError, InvalidInput
from xtyl_storage.domain.files import too_large

#: The form field that carries the file.
FILE_FIELD = "file"
#: Bytes a multipart body may carry beyond the file itself (boundaries and part headers).
MULTIPART_OVERHEAD_BYTES = 64 * 1024
_MAX_PART_HEADER_BYTES = 8 * 1024


def malformed(detail: str) -> ClientError:
    return ClientError(detail, code="malformed_multipart")


class RequestBody:
    """The ASGI request body, read once, in chunks, with a byte limit."""

    def __init__(self, receive: Any) -> None:
        self._receive = receive
        self.ended = False
        self.received = 0

    async def chunks(self, *, max_bytes: int, file_limit: int) -> AsyncIterator[bytes]:
        """The body as it arrives; 413 once more than ``max_bytes`` arrived, whatever
        ``Content-Length`` claimed."""
        while not self.ended:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.ended = True
                raise ClientDisconnected("the client went away during the upload")
            chunk: bytes = message.get("body", b"")
            self.ended = not message.get("more_body", False)
            if chunk:
                self.received += len(chunk)
                if self.received > max_bytes:
                    raise too_large(file_limit)
                yield chunk

    async def drain(self, *, max_bytes: int, timeout_s: float) -> None:
        """Read and drop what the client is still sending (at most ``max_bytes``, for at most
        ``timeout_s``), so it gets to read our error answer instead of a reset connection
        (what nginx calls a lingering close). Past either bound the connection is cut."""
        dropped = 0
        try:
            async with asyncio.timeout(timeout_s):
                while not self.ended and dropped <= max_bytes:
                    message = await self._receive()
                    if message["type"] == "http.disconnect":
                        break
                    dropped += len(message.get("body", b""))
                    self.ended = not message.get("more_body", False)
        except TimeoutError:
            return


def multipart_boundary(content_type: str) -> str | None:
    """The boundary of a ``multipart/form-data`` content type, or None for other types."""
    media_type, options = multipart.parse_options_header(content_type)
    if media_type != "multipart/form-data":
        return None
    boundary = options.get("boundary")
    if not boundary:
        raise malformed("multipart/form-data without a boundary")
    return str(boundary)


class FilePart:
    """The file part of a form: its declared name and type, and its bytes as a stream."""

    def __init__(self, filename: str | None, content_type: str | None, form: StreamingForm):
        self.filename = filename
        self.content_type = content_type
        self._form = form

    def chunks(self) -> AsyncIterator[bytes]:
        return self._form.file_chunks()


class StreamingForm:
    """A ``multipart/form-data`` body with exactly one part: the file, named ``file``.

    Any other field is refused (422): in particular ``owner_id`` or ``key``, which only the
    server decides. The stream ends only once the whole form was parsed, so a body that is
    truncated or has a second part fails the upload instead of storing it.
    """

    def __init__(self, source: AsyncIterator[bytes], boundary: str) -> None:
        self._source = source
        try:
            self._parser = multipart.PushMultipartParser(
                boundary,
                max_header_size=_MAX_PART_HEADER_BYTES,
                max_header_count=8,
                max_segment_count=4,
            )
        except multipart.MultipartError as exc:
            raise malformed(f"malformed multipart body: {exc}") from None
        self._pending: deque[Any] = deque()
        self._ended = False

    async def _next_event(self) -> Any:
        """The next parser event: a segment, payload bytes, None (end of a segment); raises
        :class:`StopAsyncIteration` when the form is complete."""
        while not self._pending:
            if self._ended or self._parser.closed:
                raise StopAsyncIteration
            chunk = await anext(self._source, b"")
            try:
                if chunk:
                    self._pending.extend(self._parser.parse(chunk))
                else:
                    self._ended = True
                    self._parser.close()
            except multipart.MultipartError as exc:
                raise malformed(f"malformed multipart body: {exc}") from None
        return self._pending.popleft()

    async def file(self) -> FilePart:
        """Read up to the start of the file part; 422 for other fields or no file."""
        try:
            event = await self._next_event()
        except StopAsyncIteration:
            raise InvalidInput(
                f"the form has no {FILE_FIELD!r} part", code="missing_file"
            ) from None
        if not isinstance(event, multipart.MultipartSegment):
            raise malformed("malformed multipart body")
        if event.name != FILE_FIELD:
            raise InvalidInput(
                f"unexpected form field {event.name!r}: send only the {FILE_FIELD!r} part",
                code="unexpected_field",
                extra={"field": event.name},
            )
        return FilePart(event.filename, event.content_type, self)

    async def file_chunks(self) -> AsyncIterator[bytes]:
        while True:
            try:
                event = await self._next_event()
            except StopAsyncIteration:
                raise malformed("the multipart body ended inside the file part") from None
            if event is None:
                break
            if isinstance(event, bytes | bytearray):
                yield bytes(event)
        # The file part is over: the form must end here, with nothing after it.
        try:
            event = await self._next_event()
        except StopAsyncIteration:
            return
        if isinstance(event, multipart.MultipartSegment):
            raise InvalidInput(
                f"unexpected form field {event.name!r} after the file",
                code="unexpected_field",
                extra={"field": event.name},
            )
        raise malformed("malformed multipart body")
