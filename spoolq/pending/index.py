"""A worker's in-memory view of pending/: what to claim next without listing the directory.

Built from a listing, then fed names from events and periodic rescans. Entries may be stale
(another worker claimed them): a claim that loses its rename simply drops the entry, so a
rescan only ever adds names. A ready entry is just its name: canonical names sort as strings
in run order (rank, then sequence), which keeps 100,000 entries in a few tens of MB. An entry in a
shard of pending/ ("=<T>/<name>", shards.py) sits in the heaps by its name, its shard beside it.

Dropped files (not canonical names) wait beside the heaps with the time to look at them next:
at once, or later for a file whose writer may still be at it.
"""

from __future__ import annotations

import heapq
import os
import random
from typing import Callable, Iterable

from ..format import layout
from .dealing import Helping, Share, bound
from .listing import Snapshot


class PendingIndex:
    """Two heaps of ready names per queue, this worker's share of it and the others' (dealing.py;
    a paused queue's jobs are passed over without being looked at), one of scheduled ones for all.
    With `queues`, names of other queues are not kept."""

    def __init__(self, queues: frozenset[str] | None = None) -> None:
        self.queues = queues
        self.share = Share()
        self.helping = Helping()
        self._from_theirs: str | None = None  # the last entry popped from another share
        # (queue, of this worker's share) -> canonical names: the smallest runs first
        self._ready: dict[tuple[str, bool], list[str]] = {}
        self._later: list[tuple[int, str]] = []  # (due_ms, name)
        self._known: set[str] = set()  # every entry in the heaps (relative to pending/)
        self._where: dict[str, str] = {}  # name -> entry, for entries in a shard
        self._foreign: set[str] = set()  # names of queues this index does not keep
        self._dropins: dict[str, float] = {}  # dropped name -> when to look at it (0: now)

    def __len__(self) -> int:
        return len(self._known)

    def add(self, entry: str, *, changed: bool = False) -> None:
        """Note an entry of pending/; `changed` (an event): a dropped file waited on is looked at now."""
        if entry in self._known or entry in self._foreign:
            return
        parsed = layout.parse_pending(entry)
        if parsed is None:
            if layout.is_dropin(entry):
                self._dropins[entry] = 0.0 if changed else self._dropins.get(entry, 0.0)
            return
        if self.queues is not None and parsed.queue not in self.queues:
            self._foreign.add(entry)
            return
        self._known.add(entry)
        name = entry[entry.rfind("/") + 1:]
        if name != entry:
            self._where[name] = entry
        elif self._where:
            self._where.pop(name, None)  # the same name once seen in a shard, now in pending/ itself
        if parsed.due_ms:
            heapq.heappush(self._later, (parsed.due_ms, name))
        else:
            self._push(parsed.queue, name)

    def knows(self, entry: str) -> bool:
        return entry in self._known or entry in self._foreign

    def rescan(self, names: Iterable[str]) -> None:
        """Merge a fresh listing: only names not seen yet are parsed (the set difference runs in C),
        and names no longer there (claimed by other workers) are forgotten, so that they cost no
        failed claim. (The worker notes events only between listings: a name that arrived after
        this listing was taken is not in the index yet, and is not forgotten.)"""
        listed = set(names)
        self._known.intersection_update(listed)  # the heaps skip forgotten names as they pop
        self._foreign.intersection_update(listed)
        for entry in listed.difference(self._known).difference(self._foreign):
            if not entry.startswith(".") and "/." not in entry:
                self.add(entry)

    def promote(self, now_ms: int) -> None:
        """Move scheduled entries whose time has come to their queue's ready heap."""
        while self._later and self._later[0][0] <= now_ms:
            name = heapq.heappop(self._later)[1]
            self._push(_queue_of(name), name)
        while self._later and not self._holds(self._later[0][1]):
            heapq.heappop(self._later)

    def _push(self, queue: str, name: str) -> None:
        heapq.heappush(self._ready.setdefault((queue, self.share.mine(queue, name)), []), name)

    def reshare(self, share: Share) -> None:
        """Deal the ready names again, when the workers taking a queue have changed."""
        if share == self.share:
            return
        self.share = share
        ready, self._ready = self._ready, {}
        for (queue, _), heap in ready.items():
            for name in heap:
                self._push(queue, name)

    def _holds(self, name: str) -> bool:
        """Whether a name in the heaps is still known (a rescan forgets what others took)."""
        return self._where.get(name, name) in self._known

    def _take(self, name: str) -> str:
        """A name leaves the heaps: its entry, forgotten."""
        entry = self._where.pop(name, name)
        self._known.discard(entry)
        return entry

    def _heads(self, blocked: frozenset[str]) -> dict[tuple[str, bool], list[str]]:
        """The non-empty ready heaps of queues not blocked, forgotten names dropped from their heads."""
        heads = {}
        for key, heap in list(self._ready.items()):
            while heap and not self._holds(heap[0]):
                self._take(heapq.heappop(heap))  # forgotten by a rescan
            if not heap:
                del self._ready[key]
            elif key[0] not in blocked:
                heads[key] = heap
        return heads

    def pop_ready(self, now_ms: int, spread: int = 1, blocked: frozenset[str] = frozenset()) -> str | None:
        """The next name to claim, from queues not `blocked` (paused): the first in run order of
        this worker's share, unless another share's first must go first (dealing.Helping); with
        `spread` > 1, one of the first `spread` of the same rank (priority) and heap, at random:
        workers that keep losing the head to each other (one rename wins, the others fail) then
        mostly take different names."""
        self.promote(now_ms)
        heads = self._heads(blocked)
        if not heads:
            return None
        own = min((h for (_, mine), h in heads.items() if mine), key=lambda h: h[0], default=None)
        theirs = min((h for (_, mine), h in heads.items() if not mine), key=lambda h: h[0], default=None)
        take_theirs = own is None or (theirs is not None and self.helping.theirs_first(own[0], theirs[0], now_ms))
        heap = theirs if take_theirs else own
        assert heap is not None
        name = heapq.heappop(heap)
        if spread > 1:  # never a name enqueued over STEAL_AFTER after the other heap's first
            other = own if take_theirs else theirs
            name = _pick_near(heap, name, spread, self._holds, bound(other[0]) if other else None)
        entry = self._take(name)
        self._from_theirs = entry if take_theirs else None
        return entry

    def claimed(self, entry: str, won: bool) -> None:
        """A claim of `entry`, popped last, was tried and `won` or lost."""
        self.helping.claimed(entry == self._from_theirs, won)

    def next_due_ms(self) -> int | None:
        self.promote(0)
        return self._later[0][0] if self._later else None

    def has_ready(self, now_ms: int, blocked: frozenset[str] = frozenset()) -> bool:
        self.promote(now_ms)
        return bool(self._heads(blocked))

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


