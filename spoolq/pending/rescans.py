"""How a worker keeps its index of pending/ current: names from events, listings (its own or a
sibling's, listing.py) paced by what they cost (index.Pacing), and on a sharded pending/ a
poll of the shards new names land in (Arrivals, below) with a full listing only seldom."""

from __future__ import annotations

import os
import time

from ..store import maildir, shards
from ..system import fsio
from .index import ListingGate, Pacing, PendingIndex
from .dealing import Takers
from .listing import NOTED_MAX, Listings, SharedListing
from ..spool import Spool

SIBLING_LISTING_SERVES = 30.0  # seconds, sharded (below sharedlisting.NOTED_FOR)
RESHARE_AFTER_LOSS = 0.05  # seconds: a lost claim says another worker takes the queue; look this often


class Rescans:
    def __init__(self, spool: Spool, index: PendingIndex, pacing: Pacing, shared: SharedListing | None,
                 burst: bool):
        self.spool = spool
        self.index = index
        self.pacing = pacing
        self.burst = burst
        self.listings = Listings(lambda: spool.views.pending_entries(), shared)
        self.arrivals = Arrivals(spool.store.shards)
        self._last_full = -1e18  # monotonic time of the last full listing
        self._learned: set[str] = set()  # entries learned other than by a listing, since the last one
        self.takers = Takers(spool.owners.registered, spool.owners.record)
        self._shared_at = -1e18  # monotonic time of the last reshare()
        self._mail = True  # maildir/new/ may hold a delivery: collect it

    def interval(self, now: float, poll_interval: float) -> float:
        """Seconds between calls of run()."""
        if self.spool.config.pending_shards > 0:
            return poll_interval  # a poll of the newest shards; run() decides on a full listing
        return self.pacing.rescan_interval(self.index.has_ready(int(now * 1000)), poll_interval)

    def run(self) -> None:
        self._mail = True  # the periodic look, for a delivery whose event was lost
        asked = time.monotonic()
        gate = self.pacing.gate
        cfg = self.spool.config
        # A burst worker with nothing ready leaves if this listing shows nothing: it must be fresh.
        leaving = self.burst and not self.index.has_ready(int(time.time() * 1000))
        if cfg.pending_shards > 0:
            for entry in self.arrivals.poll(asked, cfg.pending_shards):
                if not self.index.knows(entry):  # a shard's listing repeats the names seen before
                    self.remember(entry, changed=False)
            full_every = self.pacing.rescan_interval(self.index.has_ready(int(time.time() * 1000)),
                                                     cfg.poll_interval, sharded=True)
            if not leaving and asked - self._last_full < full_every:
                return  # what arrived is in the shards just polled; older ones only shrink
        elif not gate.should_list(self.spool.layout.pending, asked):
            return  # one stat said nothing came or went since a listing that saw it all
        # Sharded, a sibling's full listing serves for a while (well within NOTED_FOR, the span for
        # which names learned since it began are kept to add back): the servers list the whole
        # of pending/ about once per host.
        max_age = 0.0 if leaving else SIBLING_LISTING_SERVES if cfg.pending_shards > 0 else cfg.poll_interval
        snapshot, theirs = self.listings.take(asked, max_age, gate.stamp, gate.would_cover)
        self.index.rescan(snapshot.names)
        for name in self.listings.noted_since(snapshot.started):
            self.index.add(name)  # RACE: learned while the listing was taken: keep it, in case it is new
        self.pacing.took(snapshot, theirs)
        self._last_full = asked
        self._learned.clear()
        if cfg.pending_shards > 0:
            self.arrivals.prune(snapshot.names)

    def reshare(self, owner: str) -> None:
        """Deal each queue's names again among the workers registered to take it (dealing.py), and
        count the registrations for the pacing of listings, from the same listing of workers/."""
        self._shared_at = time.monotonic()
        self.index.reshare(self.takers.share(owner))
        self.pacing.workers = max(1, self.takers.listed)

    def tried(self, entry: str, won: bool, cost: float, owner: str) -> None:
        """A claim of `entry` was tried, and `won` or not, in `cost` seconds."""
        self.pacing.claimed(won, cost, self.from_listing(entry))
        self.index.claimed(entry, won)
        alone = len(self.index.share.takers) <= 1  # and yet another took it: a worker started since
        if not won and (alone or time.monotonic() - self._shared_at >= RESHARE_AFTER_LOSS):
            try:
                self.reshare(owner)
            except OSError:
                pass  # the worker's next sweep deals them again

    def relist(self) -> None:
        """The next run() lists everything: a name was taken from the index that may still be in
        pending/ (its claim failed for a passing fault, or this worker was re-registered)."""
        self.pacing.gate.reset()
        self._last_full = -1e18

    def summary(self) -> str:
        """The worker's stop line: claims, and what its listings cost the servers (every directory
        listed, pending/ or a shard; polls a stat answered; the names read)."""
        p, a = self.pacing, self.arrivals
        return (f"claimed {_n(p.won, 'job')}, lost {_n(p.tried - p.won, 'claim')} to other workers; "
                f"listed pending/ {_n(p.gate.listings + a.listings, 'time')}, {_n(p.gate.skipped + a.skipped, 'poll')} "
                f"answered by one stat, {_n(p.gate.shared, 'listing')} taken from sibling workers; "
                f"read {_n(p.names + a.names, 'name')}")

    def remember(self, entry: str, changed: bool = True) -> None:
        """An entry of pending/ learned other than by a listing (an event, a move of our own)."""
        self.index.add(entry, changed=changed)
        self.listings.noted(entry)
        if len(self._learned) < NOTED_MAX:
            self._learned.add(entry)

    def from_listing(self, entry: str) -> bool:
        """Whether `entry` reached the index by the last full listing (not by an event or a poll).
        Unsharded, every name counts as listed (lost claims on any make the worker list again)."""
        return self.spool.config.pending_shards <= 0 or entry not in self._learned

    def collect_mail(self) -> None:
        """Move what Maildir deliverers put into maildir/new/ into pending/ (maildir.py), where it
        is a drop-in this worker knows of; only after an event there, or a rescan."""
        if self._mail:
            self._mail = False
            for name in maildir.collect(self.spool.store):
                self.remember(name)

    def note_event(self, directory: str, name: str) -> None:
        pending = self.spool.layout.pending
        if directory == self.spool.layout.dir(maildir.NEW):
            self._mail = True
        elif directory == pending:
            self.remember(name)
        elif os.path.dirname(directory) == pending and shards.is_shard(os.path.basename(directory)):
            self.remember(f"{os.path.basename(directory)}/{name}")


