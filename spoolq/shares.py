"""Shares: which names of pending/ a worker tries first, so that workers of one queue do not all
race for the same head. Of workers that try the same name, one rename wins; each other one has
lost a claim, and every other worker still holds the name the winner took: a lost claim to come.
Two workers draining a backlog lost about one claim per job that way, and each lost claim
costs a rename and a turn of the worker's loop (n workers: up to n - 1 a job).

Each queue's names are dealt among the workers registered to take that queue, by a hash of the
name that every worker computes alike (crc32; Python's hash() differs between processes). A
worker takes the head of its own share; another share's head only when its own share is empty,
when that head has a higher priority, or when it was enqueued more than STEAL_AFTER seconds
before the head of its own share (its worker may be busy with a long job, or dead and not yet
recovered). So no job is passed over by a job of its priority enqueued more than STEAL_AFTER
seconds after it, and a name is tried by two workers mostly at the end of a backlog.
"""

from __future__ import annotations

import zlib
from typing import Callable, Iterable, Mapping

STEAL_AFTER = 1.0  # seconds of enqueue time: how far another share's head may lag behind one's own
_STEAL_AFTER_NS = int(STEAL_AFTER * 1e9)


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
    worker's)? Canonical names start with the rank (priority) and the sequence (enqueue time, ns)."""
    if own is None:
        return True
    if theirs is None:
        return False
    if theirs[:10] != own[:10]:
        return theirs[:10] < own[:10]  # a higher priority waits for no share
    return int(theirs[11:30]) + _STEAL_AFTER_NS < int(own[11:30])


class Takers:
    """The workers registered on a spool and the queues each takes, as their registrations say.
    A registration never changes, so each is read once; one listing of workers/ a refresh."""

    def __init__(self, registered: Callable[[], Iterable[str]], record: Callable[[str], Mapping[str, object] | None]):
        self._registered = registered
        self._record = record
        self._known: dict[str, frozenset[str] | None | bool] = {}  # owner -> its queues; False: takes none

    def share(self, me: str) -> Share:
        owners = set(self._registered())
        for gone in set(self._known) - owners:
            del self._known[gone]
        for owner in owners - set(self._known):
            self._known[owner] = _queues_taken(self._record(owner))
        return Share(me, {owner: queues for owner, queues in self._known.items() if queues is not False})


def _queues_taken(record: Mapping[str, object] | None) -> frozenset[str] | None | bool:
    """What a registration takes: None (every queue), a set of queues, or False: not a worker
    (a supervisor, a canceller), or a record that cannot be read (not counted: its share would wait)."""
    if not record or record.get("role", "worker") != "worker":
        return False
    queues = record.get("queues")
    if queues is None:
        return None
    if not isinstance(queues, list) or not all(isinstance(q, str) for q in queues):
        return False
    return frozenset(queues)