def _queue_of(name: str) -> str:
    """The queue a canonical name says (no id or queue holds the separator)."""
    at = name.rfind(layout.QUEUE_SEP)
    return name[at + 1:-5] if at >= 0 else layout.DEFAULT_QUEUE


def _pick_near(heap: list[str], head: str, spread: int, holds: Callable[[str], bool], below: str | None) -> str:
    """One of the first `spread` names of `head`'s rank (and before `below`), at random."""
    rank = head[:10]
    window = [head]
    while len(window) < spread and heap and heap[0][:10] == rank and (below is None or heap[0] < below):
        name = heapq.heappop(heap)
        if holds(name):
            window.append(name)
    chosen = window.pop(random.randrange(len(window)))
    for name in window:
        heapq.heappush(heap, name)
    return chosen


class Pacing:
    """When a worker lists pending/, and how it picks what to claim, from what listing and lost
    claims cost it: the listing gate (one stat when nothing changed), a listing as soon as claims
    lost to other workers have cost more than a listing (which forgets every name they took),
    held to about 1% of the worker's time otherwise; and after a lost claim, a pick among the
    first few names rather than the head that every worker races for. Also the stop line's counts."""

    SPREAD = 8
    SHARDED_FULL_EVERY = 3600.0  # seconds: the longest between full listings of a sharded pending/

    def __init__(self) -> None:
        self.gate = ListingGate()
        self.won = self.tried = 0
        self._lost_last = False
        self._lost_cost = 0.0  # spent on claims lost since the last listing
        self._listing_cost = 0.0
        self.workers = 1  # registered on the spool, every host: they share the server's listing time
        self.names = 0  # names read by this worker's own listings (what it cost the servers)

    def spread(self) -> int:
        return self.SPREAD if self._lost_last else 1

    def claimed(self, won: bool, cost: float, listed: bool = True) -> None:
        """A claim was tried; `listed`: its name came from a listing (else from an event or a poll
        of new arrivals, which every worker races for: a listing would not have spared the loss)."""
        self.tried += 1
        self.won += won
        self._lost_last = not won
        if not won and listed:
            self._lost_cost += cost

    def listed(self, started: float, cost: float) -> None:
        self.gate.listed(started)
        self._listing_cost, self._lost_cost = cost, 0.0

    def took(self, snapshot: Snapshot, theirs: bool) -> None:
        """A listing was taken: this worker's own, or a sibling's (listing.py), whose cost is
        what it cost the servers and whose coverage holds if its stamp is the one seen here."""
        if theirs:
            self.gate.took_shared(snapshot.covered and snapshot.stamp == self.gate.stamp)
        else:
            self.gate.listed(snapshot.started)
            self.names += len(snapshot.names)
        self._listing_cost, self._lost_cost = snapshot.cost, 0.0

    def rescan_interval(self, has_ready: bool, poll_interval: float, sharded: bool = False) -> float:
        """poll_interval while idle. With ready work in hand, a listing only finds jobs to queue
        behind it (or forgets what others took), so all workers' listings together are held to
        about 1% of the time (50 ms at 100,000 pending, one worker: one every 5 s; a hundred: one
        each every 500 s), unless a worker's lost claims have cost it more than a listing."""
        if not has_ready and not sharded:
            return poll_interval
        # Lost claims on names from a listing (claimed()): a new listing forgets every name others took.
        if self._lost_cost > self._listing_cost:
            return 0.0
        # At most a minute: a job of a higher priority from a host without workers waits no longer.
        # Sharded (shards.py), arrivals are found by polling the newest shards: a full listing then
        # only forgets what others took (and finds a job whose writer stalled for minutes between
        # choosing its shard and writing into it).
        cap = self.SHARDED_FULL_EVERY if sharded else 60.0
        return min(max(poll_interval, 100 * self._listing_cost * self.workers), max(poll_interval, cap))


