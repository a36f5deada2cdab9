"""Retention: finished jobs and their output purged once they are older than keep_done,
keep_dead and keep_output (judged by when the job finished: its file's ctime in done/ or dead/,
its log's mtime), by the running workers, in small batches.

Once per spool at a time: a worker takes the "retention" lock without waiting (a worker on
another host that holds it is doing the work). A holder that dies lets go of it with its life
(locks.py); one that holds it for locks.LONG_HELD is said once, in the log of every worker that
finds it held (`held_long`), as fsck says it. At most about 1% of a busy worker's time: a
batch stops after BUSY_BATCH seconds, and after a batch that took d seconds the next comes no
sooner than 99 d later (and at least MIN_GAP). A worker with no job ready spends its idle time
on what is left, in batches of IDLE_BATCH seconds (so a job that arrives waits at most that
long): a purge costs about 0.1 ms a job, so a busy worker's 1% keeps up with some 100 jobs a
second, and the idle time of a spool that is not saturated does the rest. Jobs other jobs
still wait for (--after) are kept, as `purge` keeps them.

A directory is not looked at again until something in it can have expired: a pass remembers
when the oldest thing it left there finished (or when the pass began, if it left nothing), and
nothing there expires before that plus its keep. So an idle worker lists nothing however many
jobs done/ and dead/ hold, and a spool whose jobs expire one by one (a steady stream of a week
ago) gets a pass no more than PASS_SHARE of the time: a pass that took d seconds is followed by
the next no sooner than d / PASS_SHARE later (a job may outlive its keep by that much).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from ..format.states import FINISHED, State
from ..format import layout
from ..store import config
from ..system import fsio, locks
from ..format.errors import LockBusy
from ..format.job import valid_id
from ..spool import Spool

BUSY_BATCH = 0.1  # seconds a batch may take while jobs wait
IDLE_BATCH = 0.02  # seconds a batch may take in a worker's idle time
MIN_GAP = 1.0  # seconds between a busy worker's batches, however cheap
SHARE = 0.01  # of a busy worker's time
PASS_SHARE = 0.002  # of the time, for whole passes: what an idle worker spends on a spool expiring jobs one by one
RELOOK = 60.0  # seconds: a directory holding what is kept for another reason is looked at again this soon
NEVER = float("inf")


@dataclass
class Purged:
    done: int = 0
    dead: int = 0
    outputs: int = 0

    def __bool__(self) -> bool:
        return bool(self.done or self.dead or self.outputs)


class Retention:
    """A pass lists a directory once and looks at its names a batch at a time, each batch bounded
    by its time (a look at 100,000 young jobs is several batches, never one long one); a new pass
    begins when the last is through."""

    def __init__(self, spool: Spool):
        self.spool = spool
        self.gap_at = 0.0  # no batch before this (this host's clock): the share of the worker's time
        self.todo: dict[str, list[str]] = {}  # "done", "dead", "output" -> names this pass has yet to look at
        # The same keys -> when the oldest thing the last whole pass left there finished (on the
        # file system's clock): nothing there can expire before that plus its keep.
        self.oldest: dict[str, float] = {}
        self.passing: dict[str, float] = {}  # the same, for the pass under way
        self.relook: dict[str, float] = {}  # -> when to look again whatever the ages (something kept for another reason)
        self.skew = 0.0  # the file system's clock minus this host's, at the last batch
        self.spent = 0.0  # seconds the batches of the passes under way took, in the lock
        self.behind = False  # names left to look at: idle time goes on with them
        self.busy_since: float | None = None  # when this worker first found the lock held, of late
        self.said: locks.Holder | None = None  # the long holder it said, once

    def wanted(self) -> bool:
        return bool(self._keeps())

    @property
    def next_at(self) -> float:
        """When the next batch is due, on this host's clock: after the gap, and (no pass under way)
        not before something can have expired or is to be looked at again."""
        if self.behind:
            return self.gap_at
        due = min((self._due(state, keep) for state, keep in self._keeps()), default=NEVER)
        return max(self.gap_at, due - self.skew)

    def _keeps(self) -> list[tuple[str, float]]:
        cfg = self.spool.config
        return [(state, keep) for state, keep in ((State.DONE, cfg.keep_done), (State.DEAD, cfg.keep_dead),
                                                  ("output", cfg.keep_output)) if keep]

    def _due(self, state: str, keep: float) -> float:
        """When, on the file system's clock, `state`'s directory is next worth a pass (keep is
        read now: a keep shortened since the last pass is honoured)."""
        return min(self.oldest.get(state, -NEVER) + keep, self.relook.get(state, NEVER))

    def run(self, now: float, fs_now: float | None = None, *, seconds: float = BUSY_BATCH) -> Purged | None:
        """One batch of at most `seconds`, if this worker is the one to do it now; None if another
        holds the lock. Ages are judged on the file system's clock (`fs_now`, read when not given)."""
        started = time.monotonic()
        purged = None
        try:
            with config.locked(self.spool.layout, "retention", mode=self.spool.store.modes.file, timeout=0):
                self.busy_since = None
                until = time.monotonic() + seconds  # from the take: a worker's first pays for importing filelock
                fs_now = self.spool.store.fs_clock() if fs_now is None else fs_now
                self.skew = fs_now - now
                purged = self._batch_unless_dlq_busy(fs_now, until)
                self.spent += time.monotonic() - (until - seconds)  # the batch's own work, not the import
        except LockBusy:
            self.busy_since = now if self.busy_since is None else self.busy_since  # another worker is at it
        finally:
            spent = time.monotonic() - started
            self.gap_at = now + max(MIN_GAP, spent / SHARE - spent)
            self.behind = purged is not None and any(self.todo.values())
            if purged is not None and not self.behind:  # the passes under way are through:
                self.gap_at = max(self.gap_at, now + self.spent / PASS_SHARE)  # the pause their cost earns
                self.spent = 0.0
        return purged

    def held_long(self, now: float) -> locks.Holder | None:
        """The holder of the retention lock, once per holder, when this worker has found it held
        for locks.LONG_HELD seconds on end (no worker but that holder purges meanwhile)."""
        if self.busy_since is None or now - self.busy_since < locks.LONG_HELD:
            return None
        held = locks.holder(self.spool.layout.lock("retention"))
        if held is None or held == self.said:
            return None
        self.said = held
        return held

    def _batch_unless_dlq_busy(self, fs_now: float, until: float) -> Purged | None:
        """A batch, or None when the "dlq" lock is held (a `purge`, `dlq retry` or `requeue` at
        work, for as long as it takes): the batch waits its turn (the next comes MIN_GAP later),
        never the worker, whose claims (or a running job's checks) would wait with it."""
        try:
            return self._batch(fs_now, until)
        except LockBusy:
            return None

    def _batch(self, fs_now: float, until: float) -> Purged:
        cfg, finished = self.spool.config, self.spool.finished
        purged = Purged()
        for state, keep in ((State.DONE, cfg.keep_done), (State.DEAD, cfg.keep_dead), ("output", cfg.keep_output)):
            if not keep:
                self.todo.pop(state, None)
                continue
            if time.monotonic() >= until and any(self.todo.values()):
                break  # the time is spent: the next batch goes on from here
            names = self.todo.get(state)
            if not names:
                if fs_now < self._due(state, keep):
                    continue  # nothing there can have expired since the last pass: not even listed
                names = self._new_pass(state, fs_now)
            if state == "output":
                purged.outputs, looked, oldest, blocked = self._old_outputs(names, keep, fs_now, until)
            else:
                count = finished.purge(state, older_than=keep, now=fs_now, until=until, names=names, lock_wait=0)
                setattr(purged, state, count)
                looked, oldest, blocked = finished.examined, finished.oldest_young, finished.kept > 0
            self.passing[state] = min(self.passing[state], oldest)
            if blocked:
                self.relook[state] = fs_now + RELOOK
            self.todo[state] = names[looked:]
            if not self.todo[state]:
                self.oldest[state] = self.passing.pop(state)
        return purged

    def _new_pass(self, state: str, fs_now: float) -> list[str]:
        # RACE: a job moved into the directory after this listing (a worker finishing one, a
        # requeue's return) is not among the names; the rename that put it there set its ctime
        # after fs_now, so starting `passing` at fs_now keeps it from expiring unseen. A host
        # whose clock sets a file's times (not the file server's) may be behind by its skew:
        # such a job is purged that much later, never earlier.
        self.passing[state] = fs_now
        self.relook.pop(state, None)
        return fsio.listdir(self.spool.layout.dir(state))

    def _old_outputs(self, names: list[str], keep: float, fs_now: float,
                     until: float) -> tuple[int, int, float, bool]:
        """Delete the logs (of `names` in output/) of finished jobs whose last attempt ended more
        than `keep` ago; (deleted, names looked at, the oldest mtime of the young ones kept,
        whether an old one was kept for its job not being finished)."""
        lay, count, looked, oldest, blocked = self.spool.layout, 0, 0, NEVER, False
        # Under the dlq lock: a finished job cannot be requeued (and its log written again) meanwhile.
        with self.spool.store.locked("dlq", timeout=0):
            for entry in names:
                if looked and time.monotonic() >= until:
                    break
                looked += 1
                job_id = entry[:-4] if entry.endswith(".log") else ""
                if not valid_id(job_id):
                    continue
                path = os.path.join(lay.dir("output"), entry)
                try:
                    written = os.lstat(path).st_mtime
                except FileNotFoundError:
                    continue
                if fs_now - written < keep:
                    oldest = min(oldest, written)
                    continue
                if any(fsio.present(os.path.join(lay.dir(s), layout.job_file(job_id))) for s in FINISHED):
                    fsio.unlink_quietly(path)
                    count += 1
                else:
                    blocked = True  # its job may still finish: looked at again within RELOOK
        return count, looked, oldest, blocked
