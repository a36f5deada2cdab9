"""A worker's in-memory view of pending/: what to claim next without listing the directory.

Built from a listing, then fed names from events and periodic rescans. Entries may be stale
(another worker claimed them): a claim that loses its rename simply drops the entry, so a
rescan only ever adds names. A ready entry is just its name: canonical names sort as strings
in run order (rank, then sequence), which keeps 100,000 entries in a few tens of MB.
"""

from __future__ import annotations

import heapq
from typing import Iterable

from . import layout as L


class PendingIndex:
    def __init__(self) -> None:
        self._ready: list[str] = []  # canonical names: the smallest runs first
        self._later: list[tuple[int, str]] = []  # (due_ms, name)
        self._known: set[str] = set()  # every name in either heap
        self.dropins: set[str] = set()

    def __len__(self) -> int:
        return len(self._known)

    def add(self, name: str) -> None:
        if name in self._known:
            return
        parsed = L.parse_pending(name)
        if parsed is None:
            if L.is_dropin(name):
                self.dropins.add(name)
            return
        self._known.add(name)
        if parsed.due_ms:
            heapq.heappush(self._later, (parsed.due_ms, name))
        else:
            heapq.heappush(self._ready, name)

    def rescan(self, names: Iterable[str]) -> None:
        """Merge a fresh listing: only names not seen yet are parsed (the set difference runs in C)."""
        for name in set(names).difference(self._known):
            if not name.startswith("."):
                self.add(name)

    def promote(self, now_ms: int) -> None:
        """Move scheduled entries whose time has come to the ready heap."""
        while self._later and self._later[0][0] <= now_ms:
            heapq.heappush(self._ready, heapq.heappop(self._later)[1])

    def pop_ready(self, now_ms: int) -> str | None:
        self.promote(now_ms)
        if not self._ready:
            return None
        name = heapq.heappop(self._ready)
        self._known.discard(name)
        return name

    def next_due_ms(self) -> int | None:
        return self._later[0][0] if self._later else None

    def has_ready(self, now_ms: int) -> bool:
        self.promote(now_ms)
        return bool(self._ready)
