"""A set of strings kept as 8-byte hashes: ~8 bytes per member instead of the ~100 a Python set of
strings costs, so a run's done ids or seen prompts stay flat at 300k.

Members live in 1024 small sorted arrays picked by the hash's top bits (an insert moves a few KB
at most, a lookup is one bisect). The hash is Python's own (64-bit, salted per process): the set
lives in one process and is never saved. A false positive needs two different strings with the
same 64-bit hash (odds ~n^2 / 2^65: about 1 in 400 million at 300k members).
"""
from __future__ import annotations

from array import array
from bisect import bisect_left

_SHIFT = 54  # 64 - 10 bits: 1024 buckets


def key(text: str) -> int:
    return hash(text) & 0xFFFF_FFFF_FFFF_FFFF


class IdSet:
    def __init__(self) -> None:
        self._buckets = [array("Q") for _ in range(1 << (64 - _SHIFT))]
        self._n = 0

    def add(self, text: str) -> bool:
        """Add `text`; True if it was not a member (one lookup where `in` then `add` take two)."""
        k = hash(text) & 0xFFFF_FFFF_FFFF_FFFF  # key(), inlined: this runs once per prompt and per record
        bucket = self._buckets[k >> _SHIFT]
        i = bisect_left(bucket, k)
        if i == len(bucket) or bucket[i] != k:
            bucket.insert(i, k)
            self._n += 1
            return True
        return False

    def discard(self, text: str) -> None:
        k = key(text)
        bucket = self._buckets[k >> _SHIFT]
        i = bisect_left(bucket, k)
        if i < len(bucket) and bucket[i] == k:
            del bucket[i]
            self._n -= 1

    def __contains__(self, text: object) -> bool:
        return isinstance(text, str) and self.has_key(key(text))

    def has_key(self, k: int) -> bool:
        """Membership by `key(text)`, for callers that kept keys instead of strings."""
        bucket = self._buckets[k >> _SHIFT]
        i = bisect_left(bucket, k)
        return i < len(bucket) and bucket[i] == k

    def __len__(self) -> int:
        return self._n
