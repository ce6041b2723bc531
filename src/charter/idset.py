"""A set of strings kept as 8-byte hashes in a sorted array: ~8 bytes per member instead of the
~100 a Python set of strings costs, so a run's done ids or seen prompts stay flat at 300k.

The hash is Python's own (64-bit, salted per process): the set lives in one process and is never
saved. A false positive needs two different strings with the same 64-bit hash (odds ~n^2 / 2^65:
about 1 in 400 million at 300k members).
"""
from __future__ import annotations

from array import array
from bisect import bisect_left

_MERGE = 1 << 14  # recent members kept in a small Python set before they join the sorted array


def key(text: str) -> int:
    return hash(text) & 0xFFFF_FFFF_FFFF_FFFF


class IdSet:
    def __init__(self) -> None:
        self._sorted = array("Q")
        self._recent: set[int] = set()
        self._removed: set[int] = set()  # rare (a done id that failed later): checked first

    def add(self, text: str) -> None:
        k = key(text)
        self._removed.discard(k)
        self._recent.add(k)
        if len(self._recent) >= _MERGE:
            self._merge()

    def discard(self, text: str) -> None:
        k = key(text)
        self._recent.discard(k)
        if self._in_sorted(k):
            self._removed.add(k)

    def __contains__(self, text: object) -> bool:
        return isinstance(text, str) and self.has_key(key(text))

    def has_key(self, k: int) -> bool:
        """Membership by `key(text)`, for callers that kept keys instead of strings."""
        return k not in self._removed and (k in self._recent or self._in_sorted(k))

    def __len__(self) -> int:
        self._merge()
        return len(self._sorted) - len(self._removed)

    def _in_sorted(self, k: int) -> bool:
        i = bisect_left(self._sorted, k)
        return i < len(self._sorted) and self._sorted[i] == k

    def _merge(self) -> None:
        if self._recent:
            import numpy as np  # a sorted merge without a Python int per member

            new = np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent))
            merged = np.union1d(np.frombuffer(self._sorted, dtype=np.uint64), new)
            self._sorted = array("Q", merged.tobytes())
            self._recent.clear()
