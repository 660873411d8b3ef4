"""The extraction child: ``python -m xtyl_rag.adapters.extraction.child``, one per pool slot.

Reads length-prefixed msgpack :class:`ChildRequest` frames on stdin, answers with
:class:`ChildReply` frames on stdout, one document at a time, until stdin closes. Before each
document it lowers its own address-space limit (``RLIMIT_AS``) to the request's cap, so a
document that needs more memory raises ``MemoryError`` here instead of growing the service.
The parent enforces the wall clock (it kills this process) and starts a fresh child after a
memory failure or a timeout.

Only this module and the parsers run here: it never receives secrets (the parent passes a
minimal environment) and nothing it prints can corrupt the protocol (stdout is moved aside).
"""

from __future__ import annotations

import gc
import os
import resource
import sys
import warnings
from collections.abc import Callable
from typing import BinaryIO

import msgspec

from xtyl_rag.adapters.extraction.contracts import (
    EXIT_MEMORY,
    FRAME_HEADER,
    ChildReply,
    ChildRequest,
    DocumentKind,
    ExtractedText,
    ExtractionLimits,
)
from xtyl_rag.adapters.extraction.errors import ExtractionFailed
from xtyl_rag.adapters.extraction.formats.docx import extract_docx
from xtyl_rag.adapters.extraction.formats.html import extract_html
from xtyl_rag.adapters.extraction.formats.pdf import extract_pdf
from xtyl_rag.adapters.extraction.formats.plain import extract_markdown, extract_plain

Parser = Callable[[bytes, str | None, ExtractionLimits], ExtractedText]
PARSERS: dict[DocumentKind, Parser] = {
    "txt": extract_plain,
    "md": extract_markdown,
    "html": extract_html,
    "pdf": extract_pdf,
    "docx": extract_docx,
}

_decoder = msgspec.msgpack.Decoder(ChildRequest)
_encoder = msgspec.msgpack.Encoder()


def run_one(request: ChildRequest) -> ChildReply:
    parser = PARSERS[request.kind]
    try:
        return ChildReply(result=parser(request.data, request.charset, request.limits))
    except ExtractionFailed as exc:
        return ChildReply(reason=exc.reason, detail=exc.detail)
    except RecursionError:
        return ChildReply(reason="corrupt_file", detail="the document nests too deeply")
    except MemoryError:
        raise
    except Exception as exc:  # a parser tripping over a malformed file
        return ChildReply(reason="corrupt_file", detail=f"unreadable file ({type(exc).__name__})")


def limit_memory(max_bytes: int) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = max_bytes if hard == resource.RLIM_INFINITY else min(max_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def read_frame(stream: BinaryIO) -> bytes | None:
    header = stream.read(FRAME_HEADER.size)
    if len(header) < FRAME_HEADER.size:
        return None
    (size,) = FRAME_HEADER.unpack(header)
    body = stream.read(size)
    return body if len(body) == size else None


def write_frame(stream: BinaryIO, body: bytes) -> None:
    stream.write(FRAME_HEADER.pack(len(body)) + body)
    stream.flush()


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    write_frame(replies, b"")  # ready
    while (frame := read_frame(requests)) is not None:
        request = _decoder.decode(frame)
        del frame
        limit_memory(request.limits.memory_bytes)
        try:
            reply = run_one(request)
        except MemoryError:
            del request
            gc.collect()
            write_frame(replies, _encoder.encode(ChildReply(reason="memory_limit")))
            raise SystemExit(EXIT_MEMORY) from None
        del request
        write_frame(replies, _encoder.encode(reply))
        gc.collect()


def main() -> None:
    warnings.simplefilter("ignore")
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints go to stderr
    serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    main()
