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
        self.next_at = 0.0
        self.todo: dict[str, list[str]] = {}  # "done", "dead", "output" -> names this pass has yet to look at
        self.behind = False  # names left to look at: idle time goes on with them
        self.busy_since: float | None = None  # when this worker first found the lock held, of late
        self.said: locks.Holder | None = None  # the long holder it said, once

    def wanted(self) -> bool:
        cfg = self.spool.config
        return bool(cfg.keep_done or cfg.keep_dead or cfg.keep_output)

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
                purged = self._batch(fs_now, until)
        except LockBusy:
            self.busy_since = now if self.busy_since is None else self.busy_since  # another worker is at it
        finally:
            spent = time.monotonic() - started
            self.next_at = now + max(MIN_GAP, spent / SHARE - spent)
            self.behind = purged is not None and any(self.todo.values())
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

    def _batch(self, fs_now: float, until: float) -> Purged:
        cfg, finished, lay = self.spool.config, self.spool.finished, self.spool.layout
        purged = Purged()
        for state, keep in ((State.DONE, cfg.keep_done), (State.DEAD, cfg.keep_dead), ("output", cfg.keep_output)):
            if not keep:
                self.todo.pop(state, None)
                continue
            if time.monotonic() >= until and any(self.todo.values()):
                break  # the time is spent: the next batch goes on from here
            names = self.todo.get(state) or fsio.listdir(lay.dir(state))  # a new pass
            if state == "output":
                purged.outputs, looked = self._old_outputs(names, keep, fs_now, until)
            else:
                setattr(purged, state, finished.purge(state, older_than=keep, now=fs_now, until=until, names=names))
                looked = finished.examined
            self.todo[state] = names[looked:]
        return purged

    def _old_outputs(self, names: list[str], keep: float, fs_now: float, until: float) -> tuple[int, int]:
        """Delete the logs (of `names` in output/) of finished jobs whose last attempt ended more
        than `keep` ago; (deleted, names looked at)."""
        lay, count, looked = self.spool.layout, 0, 0
        # Under the dlq lock: a finished job cannot be requeued (and its log written again) meanwhile.
        with self.spool.store.locked("dlq"):
            for entry in names:
                if looked and time.monotonic() >= until:
                    break
                looked += 1
                job_id = entry[:-4] if entry.endswith(".log") else ""
                if not valid_id(job_id):
                    continue
                path = os.path.join(lay.dir("output"), entry)
                try:
                    if fs_now - os.lstat(path).st_mtime < keep:
                        continue
                except FileNotFoundError:
                    continue
                if any(fsio.present(os.path.join(lay.dir(s), layout.job_file(job_id))) for s in FINISHED):
                    fsio.unlink_quietly(path)
                    count += 1
        return count, looked
