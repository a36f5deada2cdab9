"""Retention: finished jobs and their output purged once they are older than keep_done,
keep_dead and keep_output (judged by when the job finished: its file's ctime in done/ or dead/,
its log's mtime), by the running workers, in small batches.

Once per spool at a time: a worker takes the "retention" lock without waiting (a worker on
another host that holds it is doing the work). At most about 1% of a busy worker's time: a
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

from . import config, fsio, layout
from .errors import SpoolError
from .job import valid_id
from .spool import Spool

BATCH = 5000  # jobs purged at most per batch and state
BUSY_BATCH = 0.1  # seconds a batch may take while jobs wait
IDLE_BATCH = 0.02  # seconds a batch may take in a worker's idle time
MIN_GAP = 1.0  # seconds between a busy worker's batches, however cheap
SHARE = 0.01  # of a busy worker's time
LOCK_WAIT = 0.1  # seconds a worker waits for the retention lock before leaving it to its holder


@dataclass
class Purged:
    done: int = 0
    dead: int = 0
    outputs: int = 0
    more: bool = False  # the batch stopped on its time or count: there may be more to purge

    def __bool__(self) -> bool:
        return bool(self.done or self.dead or self.outputs)


class Retention:
    def __init__(self, spool: Spool):
        self.spool = spool
        self.next_at = 0.0
        self.behind = False  # the last batch left expired jobs: idle time goes on with them

    def wanted(self) -> bool:
        cfg = self.spool.config
        return bool(cfg.keep_done or cfg.keep_dead or cfg.keep_output)

    def run(self, now: float, fs_now: float | None = None, *, seconds: float = BUSY_BATCH) -> Purged | None:
        """One batch of at most `seconds`, if this worker is the one to do it now; None if another
        holds the lock. Ages are judged on the file system's clock (`fs_now`, read when not given)."""
        started = time.monotonic()
        try:
            # A moment's wait, not none: the first take on a spool makes the lock's token, and the
            # take after a holder on this host died breaks its hold; both then take it at the next try.
            with config.locked(self.spool.layout, "retention", mode=self.spool.store.modes.file, timeout=LOCK_WAIT):
                fs_now = self.spool.store.fs_clock() if fs_now is None else fs_now
                purged = self._batch(fs_now, started + seconds)
        except SpoolError:
            purged = None  # another worker, here or on another host, is at it
        spent = time.monotonic() - started
        self.next_at = now + max(MIN_GAP, spent / SHARE - spent)
        self.behind = purged is not None and purged.more
        return purged

    def _batch(self, fs_now: float, until: float) -> Purged:
        cfg, finished = self.spool.config, self.spool.finished
        purged = Purged()
        # "more" only when a batch stopped with expired jobs left: a batch that found nothing old
        # enough is done, however long its look took (else an idle worker would list done/ again
        # and again, for nothing).
        if cfg.keep_done:
            purged.done = finished.purge("done", older_than=cfg.keep_done, now=fs_now, limit=BATCH, until=until)
            purged.more = finished.cut_short
        if cfg.keep_dead and not purged.more:
            purged.dead = finished.purge("dead", older_than=cfg.keep_dead, now=fs_now, limit=BATCH, until=until)
            purged.more = finished.cut_short
        if cfg.keep_output and not purged.more:
            purged.outputs = self._old_outputs(cfg.keep_output, fs_now)
            purged.more = purged.outputs >= BATCH
        return purged

    def _old_outputs(self, keep: float, fs_now: float) -> int:
        """Delete the logs of finished jobs whose last attempt ended more than `keep` ago."""
        lay, count = self.spool.layout, 0
        for entry in fsio.listdir(lay.dir("output")):
            job_id = entry[:-4] if entry.endswith(".log") else ""
            if not valid_id(job_id):
                continue
            path = os.path.join(lay.dir("output"), entry)
            try:
                if fs_now - os.lstat(path).st_mtime < keep:
                    continue
            except FileNotFoundError:
                continue
            # RACE: the job may be requeued between this look and the unlink; its next attempt then
            # starts a new log (AttemptLog creates it), and only old output is lost, as asked.
            if any(os.path.lexists(os.path.join(lay.dir(state), layout.job_file(job_id))) for state in ("done", "dead")):
                fsio.unlink_quietly(path)
                count += 1
                if count >= BATCH:
                    break
        return count
