"""A worker's in-memory view of pending/: what to claim next without listing the directory.

Built from a listing, then fed names from events and periodic rescans. Entries may be stale
(another worker claimed them): a claim that loses its rename simply drops the entry, so a
rescan only ever adds names. A ready entry is just its name: canonical names sort as strings
in run order (rank, then sequence), which keeps 100,000 entries in a few tens of MB.

Dropped files (not canonical names) wait beside the heaps with the time to look at them next:
at once, or later for a file whose writer may still be at it.
"""

from __future__ import annotations

import heapq
from typing import Iterable

from . import layout


class PendingIndex:
    def __init__(self) -> None:
        self._ready: list[str] = []  # canonical names: the smallest runs first
        self._later: list[tuple[int, str]] = []  # (due_ms, name)
        self._known: set[str] = set()  # every name in either heap
        self._dropins: dict[str, float] = {}  # dropped name -> when to look at it (0: now)

    def __len__(self) -> int:
        return len(self._known)

    def add(self, name: str, *, changed: bool = False) -> None:
        """Note a name in pending/; `changed` (an event): a dropped file waited on is looked at now."""
        if name in self._known:
            return
        parsed = layout.parse_pending(name)
        if parsed is None:
            if layout.is_dropin(name):
                self._dropins[name] = 0.0 if changed else self._dropins.get(name, 0.0)
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

    # ---- dropped files -------------------------------------------------------------------

    def has_dropins(self) -> bool:
        return bool(self._dropins)

    def dropins_due(self, now: float) -> list[str]:
        """Dropped files to look at now, longest-waiting first."""
        due = [(at, name) for name, at in self._dropins.items() if at <= now]
        return [name for _, name in sorted(due)]

    def defer_dropin(self, name: str, at: float) -> None:
        self._dropins[name] = at

    def forget_dropin(self, name: str) -> None:
        self._dropins.pop(name, None)

    def next_dropin_at(self) -> float | None:
        return min(self._dropins.values()) if self._dropins else None