class ListingGate:
    """Whether a listing of pending/ can find anything new, from one stat of the directory: a
    listing is a round trip per few hundred names on a network file system, a stat one round
    trip, and most polls of an idle spool change nothing. Its stamp (inode, mtime, ctime, size)
    changes with every name added or removed. A file system that keeps times to the second may
    give a second change the stamp of the first, so a stamp counts as settled only once seen for
    SAME_TICK seconds, and a listing taken after that covers every change the stamp stands for."""

    SAME_TICK = 2.0

    def __init__(self) -> None:
        self._stamp: tuple[int, ...] | None = None
        self._first_seen = 0.0
        self._covered = False  # a listing was taken once the current stamp had settled
        self.changed = False  # the last should_list() saw a new stamp
        self.listings = 0
        self.shared = 0
        self.skipped = 0

    @property
    def stamp(self) -> tuple[int, ...] | None:
        """pending/'s stamp at the last should_list()."""
        return self._stamp

    def should_list(self, directory: str, now: float) -> bool:
        try:
            st = os.stat(directory)
            stamp: tuple[int, ...] | None = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
        except OSError:
            stamp = None  # list, and let the listing say what is wrong
        self.changed = stamp is None or stamp != self._stamp  # else the same stamp, not yet settled
        if self.changed:
            self._stamp, self._first_seen, self._covered = stamp, now, False
        elif self._covered:
            self.skipped += 1
            return False
        return True

    def reset(self) -> None:
        """The next poll lists: the worker forgot a name it could not claim for a passing fault."""
        self._covered = False

    def listed(self, started: float) -> None:
        """A listing was taken, begun at `started` (the clock should_list was given)."""
        self.listings += 1
        self._covered = self.would_cover(started)

    def would_cover(self, started: float) -> bool:
        """Whether a listing begun at `started` sees every change the current stamp stands for."""
        return self._stamp is not None and started - self._first_seen >= self.SAME_TICK

    def took_shared(self, covered: bool) -> None:
        """A sibling's listing was taken instead; `covered`: its lister judged it to cover a stamp
        equal to ours."""
        self.shared += 1
        self._covered = covered
