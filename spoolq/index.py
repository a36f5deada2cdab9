"""A worker's in-memory view of pending/: what to claim next without listing the directory.

Built once from a listing, then fed names from events and periodic rescans. Entries may be
stale (another worker claimed them); a claim that loses its rename simply drops the entry.
"""

from __future__ import annotations

import heapq

from . import layout as L


class PendingIndex:
    def __init__(self) -> None:
        self._ready: list[tuple[int, int, str]] = []  # (rank, seq, name): smallest runs first
        self._later: list[tuple[int, int, int, str]] = []  # (due_ms, rank, seq, name)
        self._known: set[str] = set()
        self.dropins: set[str] = set()

    def __len__(self) -> int:
        return len(self._ready) + len(self._later)

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
            heapq.heappush(self._later, (parsed.due_ms, parsed.rank, parsed.seq, name))
        else:
            heapq.heappush(self._ready, (parsed.rank, parsed.seq, name))

    def rescan(self, names: list[str]) -> None:
        """Merge a fresh listing: new names are added, vanished ones forgotten."""
        listing = set(names)
        self._known &= listing
        self.dropins &= listing
        for name in listing - self._known:  # dropped files are never "known", so they pass here
            self.add(name)
        if len(self._ready) + len(self._later) > 2 * len(self._known) + 64:
            self._rebuild()

    def _rebuild(self) -> None:
        self._ready = [e for e in self._ready if e[2] in self._known]
        self._later = [e for e in self._later if e[3] in self._known]
        heapq.heapify(self._ready)
        heapq.heapify(self._later)

    def promote(self, now_ms: int) -> None:
        """Move scheduled entries whose time has come to the ready heap."""
        while self._later and self._later[0][0] <= now_ms:
            _, rank, seq, name = heapq.heappop(self._later)
            heapq.heappush(self._ready, (rank, seq, name))

    def pop_ready(self, now_ms: int) -> str | None:
        self.promote(now_ms)
        while self._ready:
            name = heapq.heappop(self._ready)[2]
            if name in self._known:
                self._known.discard(name)
                return name
        return None

    def next_due_ms(self) -> int | None:
        while self._later and self._later[0][3] not in self._known:
            heapq.heappop(self._later)
        return self._later[0][0] if self._later else None

    def has_ready(self, now_ms: int) -> bool:
        self.promote(now_ms)
        while self._ready and self._ready[0][2] not in self._known:
            heapq.heappop(self._ready)
        return bool(self._ready)
