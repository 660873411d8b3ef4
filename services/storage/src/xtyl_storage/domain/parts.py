"""How an upload is cut into parts, and the limits S3 and R2 put on them. Pure arithmetic.

R2 requires every part of a multipart upload but the last to have the same size, of at least
5 MiB; S3 allows at most 10 000 parts. A body under one part size is sent as a single PUT.
"""

from __future__ import annotations

MIB = 1024 * 1024
MIN_PART_BYTES = 5 * MIB
MAX_PART_BYTES = 5 * 1024 * MIB
MAX_PARTS = 10_000
#: S3's (and R2's) largest single PUT.
MAX_SINGLE_PUT_BYTES = 5 * 1024 * MIB


def part_size_for(max_upload_bytes: int, preferred_part_bytes: int) -> int:
    """The part size for uploads of at most ``max_upload_bytes``.

    At least 5 MiB and at least ``preferred_part_bytes``, large enough that the largest allowed
    upload fits in 10 000 parts, rounded up to a whole MiB.
    """
    needed = -(-max_upload_bytes // MAX_PARTS)
    size = max(MIN_PART_BYTES, preferred_part_bytes, needed)
    size = -(-size // MIB) * MIB
    if size > MAX_PART_BYTES:
        raise ValueError(f"an upload of {max_upload_bytes} bytes cannot fit in {MAX_PARTS} parts")
    return size


def part_count(size: int, part_bytes: int) -> int:
    """How many parts an upload of ``size`` bytes takes (a single PUT counts as one)."""
    return max(1, -(-size // part_bytes))
