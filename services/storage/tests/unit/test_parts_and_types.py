from __future__ import annotations

import pytest

from xtyl_common.errors import InvalidInput
from xtyl_storage.domain.media_types import is_allowed, normalize_media_type, parse_patterns
from xtyl_storage.domain.parts import MIB, MIN_PART_BYTES, part_count, part_size_for


def test_part_size_is_at_least_5_mib_and_fits_10000_parts() -> None:
    assert part_size_for(100 * MIB, 1 * MIB) == MIN_PART_BYTES
    assert part_size_for(100 * MIB, 8 * MIB) == 8 * MIB
    big = 100 * 1024 * MIB  # 100 GiB
    size = part_size_for(big, 8 * MIB)
    assert size % MIB == 0
    assert part_count(big, size) <= 10_000


def test_part_count() -> None:
    assert part_count(0, 5 * MIB) == 1
    assert part_count(5 * MIB, 5 * MIB) == 1
    assert part_count(5 * MIB + 1, 5 * MIB) == 2


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Text/Plain; charset=UTF-8", "text/plain"),
        (None, "application/octet-stream"),
        ("", "application/octet-stream"),
        (
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
    ],
)
def test_normalize_media_type(raw: str | None, expected: str) -> None:
    assert normalize_media_type(raw) == expected


@pytest.mark.parametrize(
    "raw", ["text", "text/", "/plain", "text/plain/x", "te xt/plain", "a\r\n/b"]
)
def test_bad_media_types_are_refused(raw: str) -> None:
    with pytest.raises(InvalidInput):
        normalize_media_type(raw)


def test_patterns() -> None:
    patterns = parse_patterns("text/*, application/pdf")
    assert is_allowed("text/markdown", patterns)
    assert is_allowed("application/pdf", patterns)
    assert not is_allowed("application/pdfx", patterns)
    assert not is_allowed("image/png", patterns)
    assert is_allowed("image/png", parse_patterns("*/*"))
    for bad in ("", "text", "*/plain", "text/*/x"):
        with pytest.raises(ValueError, match=r"."):
            parse_patterns(bad)