class Arrivals:
    """A worker's poll of a sharded pending/. While nothing arrives, one stat of pending/ (writers
    touch it). When it changed: a stat of each shard writers write into now, and a listing of one
    that changed; pending/ itself (drop-ins, new shards) is listed when no such shard explains the
    change, or at most every TOP_EVERY seconds while arrivals keep coming. Names found are returned
    to be added to the worker's index (never forgotten here: the full listing, taken seldom, forgets
    what others took)."""

    TOP_EVERY = 5.0

    def __init__(self, pending: shards.PendingShards):
        self.shards = pending
        self._polled = ListingGate()  # pending/'s stamp at the last poll that looked further
        self._top = ListingGate()  # ... at the last listing of pending/ itself
        self._top_at = -1e18
        self._looked: float | None = None  # pending/'s mtime at the last poll that looked into shards
        self._primed = False  # pending/ itself listed once: the shards then there are known
        self._gates: dict[str, ListingGate] = {}  # the shards watched, each with its stamp
        self._present: list[str] = []  # shards in pending/ at its last listing, oldest first
        self.listings = 0  # directories listed (pending/ itself or a shard)
        self.names = 0  # names those listings returned
        self.skipped = 0  # polls answered by one stat

    def poll(self, now: float, width: int) -> list[str]:
        """Entries that may be new, from what changed since the last poll (`now`: monotonic)."""
        if not self._polled.should_list(self.shards.pending, now):
            self.skipped += 1
            return []  # no arrival, no bump, no new shard: one stat
        self._polled.listed(now)
        stamp = self._polled.stamp
        fs_now = stamp[1] / 1e9 if stamp else 0.0
        found: list[str] = []
        # The first look starts from now: what was there before is the worker's full listing's.
        since = fs_now if self._looked is None else min(self._looked, fs_now)
        explained = False
        for shard in self._watched(width, since, fs_now):
            gate = self._gate(shard)
            if gate.should_list(self.shards.path(shard), now):
                explained = explained or (gate.changed and gate.stamp is not None)
                found.extend(self._list(shard, now))
        self._looked = fs_now
        # RACE: a drop-in that lands with a job in a shard is explained away here, and found by the
        # listing of pending/ TOP_EVERY seconds on (its own host's worker has its event at once).
        if self._top.should_list(self.shards.pending, now) and (not explained or now - self._top_at >= self.TOP_EVERY):
            found.extend(self._list_top(now))
        return found

    def _list_top(self, now: float) -> list[str]:
        top = fsio.listdir(self.shards.pending)
        self._top.listed(now)
        self._top_at = now
        self.listings += 1
        self.names += len(top)
        found = [name for name in top if not shards.is_shard(name)]
        first, self._primed = not self._primed, True
        known, self._present = set(self._present), self.shards.shards(top)
        for shard in set(self._gates) - set(self._present):
            del self._gates[shard]  # gone (pruned); a shard of now not made yet gets one again
        # What the shards held before the first look is the worker's full listing's to find.
        for shard in [] if first else self._present:
            if shard not in known and shard not in self._gates:  # new: all of it is news
                self._gate(shard).should_list(self.shards.path(shard), now)  # its stamp, before the listing
                found.extend(self._list(shard, now))
        return found

    def _watched(self, width: int, since: float, fs_now: float) -> list[str]:
        """The shards anything can have been written into since the last look: writers write into
        the shard of the later of their clock and pending/'s mtime (which only grows), and bump
        that mtime after; so from the shard of that mtime at the last look (less one shard, for a
        writer that chose its shard a moment before) on, and any newer one (a writer whose clock
        is ahead). Not older ones, however much they change: their changes are claims. By
        pending/'s mtime alone, never this host's clock."""
        width = max(width, 1)
        oldest = shards.shard_of(since - width, width)
        return sorted({shards.shard_of(fs_now, width), shards.shard_of(fs_now - width, width),
                       *(s for s in self._present if s >= oldest)})

    def _gate(self, shard: str) -> ListingGate:
        return self._gates.setdefault(shard, ListingGate())

    def _list(self, shard: str, now: float) -> list[str]:
        self.listings += 1
        self._gate(shard).listed(now)
        entries = self.shards.listed(shard)
        self.names += len(entries)
        return entries

    def prune(self, entries: list[str]) -> list[str]:
        """After a full listing (`entries`): remove the shards it found empty that are PRUNE_AFTER
        older than pending/'s mtime at the last poll. Returns the ones removed."""
        stamp = self._polled.stamp
        if not self._present or stamp is None:
            return []
        occupied = {entry.partition("/")[0] for entry in entries if entry.startswith(shards.PREFIX)}
        gone = [s for s in self._present if s not in occupied and self.shards.prune(s, stamp[1] / 1e9)]
        self._present = [s for s in self._present if s not in gone]
        return gone


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' * (count != 1)}"
