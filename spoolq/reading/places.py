"""Where jobs are, from directory listings: a `Place` a listing found; whether a directory is still
as it was when last listed (Still: one stat instead of a listing); and the finished jobs of done/
or dead/ in the order they finished (FinishedOrder), kept between listings by a reader that lists
again and again (the dashboard, every 2 s a page is open: each lstat of a 100,000-file done/ was
most of a refresh). Read-only; may import format and system."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from time import monotonic
from typing import Iterator, NamedTuple, Sequence, overload

from ..format import layout
from ..system import fsio


class Place(NamedTuple):
    """Where a job's file was when its directory was listed."""

    path: str
    state: str  # its directory's state ("pending" for scheduled jobs too, until read)
    job_id: str
    owner: str | None = None
    inode: int | None = None  # a finished job's, from its listing: with path, its key in the census


def finished_at(st: os.stat_result) -> float:
    """When a done or dead job finished: its move into done/ or dead/, which is when its file's
    ctime was last set (a success is that move alone; a failure rewrites the file just before
    it). The mtime would say when it was enqueued or last failed: never use it for this."""
    return st.st_ctime


SETTLED = 2.0  # seconds a directory must have been still for what its listing gave to be reused
RELIST = 300.0  # seconds it is reused at most


def stamp_of(directory: str) -> tuple[int, int] | None:
    """A directory's inode and mtime, which an entry added or removed changes (None: no stat)."""
    try:
        st = os.stat(directory)
    except OSError:
        return None  # listed, and the listing says what is wrong
    return st.st_ino, st.st_mtime_ns


@dataclass(frozen=True)
class Still:
    """A directory's stamp when it was listed, and whether what that listing gave may be used
    again while the stamp stays the same."""

    stamp: tuple[int, int] | None = None
    settled: bool = False
    until: float = field(default_factory=lambda: monotonic() + RELIST)

    @classmethod
    def listed(cls, stamp: tuple[int, int] | None) -> Still:
        return cls(stamp, stamp is not None and time.time() - stamp[1] / 1e9 > SETTLED)

    def holds(self, stamp: tuple[int, int] | None) -> bool:
        # RACE: an entry added or removed while the directory was listed changes its mtime, but two
        # changes within one tick of the file system's clock leave the same mtime: a listing is
        # reused only if the directory had been still for SETTLED seconds when it was made, and
        # never for longer than RELIST (a clock stepped back, a file server's cached attributes).
        return stamp == self.stamp and self.settled and monotonic() < self.until


Key = tuple[str, int]  # a finished file as its directory's listing names it: its name and inode


class Listed(Sequence[Place]):
    """Finished jobs' places, each made when asked for: a page of 100,000 makes 50."""

    def __init__(self, directory: str, state: str, keys: list[Key]):
        self.directory, self.state, self.keys = directory, state, keys

    def __len__(self) -> int:
        return len(self.keys)

    @overload
    def __getitem__(self, index: int) -> Place: ...
    @overload
    def __getitem__(self, index: slice) -> Listed: ...
    def __getitem__(self, index: int | slice) -> Place | Listed:
        if isinstance(index, slice):
            return Listed(self.directory, self.state, self.keys[index])
        entry, inode = self.keys[index]
        return Place(f"{self.directory}/{entry}", self.state, layout.stem(entry), None, inode)

    def __iter__(self) -> Iterator[Place]:
        return (self[i] for i in range(len(self.keys)))


class FinishedOrder:
    """The finished jobs of done/ and dead/, oldest first, each file's finish time read once (an
    lstat) while the listings, FRESH_FOR apart at most, name it with the same inode. Shared by a
    reader's threads. It holds a name, an inode and a time a job (some 25 MB for 100,000 jobs);
    places are made as asked for."""

    FRESH_FOR = 10.0  # seconds: a listing later than this after the last reads every time again

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_dir: dict[str, tuple[dict[Key, float], list[Key], float, Still]] = {}

    def places(self, directory: str, state: str) -> Listed:
        stamp, now = stamp_of(directory), monotonic()
        with self._lock:
            known, order, at, still = self._by_dir.get(directory, ({}, [], now, Still()))
        if still.holds(stamp):  # nothing came or went since the last listing: one stat, no listing
            return Listed(directory, state, order)
        listed = {key for key in fsio.listdir_inodes(directory) if layout.is_json_entry(key[0])}
        if now - at > self.FRESH_FOR:  # a name may have gone and come back in the inode it had
            known = {}
        if listed != known.keys():
            known, order = self._read_again(directory, listed, known)
        with self._lock:
            self._by_dir[directory] = (known, order, now, Still.listed(stamp))
        return Listed(directory, state, order)

    def _read_again(self, directory: str, listed: set[Key], known: dict[Key, float]) -> tuple[dict[Key, float], list[Key]]:
        # RACE: a job's file written anew (a requeue, a retry) is a new inode, so a new key and its
        # own lstat; only a job gone and back under its name in the inode it had (a requeue's
        # rewrite given the one freed by the last: ext4 does), both between two listings at most
        # FRESH_FOR apart, keeps the old time: the order alone is off, for that job (the page
        # reads each file it shows). A file gone between the listing and its lstat is left out,
        # as by the next listing. Two threads that find a change each store a listing's whole
        # answer.
        found = {}
        for key in listed:
            at = known.get(key)
            if at is None:
                st = fsio.lstat_if_there(f"{directory}/{key[0]}")
                if st is None:
                    continue
                at = finished_at(st)
            found[key] = at
        order = sorted(found, key=lambda key: (found[key], key))
        return found, order
