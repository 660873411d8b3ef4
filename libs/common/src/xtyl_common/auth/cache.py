"""A bounded LRU of verified tokens, so a busy user costs one signature check per token.

Entries are keyed by the SHA-256 of the token (the token itself is never a key) and stop
being served at their deadline, which the verifier sets no later than the token's expiry.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class VerifiedTokenCache(Generic[T]):
    def __init__(self, max_entries: int) -> None:
        self._max_entries = max_entries
        self._entries: OrderedDict[bytes, tuple[float, T]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: bytes, *, now: float) -> T | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        deadline, value = entry
        if now >= deadline:
            del self._entries[digest]
            return None
        self._entries.move_to_end(digest)
        return value

    def put(self, digest: bytes, value: T, *, deadline: float) -> None:
        if self._max_entries <= 0:
            return
        self._entries[digest] = (deadline, value)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
