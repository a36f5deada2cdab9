"""How a worker keeps its index of pending/ current: names from events, listings (its own or a
sibling's, sharedlisting.py) paced by what they cost (index.Pacing), and on a sharded pending/ a
poll of the shards new names land in (shards.Arrivals) with a full listing only seldom."""

from __future__ import annotations

import os
import time

from . import shards
from .index import Pacing, PendingIndex
from .sharedlisting import NOTED_MAX, Listings, SharedListing

SIBLING_LISTING_SERVES = 30.0  # seconds, sharded (below sharedlisting.NOTED_FOR)
from .spool import Spool


class Rescans:
    def __init__(self, spool: Spool, index: PendingIndex, pacing: Pacing, shared: SharedListing | None,
                 burst: bool):
        self.spool = spool
        self.index = index
        self.pacing = pacing
        self.burst = burst
        self.listings = Listings(lambda: spool.views.pending_entries(), shared)
        self.arrivals = shards.Arrivals(spool.store.shards)
        self._last_full = -1e18  # monotonic time of the last full listing
        self._learned: set[str] = set()  # entries learned other than by a listing, since the last one

    def interval(self, now: float, poll_interval: float) -> float:
        """Seconds between calls of run()."""
        if self.spool.config.pending_shards > 0:
            return poll_interval  # a poll of the newest shards; run() decides on a full listing
        return self.pacing.rescan_interval(self.index.has_ready(int(now * 1000)), poll_interval)

    def run(self) -> None:
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

    def relist(self) -> None:
        """The next run() lists everything: a name was taken from the index that may still be in
        pending/ (its claim failed for a passing fault, or this worker was re-registered)."""
        self.pacing.gate.reset()
        self._last_full = -1e18

    def summary(self) -> str:
        """The worker's stop line: claims, and what its listings cost the servers (every directory
        listed, pending/ or a shard; polls a stat answered; the names read)."""
        p, a = self.pacing, self.arrivals
        return (f"claimed {p.won} job{'s' * (p.won != 1)}, lost {p.tried - p.won} claims to other workers; "
                f"listed pending/ {p.gate.listings + a.listings} times, {p.gate.skipped + a.skipped} polls "
                f"answered by one stat, {p.gate.shared} listings taken from sibling workers; "
                f"read {p.names + a.names} names")

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

    def note_event(self, directory: str, name: str) -> None:
        pending = self.spool.layout.pending
        if directory == pending:
            self.remember(name)
        elif os.path.dirname(directory) == pending and shards.is_shard(os.path.basename(directory)):
            self.remember(f"{os.path.basename(directory)}/{name}")
