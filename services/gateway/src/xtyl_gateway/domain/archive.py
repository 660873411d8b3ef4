"""A zip archive written as a stream: every call hands back the bytes it produced, so the
archive goes to the client while it is made and never sits whole in memory. Pure logic on
:mod:`zipfile` (the standard library's writer, on a sink that cannot seek: entries then carry
data descriptors, and Zip64 records where sizes need them).

    archive = ZipStream()
    yield archive.add("profile.json", body)
    entry = archive.open("files/abc/report.pdf", size=n)
    for chunk in chunks: yield entry.write(chunk)
    yield entry.close()
    yield archive.close()

Entry names are made safe here (:func:`safe_name`): no absolute paths, no ``..``, no
backslashes or control characters, so unpacking the archive never writes outside its folder.
"""

from __future__ import annotations

import re
import unicodedata
import zipfile
from datetime import datetime
from typing import IO, cast

#: Entries stored as they are (files' bytes: mostly compressed formats already, and 1 GB of
#: deflate would cost the gateway seconds of CPU) or deflated (JSON, text).
STORED = zipfile.ZIP_STORED
DEFLATED = zipfile.ZIP_DEFLATED

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]+")
MAX_NAME_CHARS = 120
#: Zip timestamps start in 1980.
_EPOCH = (1980, 1, 1, 0, 0, 0)


def safe_name(name: str, fallback: str = "file") -> str:
    """One path segment from a user's file name: printable, no separators, not ``.``/``..``,
    at most :data:`MAX_NAME_CHARS` characters (the extension kept)."""
    cleaned = _UNSAFE.sub("_", unicodedata.normalize("NFC", name)).strip(" .")
    if len(cleaned) > MAX_NAME_CHARS:
        stem, dot, ext = cleaned.rpartition(".")
        if dot and 0 < len(ext) <= 10:
            cleaned = stem[: MAX_NAME_CHARS - len(ext) - 1] + "." + ext
        else:
            cleaned = cleaned[:MAX_NAME_CHARS]
    return cleaned or fallback


def _date_time(when: datetime | None) -> tuple[int, int, int, int, int, int]:
    if when is None or when.year < 1980:
        return _EPOCH
    return (when.year, when.month, when.day, when.hour, when.minute, when.second)


class _Sink:
    """Where zipfile writes: collects the bytes until they are taken. Not seekable."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer += data
        return len(data)

    def flush(self) -> None:
        return None

    def take(self) -> bytes:
        out = bytes(self._buffer)
        self._buffer.clear()
        return out


class Entry:
    """One entry being written: :meth:`write` chunks, then :meth:`close`."""

    def __init__(self, sink: _Sink, handle: IO[bytes]) -> None:
        self._sink = sink
        self._handle = handle

    def write(self, chunk: bytes) -> bytes:
        self._handle.write(chunk)
        return self._sink.take()

    def close(self) -> bytes:
        self._handle.close()
        return self._sink.take()


class ZipStream:
    def __init__(self) -> None:
        self._sink = _Sink()
        self._zip = zipfile.ZipFile(
            cast(IO[bytes], self._sink), "w", compression=DEFLATED, allowZip64=True
        )
        self._names: set[str] = set()

    def _info(self, name: str, when: datetime | None, compression: int) -> zipfile.ZipInfo:
        if name in self._names:
            raise ValueError(f"duplicate entry {name!r}")
        self._names.add(name)
        info = zipfile.ZipInfo(name, date_time=_date_time(when))
        info.compress_type = compression
        info.external_attr = 0o644 << 16
        return info

    def add(
        self,
        name: str,
        data: bytes,
        *,
        when: datetime | None = None,
        compression: int = DEFLATED,
    ) -> bytes:
        """A whole entry at once (small ones: JSON, text)."""
        entry = self.open(name, when=when, compression=compression, size=len(data))
        return entry.write(data) + entry.close()

    def open(
        self,
        name: str,
        *,
        size: int | None = None,
        when: datetime | None = None,
        compression: int = STORED,
    ) -> Entry:
        """An entry to stream into. Zip64 records only where a size needs them: ``size`` when
        known; an entry of unknown size (the NDJSON ones) must stay under 2 GiB (zipfile
        refuses past it). Readers that stream without the central directory (Java's
        ``ZipInputStream``) trip on Zip64 descriptors they did not need."""
        info = self._info(name, when, compression)
        if size is not None:
            info.file_size = size
        force_zip64 = size is not None and size >= zipfile.ZIP64_LIMIT
        handle = self._zip.open(info, "w", force_zip64=force_zip64)
        return Entry(self._sink, handle)

    def close(self) -> bytes:
        """The central directory: the archive's last bytes."""
        self._zip.close()
        return self._sink.take()
