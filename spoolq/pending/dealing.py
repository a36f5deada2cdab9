"""Shares: which names of pending/ a worker tries first, so that workers of one queue do not all
race for the same head. Of workers that try the same name, one rename wins; each other one has
lost a claim, and every other worker still holds the name the winner took: a lost claim to come.
Two workers draining a backlog lost about one claim per job that way, and each lost claim
costs a rename and a turn of the worker's loop (n workers: up to n - 1 a job).

Each queue's names are dealt among the workers registered to take that queue, by a hash of the
name that every worker computes alike (crc32; Python's hash() differs between processes). A
worker takes the head of its own share; another share's head (Helping, below) when its own
share is empty, when that head has a higher priority, when it was enqueued more than
STEAL_AFTER seconds before the head of its own share, or when it has stayed that share's head
for STEAL_AFTER seconds: its worker may be busy with a long job, or dead and not yet recovered.
A head taken that way and won means nobody else is taking that share: the worker then takes
every share's names in run order, as if alone, until a claim on another share's name is lost.
So no job waits long behind jobs of its priority enqueued after it, and a name is tried by two
workers about once a second, and at the end of a backlog.
"""

from __future__ import annotations

import sys
import zlib
from typing import Callable, Iterable, Mapping

from ..format.job import valid_queue

STEAL_AFTER = 1.0  # seconds: how far another share's head may lag behind one's own, or wait
_STEAL_AFTER_NS = int(STEAL_AFTER * 1e9)
_STEAL_AFTER_MS = int(STEAL_AFTER * 1000)
MAX_QUEUES = 1000  # queues a worker may name (--queue): every worker reads every registration


class Share:
    """One worker's share of each queue: `me` among `takers` (owner -> the queues it takes; None:
    every queue). A worker alone on a queue, or not among its takers, has all of it."""

    def __init__(self, me: str = "", takers: Mapping[str, frozenset[str] | None] | None = None):
        self.me = me
        self.takers = dict(takers or {})
        self._slots: dict[str, tuple[int, int]] = {}  # queue -> (my slot, takers of it)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Share) and (self.me, self.takers) == (other.me, other.takers)

    def mine(self, queue: str, name: str) -> bool:
        """Is `name` (a canonical pending name, without its shard) of this worker's share?"""
        slot, of = self._slots.get(queue) or self._slot(queue)
        return of <= 1 or zlib.crc32(name.encode()) % of == slot

    def _slot(self, queue: str) -> tuple[int, int]:
        mine = sorted(owner for owner, queues in self.takers.items() if queues is None or queue in queues)
        slot = (mine.index(self.me), len(mine)) if self.me in mine else (0, 1)
        self._slots[queue] = slot
        return slot


def prefer(own: str | None, theirs: str | None) -> bool:
    """Take `theirs` (the first name of other shares) rather than `own` (the first of this
    worker's), by the names alone? Canonical names start with the rank (priority) and the
    sequence (enqueue time, ns)."""
    if own is None:
        return True
    if theirs is None:
        return False
    if theirs[:10] != own[:10]:
        return theirs[:10] < own[:10]  # a higher priority waits for no share
    return _ready_ns(theirs) + _STEAL_AFTER_NS < _ready_ns(own)


def _ready_ns(name: str) -> int:
    """When a canonical name's job became ready: enqueued, or due (a retry keeps its sequence,
    and must not look a backoff older than it is)."""
    return max(int(name[11:30]), int(name[31:44]) * 1_000_000)


def bound(theirs: str) -> str:
    """Names of one's own share sorting before this go before `theirs`; later ones may not (a
    pick among the first few after a lost claim keeps to it)."""
    return f"{theirs[:11]}{int(theirs[11:30]) + _STEAL_AFTER_NS:019d}"


class Helping:
    """Whether to take another share's head now, by what the names say (prefer) and by how long
    that head has waited, and whether this worker is helping a share nobody else takes."""

    SEEN_MAX = 64  # heads remembered: one a queue, and names since taken, until it is reached

    def __init__(self) -> None:
        # Since when each of the other shares' heads has been seen as their first: by name, so
        # that heads taking turns (a queue passed over while its slots are full) keep their time.
        self._seen: dict[str, int] = {}
        self.helping = False

    def theirs_first(self, own: str, theirs: str, now_ms: int) -> bool:
        if self.helping:
            return theirs < own  # run order, as a lone worker takes them
        if prefer(own, theirs):
            return True
        if len(self._seen) >= self.SEEN_MAX and theirs not in self._seen:
            self._seen.clear()
        return now_ms - self._seen.setdefault(theirs, now_ms) >= _STEAL_AFTER_MS

    def claimed(self, theirs: bool, won: bool) -> None:
        """A claim was tried, of another share's name (`theirs`) or of this worker's own."""
        if theirs:
            self.helping = won


class Takers:
    """The workers registered on a spool and the queues each takes, as their registrations say.
    A registration never changes, so each is read once; one listing of workers/ a refresh."""

    def __init__(self, registered: Callable[[], Iterable[str]], record: Callable[[str], Mapping[str, object] | None]):
        self._registered = registered
        self._record = record
        self._known: dict[str, frozenset[str] | None | bool] = {}  # owner -> its queues; False: takes none
        self._sets: dict[frozenset[str], frozenset[str]] = {}  # each set of queues once: workers x queues
        self.listed = 0  # registrations of any role at the last share()

    def share(self, me: str) -> Share:
        owners = set(self._registered())
        self.listed = len(owners)
        for gone in set(self._known) - owners:
            del self._known[gone]
        for owner in owners - set(self._known):
            # RACE: a registration removed between the listing and this read reads as None: it
            # takes no share now. Workers that disagree for a moment on who takes a queue only
            # race for some names, as without shares.
            record = self._record(owner)
            if record:  # one that cannot be read (yet: EMFILE, EIO) is read again next time
                self._known[owner] = self._once(_queues_taken(record))
        if len(self._sets) > len(self._known):
            self._sets = {qs: qs for qs in self._known.values() if isinstance(qs, frozenset)}
        return Share(me, {owner: queues for owner, queues in self._known.items() if queues is not False})

    def _once(self, queues: frozenset[str] | None | bool) -> frozenset[str] | None | bool:
        if not isinstance(queues, frozenset):
            return queues
        interned = frozenset(map(sys.intern, queues))
        return self._sets.setdefault(interned, interned)


def _queues_taken(record: Mapping[str, object] | None) -> frozenset[str] | None | bool:
    """What a registration takes: None (every queue), a set of queues, or False: not a worker
    (a supervisor, a canceller), or a record that cannot be read (not counted: its share would wait)."""
    if not record or record.get("role", "worker") != "worker":
        return False
    queues = record.get("queues")
    if queues is None:
        return None
    if not isinstance(queues, list) or len(queues) > MAX_QUEUES or not all(valid_queue(q) for q in queues):
        return False  # no share for a record spoolq would not write: it would hold a share's jobs back
    return frozenset(queues)
