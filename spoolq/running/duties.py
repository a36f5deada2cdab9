"""What a worker does besides jobs, between them, each at its own pace: sweep for the jobs of dead
workers (the worker's own sweep, handed in), fire the schedules' due slots, purge what retention
no longer keeps; and start the thread that keeps the metrics
textfile fresh (metrics.Textfile) once one is set. Each duty says when it is next due, so that an idle
worker wakes for it (and for nothing else); a duty that fails costs a log line, never the worker."""

from __future__ import annotations

import threading
import time
from typing import Callable

from ..system.locks import LONG_HELD
from .metrics import Textfile
from .retention import BUSY_BATCH, IDLE_BATCH, Retention
from .schedules import Schedules
from ..spool import Spool

SCHEDULE_RECHECK = 2.0  # seconds: a schedule added or changed is seen within this
RECOVER_EVERY = 2.0  # seconds between sweeps for jobs of dead workers
STEP_BACK = 1.0  # seconds: a clock this far behind the last run's has been stepped back


class Duties:
    def __init__(self, spool: Spool, log: Callable[[str], None], owner: Callable[[], str],
                 sweep: Callable[[], None] = lambda: None):
        self.spool = spool
        self.sweep = sweep  # for the jobs of dead workers (it says what it recovers, and its own failures)
        self.swept_at = 0.0
        self.log = log
        self.textfile = Textfile(spool.root, owner, log)
        self.schedules = Schedules(spool)
        self.retention = Retention(spool)
        self.fire_at = 0.0  # the first look fires a slot missed while no worker ran (catch-up)
        self.due_at = 0.0  # the next slot of any schedule
        self.seen: tuple[int, int] | None = None  # schedules/ as it was at the last full look
        self.ran_at = 0.0  # the clock at the last run: one reading earlier than it has stepped back
        self._running: threading.Thread | None = None  # the duties while_running started

    @property
    def next_at(self) -> float:
        """When the next duty is due (epoch seconds)."""
        retention = self.retention.next_at if self.retention.wanted() else float("inf")
        return min(self.swept_at + RECOVER_EVERY, self.fire_at, retention)

    def due(self, now: float) -> bool:
        """Whether a duty is due at `now` (every one is, once the clock has stepped back)."""
        return now >= self.next_at or now < self.ran_at - STEP_BACK

    def run(self, now: float) -> None:
        if now < self.ran_at - STEP_BACK:
            self._stepped_back(now)
        self.ran_at = now
        if now - self.swept_at >= RECOVER_EVERY:
            self.swept_at = now
            self.sweep()
        if now >= self.fire_at:
            self._fire(now)
        if self.retention.wanted() and now >= self.retention.next_at:
            self._retain(now)

    def _stepped_back(self, now: float) -> None:
        """The clock stepped back (NTP correcting a fast clock, a restored VM): every time kept
        is ahead of it by the step, and would hold each duty back that long. All due now."""
        self.swept_at = now - RECOVER_EVERY
        self.fire_at = self.due_at = 0.0
        self.retention.gap_at = min(self.retention.gap_at, now)

    def _retain(self, now: float, seconds: float = BUSY_BATCH) -> None:
        try:
            purged = self.retention.run(now, seconds=seconds)
        except Exception as e:  # a file nobody foresaw: said, and tried again a minute later
            self.retention.gap_at, self.retention.behind = now + 60, False
            self.log(f"retention failed: {type(e).__name__}: {e}")
            return
        held = self.retention.held_long(now)
        if held is not None:
            self.log(f"retention: its lock has been held by {held} for over {LONG_HELD:g}s; nothing is "
                     "purged until it lets go (fsck names it too)")
        if purged:
            self.log(f"retention purged {purged.done} done and {purged.dead} dead jobs, "
                     f"{purged.outputs} output logs")

    def while_running(self, abort: Callable[[], str | None],
                      healthy: Callable[[], bool] = lambda: True) -> Callable[[], str | None]:
        """`abort` (what a running job asks every half second: why to kill it, if there is a
        reason) that also starts the duties then due. For a worker of one slot, which runs its job in
        its own thread (slot_threads.py) and so waits for the job's end: a long job holds up no dead
        worker's jobs, no schedule's slot and no purge. They run in a thread of their own, never
        waited for here: a duty may wait for a spool lock (retention for "dlq" while a purge holds
        it, up to 30 s), and the job's timeout, a stop, a kill and its output must not wait with it.
        None start while the worker's heartbeat fails (`healthy`: a spool out of reach, whose looks
        say nothing true). The worker calls settle() before it records the job, so that none runs
        beside the recording. A failure costs a log line, never the job."""
        def asked() -> str | None:
            reason = abort()
            busy = self._running is not None and self._running.is_alive()
            if reason is None and not busy and healthy() and self.due(now := time.time()):
                # RACE: this thread runs the job's checks and then records it while the duties run,
                # as a worker of many slots records its jobs while its loop does them; what of the
                # worker's the duties touch (its pending index, through the sweep) waits for settle().
                self._running = threading.Thread(target=self._run_logged, args=(now,), name="duties", daemon=True)
                self._running.start()
            return reason
        return asked

    def _run_logged(self, now: float) -> None:
        try:
            self.run(now)
        except Exception as e:
            self.log(f"a duty failed while a job ran: {type(e).__name__}: {e}")

    def settle(self) -> None:
        """Wait for the duties while_running started, if they still run."""
        if self._running is not None:
            self._running.join()
            self._running = None

    def idle(self, now: float) -> bool:
        """The worker has nothing ready: spend the time on retention if it is behind. True if it
        did (the worker looks for jobs again before sleeping)."""
        if not (self.retention.behind and self.retention.wanted()):
            return False
        self._retain(now, IDLE_BATCH)
        return True

    def stop(self) -> None:
        self.textfile.stop()

    def _fire(self, now: float) -> None:
        self.fire_at = now + SCHEDULE_RECHECK
        if self.spool.config.metrics_textfile:
            self.textfile.start()  # once; from then on it follows the settings itself
        if now < self.due_at and self.schedules.stamp() == self.seen:
            self.fire_at = min(self.fire_at, self.due_at)  # nothing due, nothing changed: one stat
            return
        seen = self.schedules.stamp()  # before the look: a change made during it is looked at next time
        try:
            held = False
            for fired in self.schedules.fire_due(now):
                held = held or fired.held
                if fired.error:
                    self.log(f"schedule {fired.name}: cannot fire: {fired.error}")
                elif fired.skipped:
                    self.log(f"schedule {fired.name}: slot {fired.job_id} skipped (catch-up none)")
                elif fired.created:
                    self.log(f"schedule {fired.name}: enqueued {fired.job_id}")
                if fired.note:
                    self.log(f"schedule {fired.name}: {fired.note}")
            due = self.schedules.next_due(now)
            if held:  # a slot waits for its schedule's last job to finish: looked at again soon
                due = min(due if due is not None else float("inf"), now + SCHEDULE_RECHECK)
        except Exception as e:  # a hand-edited schedule, a full disk: said, and tried again later
            self.log(f"cannot fire schedules: {type(e).__name__}: {e}")
            return
        self.seen = seen if seen == self.schedules.stamp() else None  # its own first marker: look once more
        self.due_at = float("inf") if due is None else due
        self.fire_at = min(self.fire_at, self.due_at)
