"""The worker loop: wait for a job, claim it, run it, record the outcome. No policy, no printing."""

from __future__ import annotations

import os
import time
from typing import Callable

from ..format.states import State
from . import adoption, attempt
from ..format import layout
from ..store import attempts_log, maildir
from ..system import liveness, runner, watch
from .duties import Duties
from .hooks import Hooks
from ..format.errors import LostOwnership, SpoolError
from .admission import Admission
from .burst import Retrying
from ..pending.index import Pacing, PendingIndex
from ..moves.cancel import KillRequest
from ..pending.rescans import Rescans
from ..pending.listing import SharedListing
from .heartbeat import Heartbeat
from .schedules import HONOURED
from .slot_threads import After, SlotThreads
from ..store.owners import StartedAt
from ..spool import Spool
from ..store.store import io_message
from ..moves.handoff import Moved
from ..moves.transitions import Claimed
from .log_lines import JobLines, SettingsNotes, text_log as stderr_log
from .lifecycle import (EXIT_SIGNALLED, EXIT_UNREACHABLE, EXIT_UNSAFE, CannotStart, Stops, announce_wakeups,
                        unless_unreachable, unregister)

MAX_WAIT = 30.0


class Worker:
    def __init__(self, spool: Spool, *, burst: bool = False, log: Callable[[str], None] = stderr_log,
                 supervisor: int | None = None, since: StartedAt | None = None, allow_unsafe_fs: bool = False,
                 shared: SharedListing | None = None, queues: frozenset[str] | None = None,
                 job_lines: JobLines | None = None, slots: int = 1):
        self.spool = spool
        self.slots = SlotThreads(slots, self._poke)  # the jobs it runs at once
        self.job_lines = job_lines  # a line per job claimed and finished (a foreground `worker start`)
        self.events: attempts_log.EventLog | None = None  # opened at registration
        self.duties = Duties(spool, self.log, lambda: self.owner, self._recover)  # recovery, schedules, retention
        self._abort_keeping_house = self.duties.while_running(  # a worker of one slot's
            self._abort_reason, lambda: self.heartbeat.beating())
        self.hooks = Hooks(spool, self.log)  # config on_done, on_dead, on_failure
        self.allow_unsafe_fs = allow_unsafe_fs
        self.burst = burst
        self._log = log
        self.supervisor = supervisor
        self.stops = Stops(spool, since or spool.owners.since(liveness.started_at(os.getpid()) or time.time()),
                           self._poke, self.log)
        self.owner = ""
        self.queues = queues  # the queues it takes jobs from (None: every queue)
        self.index = PendingIndex(queues)
        self.pacing = Pacing()
        self.rescans = Rescans(spool, self.index, self.pacing, shared, burst)
        self._wake: watch.Wakeups | None = None
        self.heartbeat = Heartbeat(spool, self.log)
        self.group = attempt.GroupRecord(None)  # opened at registration
        self._base_env = dict(os.environ)  # copied once: jobs get it plus their own variables
        self.host = layout.host_name()
        self.admission = Admission(spool, queues, lambda: self.heartbeat.healthy(), self.log, burst=burst)
        self.retrying = Retrying()  # a burst's own retries: it waits them out
        self.settings_notes = SettingsNotes(self.log)

    # ---- lifecycle -----------------------------------------------------------------------

    def log(self, message: str) -> None:
        self._log(f"worker {self.owner or os.getpid()}: {message}")

    def request_stop(self, *_args: object) -> None:
        """A stop signal: the first stops after the running jobs, the third kills them."""
        self.stops.request()

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.poke()

    def install_signal_handlers(self) -> None:
        self.stops.install_signal_handlers(supervised=bool(self.supervisor))

    def run(self) -> int:
        """Work until asked to stop (or, with burst, until nothing is ready). Returns an exit
        status: 0; EXIT_SIGNALLED when a signal to this worker stopped it; EXIT_UNSAFE when the
        spool stopped being safe to use (EXIT_UNREACHABLE: out of reach). Raises CannotStart."""
        try:
            self.spool.store.check_safe()
            self.spool.check_filesystem(allow_unsafe=self.allow_unsafe_fs, log=self.log)
            maildir.make(self.spool.store)  # a spool older than its Maildir gets one
            self.spool.store.hold_root()
            self._register()
        except OSError as e:  # a full disk: one line, with the path only when there is one
            raise CannotStart(io_message("cannot use the spool", e)) from None
        except SpoolError as e:
            raise CannotStart(str(e)) from None
        layout = self.spool.layout
        # A burst worker never waits for an arrival (it leaves when nothing is ready): it watches
        # nothing, and so never imports watchdog (a part of a short burst's start-up).
        watched = [layout.pending, layout.dir("control"), layout.dir("slots"), layout.dir(maildir.NEW)]
        self._wake = watch.Wakeups(watched,
                                   events=not self.burst,  # and the shards of a sharded pending/
                                   recursive=(layout.pending,) if self.spool.config.pending_shards > 0 else ())
        announce_wakeups(self._wake, self.spool, self.log)
        runner.keep_descriptors_from_jobs()
        unreachable = True
        try:
            unreachable = not unless_unreachable(self._work, self.log)
        finally:
            self.duties.stop()
            self.heartbeat.stop()
            self.group.close()
            if self.events is not None:
                self.events.close()
            self._wake.close()
            unregister(self.spool, self.owner, None if unreachable else self.log)
        self.hooks.wait()
        dropped = f"; {self.job_lines.dropped} job lines dropped: stderr was not read" if self.job_lines and \
            self.job_lines.dropped else ""
        self.log(f"stopped ({self.rescans.summary()}{dropped})")
        if self.stops.unsafe:
            return EXIT_UNSAFE
        if unreachable:
            return EXIT_UNREACHABLE
        return EXIT_SIGNALLED if self.stops.signals else 0

    def _register(self) -> None:
        extra: dict[str, object] = {"honours": list(HONOURED)} | ({"supervisor": self.supervisor} if self.supervisor else {})
        if self.slots.slots > 1:
            extra["slots"] = self.slots.slots
        if self.queues is not None:
            extra["queues"] = sorted(self.queues)
        self.heartbeat.stop()
        self.heartbeat = Heartbeat(self.spool, self.log)
        self.owner = self.heartbeat.start(lambda lease: self.spool.owners.register("worker", lease=lease, **extra))
        self.group.close()
        self.group = attempt.GroupRecord(os.path.join(self.spool.layout.owned(self.owner), layout.GROUP_FILE),
                                         self.spool.store.modes.file, lambda slot, group: self.heartbeat.guard(slot, group))
        if self.events is not None:
            self.events.close()
        self.events = attempts_log.EventLog(self.spool.layout.dir("events"), self.owner, modes=self.spool.store.modes,
                                      keep_seconds=self.spool.config.keep_events)

    def _abort_reason(self) -> str | None:
        """Asked while a job runs (by each slot): why to kill it now, if there is a reason."""
        if (running_out := self.heartbeat.running_out()) is not None:  # first: it reads no file
            return running_out
        if self.heartbeat.lost:
            return "aborted: this worker lost the job"
        return self.stops.kill_reason()

    # ---- the loop ------------------------------------------------------------------------

    def _work(self) -> None:
        """The loop, then the running jobs' ends, recorded by their slots: also when the loop
        failed (none may run on unwatched; the lease guard and stop signals still reach them)."""
        try:
            self._loop()
        except BaseException as e:
            if not self.slots.idle():
                self.log(f"{type(e).__name__}: {e}; claiming no more, waiting for the running jobs")
            self.slots.wait_all()
            raise
        self.slots.wait_all()

    def _loop(self) -> None:
        assert self._wake is not None
        spool = self.spool
        last_rescan = 0.0
        while not self.stops.stopping:
            self.slots.collect()
            now = time.time()
            cfg = spool.config
            self.settings_notes.say(self.spool.store.config_error, cfg.problems)
            if self.stops.requested():
                return
            reason = self._wake.check()
            if reason:
                self.log(f"lost file-system events ({reason}); falling back to polling every "
                         f"{cfg.poll_interval:g}s")
            if self.heartbeat.lost and not self.slots.idle():  # its running jobs abort first (_abort_reason)
                self._sleep(now, last_rescan, full=True)
                continue
            if self.heartbeat.lost and not self.stops.unsafe_now():  # (the spool itself may have gone)
                self._reregister("this worker's registration was taken over (declared dead elsewhere)")
            if self.stops.stopping:
                return
            if self.duties.due(now):
                self.duties.run(now)
            # (now < last_rescan: the clock stepped back, and the last rescan's time stands ahead)
            if now - last_rescan >= self.rescans.interval(now, cfg.poll_interval) or now < last_rescan:
                last_rescan = now
                self.rescans.run()
            self.rescans.collect_mail()
            if not adoption.adopt_due(self.spool, self.index, self.rescans, self.owner, now, self.log):
                self.heartbeat.lost = True
            blocked = self.admission.blocked()
            if self.burst and self.admission.everything_paused:
                return
            full = self.slots.full()
            name = self.index.pop_ready(int(now * 1000), self.pacing.spread(), blocked) \
                if blocked is not None and not full else None
            if name is not None:
                self._claim_while_free(name)
                continue
            if self.burst and not full and not self.index.has_dropins():  # (full: a slot that ends wakes it)
                if last_rescan != now:
                    last_rescan = 0.0  # one fresh listing before deciding there is nothing to do
                    continue
                if not self.retrying.left(self.index, self.admission.paused_queues) and self.slots.idle():
                    return  # (a running job may yet leave a retry)
            # Idle: retention's backlog first, if any, and then only a look at what arrived meanwhile.
            self._sleep(now, last_rescan, now if self.duties.idle(now) else None, full=full)

    def _sleep(self, now: float, last_rescan: float, until: float | None = None, *,
               full: bool = False) -> None:
        """Wait for an event, a poke (a slot that ended: `full`, no job due can be run before),
        or the next thing due."""
        assert self._wake is not None
        cfg = self.spool.config
        wake_at = min(last_rescan + cfg.poll_interval, now + MAX_WAIT,
                      self.duties.next_at, until if until is not None else now + MAX_WAIT)
        due = None if full else self.index.next_due_ms()
        if due is not None:
            wake_at = min(wake_at, due / 1000.0)
        dropin_at = self.index.next_dropin_at()
        if dropin_at is not None:
            wake_at = min(wake_at, dropin_at)
        for directory, name in self._wake.wait(wake_at - time.time()):
            self.rescans.note_event(directory, name)
        self.admission.woke()

    def _reregister(self, why: str) -> None:
        self.log(f"{why}; continuing under a new identity")
        old = self.owner
        self._register()
        self.spool.owners.unregister(old)

    def _recover(self) -> None:
        if self.stops.unsafe_now():  # again: a directory may have been swapped or opened up
            return
        try:
            for recovered in self.spool.recovery.run(self.owner):
                self.log(str(recovered))
            self.rescans.reshare(self.owner)
        except Exception as e:  # recovery is retried on the next sweep; the worker goes on
            self.log(f"recovery sweep failed: {type(e).__name__}: {e}")

    # ---- one job ------------------------------------------------------------------------

    def _claim_while_free(self, name: str | None) -> None:
        """Claim `name` and, while another slot is free, the next ready job at once: the loop's
        checks once for as many claims, which take milliseconds (one slot ran its job meanwhile:
        back to the loop, which looks for a stop, a pause, a lost lease before the next)."""
        while name is not None:
            self._claim_and_run(name)
            if self.slots.slots == 1 or self.slots.full() or self.stops.stopping or self.heartbeat.lost:
                return
            name = self.index.pop_ready(int(time.time() * 1000), self.pacing.spread(), self.admission.passed_over())

    def _claim_and_run(self, name: str) -> None:
        """Claim `name` here, in the worker's own thread, and run it in a free slot."""
        go, slot = self.admission.slot_for(name, self.owner)
        if not go:
            self.index.add(name)  # every slot of its queue is taken: passed over until one frees
            return
        claimed = None
        try:
            claimed = self._claim(name)
        finally:
            if claimed is None:
                self.admission.give_back(slot)  # the claim was lost
        if claimed is None:
            return
        claimed_at = time.time()
        if self.job_lines:
            self.job_lines.claimed(self.owner, claimed.job.id, claimed.job.running_attempt)
        kill = KillRequest(claimed.path, claimed.job)
        # RACE: the slot's thread runs and records the job while this thread claims others; it
        # touches no state of the worker's but what it returns, which this thread does (collect()).
        self.slots.start(lambda number: self._attempt(number, claimed, kill, claimed_at, slot))

    def _claim(self, name: str) -> Claimed | None:
        started = time.monotonic()
        try:
            claimed = self.spool.transitions.claim(  # a file quarantined instead is said, as a drop-in's is
                name, self.owner, said=lambda entry, why: self.log(f"quarantined job file {entry!r}: {why}"))
        except LostOwnership:
            self.heartbeat.lost = True
            self.rescans.relist()  # the name may still be in pending/: list again, not forget it
            return None
        except OSError as e:
            self.log(f"cannot claim {name!r}: {e}")
            self.rescans.relist()
            return None
        self.rescans.tried(name, claimed is not None, time.monotonic() - started, self.owner)
        return claimed  # None: another worker's rename won (or the file was quarantined)

    def _attempt(self, number: int, claimed: Claimed, kill: KillRequest, claimed_at: float,
                 slot: str | None) -> After:
        """In slot `number`: run the job and record its outcome; what is left for the worker's
        thread (the attempts log, hooks, the pending index, the queue's slot given back)."""
        try:
            outcome, moved, finished_at = attempt.run_and_record(
                self.spool, claimed, kill, self.host, self._base_env, self.group, number,
                abort=self._abort_reason if self.slots.slots > 1 else self._abort_keeping_house,
                why_stopped=self.heartbeat.why_stopped, give_up=self.stops.kill_reason, settle=self.duties.settle,
                log=self.log)
        except BaseException:  # the worker fails (slot_threads.py): the queue's slot is not kept meanwhile
            if slot is not None:
                self.spool.slots.give_back(slot)
            raise
        finally:
            self.duties.settle()  # (a worker of one slot's, started while its job ran)
        fact = attempt.fact(claimed, outcome, moved, self.host, self.owner, claimed_at, finished_at)
        return lambda: self._finished(fact, moved, slot)

    def _finished(self, fact: attempts_log.FinishedAttempt, moved: Moved | None, slot: str | None) -> None:
        """In the worker's thread, once an attempt is recorded (`moved`: where the job went)."""
        self.admission.give_back(slot)  # once the job has moved on
        if self.events is not None:
            self.events.record(fact)
        if self.job_lines:
            self.job_lines.finished(fact)
        if moved is None:
            self.heartbeat.lost = True
            return
        self.hooks.after(fact, moved.seen_as(time.time()))
        if moved.state == State.PENDING:
            self.rescans.remember(moved.name)
            if self.burst:
                self.retrying.entries.add(moved.name)
