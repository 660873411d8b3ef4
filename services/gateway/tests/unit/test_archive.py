"""The export's zip writer: a streamed archive any unzip reads, with names that cannot escape
the folder it is unpacked in, in memory no larger than one chunk."""

from __future__ import annotations

import io
import os
import zipfile
from datetime import UTC, datetime

import pytest

from xtyl_gateway.domain.archive import MAX_NAME_CHARS, ZipStream, safe_name


def test_a_streamed_archive_reads_back_whole() -> None:
    archive = ZipStream()
    out = bytearray(archive.add("profile.json", b'{"id": 1}'))
    big = os.urandom(3 * 1024 * 1024 + 17)
    entry = archive.open("files/a/big.bin", size=len(big), when=datetime(2026, 1, 2, tzinfo=UTC))
    largest = 0
    for start in range(0, len(big), 65536):
        produced = entry.write(big[start : start + 65536])
        largest = max(largest, len(produced))
        out += produced
    out += entry.close()
    out += archive.close()
    read = zipfile.ZipFile(io.BytesIO(bytes(out)))
    assert read.testzip() is None
    assert read.read("profile.json") == b'{"id": 1}'
    assert read.read("files/a/big.bin") == big
    assert read.getinfo("files/a/big.bin").date_time[:3] == (2026, 1, 2)
    # each write hands back what it made: nothing piles up inside the writer
    assert largest <= 65536 + 1024


def test_an_entry_name_cannot_be_written_twice() -> None:
    archive = ZipStream()
    archive.add("a.txt", b"x")
    with pytest.raises(ValueError, match="duplicate"):
        archive.add("a.txt", b"y")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "_.._etc_passwd"),
        ("..", "file"),
        ("a\\b:c*?.txt", "a_b_c_.txt"),
        ("line\nbreak\x00.txt", "line_break_.txt"),
        ("", "file"),
    ],
)
def test_names_are_one_safe_segment(name: str, expected: str) -> None:
    assert safe_name(name) == expected
    assert "/" not in safe_name(name)
    assert safe_name(name) not in {".", ".."}


def test_a_long_name_keeps_its_extension() -> None:
    cut = safe_name("x" * 500 + ".docx")
    assert len(cut) == MAX_NAME_CHARS
    assert cut.endswith(".docx")


def test_an_entry_of_unknown_size_has_no_zip64_records() -> None:
    """Readers that stream (no central directory) refuse Zip64 descriptors of small entries."""
    archive = ZipStream()
    entry = archive.open("files.ndjson")
    out = entry.write(b'{"record": "file"}\n') + entry.close() + archive.close()
    info = zipfile.ZipFile(io.BytesIO(out)).getinfo("files.ndjson")
    assert info.extra == b""  # no Zip64 extra field
    assert info.file_size == 19
