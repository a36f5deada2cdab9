"""The worker loop: wait for a job, claim it, run it, record the outcome. No policy, no printing."""

from __future__ import annotations

import os
import signal
import time
from typing import Callable

from ..format.states import State
from . import attempt
from ..format import layout
from ..store import attempts_log, maildir
from ..system import mounts, liveness, runner, watch
from .duties import Duties
from .hooks import Hooks
from ..format.errors import LostOwnership, SpoolError
from .admission import Admission
from .burst import Retrying
from ..pending.index import Pacing, PendingIndex
from ..moves.cancel import CANCELLED, KillRequest
from ..pending.rescans import Rescans
from ..pending.listing import SharedListing
from .heartbeat import Heartbeat
from ..store.owners import Since
from ..spool import Spool
from ..store.store import io_message
from ..moves.transitions import Adopted, Claimed
from .log_lines import JobLines, SettingsNotes, text_log as stderr_log

RECOVER_EVERY = 2.0  # seconds between sweeps for jobs of dead workers
MAX_WAIT = 30.0


EXIT_SIGNALLED = 75  # stopped by a signal to this worker alone: its supervisor starts another
EXIT_UNSAFE = 77  # the spool stopped being safe to use: its supervisor stops too
EXIT_CANNOT_START = 78  # it could not register (a full disk, no inodes): not worth a traceback
EXIT_UNREACHABLE = 74  # the spool's file system failed under it (ENOTCONN, EIO): its supervisor starts another


def announce_wakeups(wake: watch.Wakeups, spool: Spool, log: Callable[[str], None]) -> None:
    """Say in the log what wakes the worker: events, polling, or neither (a burst)."""
    if wake.mode == "none":
        log("started; --burst: runs what is ready and the retries of what it ran, then leaves")
        return
    kind = mounts.kind_of(spool.root)
    if wake.mode != "events":
        log(f"no file-system events ({wake.failure}); polling every "
            f"{spool.config.poll_interval:g}s wakes this worker")
    elif mounts.is_network(kind):
        log(f"spool is on {kind}: events miss other hosts' writes, so polling every "
            f"{spool.config.poll_interval:g}s is what wakes this worker for them")
    else:
        log(f"started; waking on file-system events ({kind or 'unknown fs'}), "
            f"rescanning every {spool.config.poll_interval:g}s")


def _due_later(pending_entry: str) -> bool:
    """Is the job at this pending name scheduled (waiting out a backoff), not ready now?"""
    parsed = layout.parse_pending(pending_entry.rsplit("/", 1)[-1])
    return parsed is not None and parsed.due_ms > time.time() * 1000


def _said(e: OSError) -> str:
    """An error of the file system in a few words: what failed, and where."""
    return f"{e.strerror or e}: {e.filename}" if e.filename else str(e.strerror or e)


def _unless_unreachable(loop: Callable[[], None], log: Callable[[str], None]) -> bool:
    """Run the worker's loop: False if the spool's file system failed under it (a host cut off
    from a shared spool: ENOTCONN, EIO), said in one line, no traceback; its supervisor starts
    another, which waits for the spool to come back."""
    try:
        loop()
    except OSError as e:
        log(f"the spool's file system failed: {_said(e)}; stopping (its supervisor starts another "
            "once the spool can be reached)")
        return False
    return True


def _unregister(spool: Spool, owner: str, log: Callable[[str], None] | None) -> None:
    """Leave the registry (`log`: None when the spool is known to be out of reach)."""
    try:
        spool.owners.unregister(owner)
    except OSError as e:  # its lease runs out: a worker on any host cleans up after it
        if log is not None:
            log(f"cannot unregister: {_said(e)}")


class CannotStart(Exception):
    """A worker could not begin (its registration could not be written, the spool is unsafe)."""


KILL_AFTER_SIGNALS = 3  # the third stop signal kills the running job (its attempt counts)


class Worker:
    def __init__(self, spool: Spool, *, burst: bool = False, log: Callable[[str], None] = stderr_log,
                 supervisor: int | None = None, since: Since | None = None, allow_unsafe_fs: bool = False,
                 shared: SharedListing | None = None, queues: frozenset[str] | None = None,
                 job_lines: JobLines | None = None):
        self.spool = spool
        self.job_lines = job_lines  # a line per job claimed and finished (a foreground `worker start`)
        self.events: attempts_log.EventLog | None = None  # opened at registration
        self.duties = Duties(spool, self.log, lambda: self.owner)  # schedules, retention, the metrics textfile
        self.hooks = Hooks(spool, self.log)  # config on_done, on_dead, on_failure
        self.allow_unsafe_fs = allow_unsafe_fs
        self.burst = burst
        self._log = log
        self.supervisor = supervisor
        # When this worker's command began: a stop request from then on is for it.
        self.since = since or spool.owners.since(liveness.started_at(os.getpid()) or time.time())
        self.stopping = False
        self.signals = 0  # stop signals received
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
        self.unsafe = False
        self.retrying = Retrying()  # a burst's own retries: it waits them out
        self.settings_notes = SettingsNotes(self.log)

    @property
    def lost(self) -> bool:
        return self.heartbeat.lost

    @lost.setter
    def lost(self, value: bool) -> None:
        self.heartbeat.lost = value

    # ---- lifecycle -----------------------------------------------------------------------

    def log(self, message: str) -> None:
        self._log(f"worker {self.owner or os.getpid()}: {message}")

    def request_stop(self, *_args: object) -> None:
        """A stop signal: the first stops after the running job, the third kills it."""
        self.stopping = True
        self.signals += 1
        if self._wake is not None:
            self._wake.poke()  # an idle worker stops now, not at its next rescan

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_stop)
        # Under a supervisor, Ctrl+C reaches the supervisor, which passes each one on as a
        # SIGTERM: counted once here, not twice.
        signal.signal(signal.SIGINT, signal.SIG_IGN if self.supervisor else self.request_stop)

    def run(self) -> int:
        """Work until asked to stop (or, with burst, until nothing is ready). Returns an exit
        status: 0; EXIT_SIGNALLED when a signal to this worker stopped it; EXIT_UNSAFE when the
        spool stopped being safe to use (EXIT_UNREACHABLE: out of reach). Raises CannotStart."""
        try:
            self.spool.store.check_safe()
            self.spool.check_filesystem(allow_unsafe=self.allow_unsafe_fs, log=self.log)
            maildir.make(self.spool.store)  # a spool older than its Maildir gets one
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
            unreachable = not _unless_unreachable(self._loop, self.log)
        finally:
            self.duties.stop()
            self.heartbeat.stop()
            self.group.close()
            if self.events is not None:
                self.events.close()
            self._wake.close()
            _unregister(self.spool, self.owner, None if unreachable else self.log)
        self.hooks.wait()
        dropped = f"; {self.job_lines.dropped} job lines dropped: stderr was not read" if self.job_lines and \
            self.job_lines.dropped else ""
        self.log(f"stopped ({self.rescans.summary()}{dropped})")
        if self.unsafe:
            return EXIT_UNSAFE
        if unreachable:
            return EXIT_UNREACHABLE
        return EXIT_SIGNALLED if self.signals else 0

    def _register(self) -> None:
        extra: dict[str, object] = {"supervisor": self.supervisor} if self.supervisor else {}
        if self.queues is not None:
            extra["queues"] = sorted(self.queues)
        self.heartbeat.stop()
        self.heartbeat = Heartbeat(self.spool, self.log)
        self.owner = self.heartbeat.start(lambda lease: self.spool.owners.register("worker", lease=lease, **extra))
        self.group.close()
        self.group = attempt.GroupRecord(os.path.join(self.spool.layout.owned(self.owner), layout.GROUP_FILE),
                                         self.spool.store.modes.file, lambda group: self.heartbeat.guard(group))
        if self.events is not None:
            self.events.close()
        self.events = attempts_log.EventLog(self.spool.layout.dir("events"), self.owner, modes=self.spool.store.modes,
                                      keep_seconds=self.spool.config.keep_events)

    def _stop_requested(self) -> bool:
        if self.spool.owners.stop_requested(self.since) is None:
            return False
        self.log("stop requested")
        return True

    def _abort_reason(self) -> str | None:
        """Asked while a job runs: why to kill it now, if there is a reason."""
        if (running_out := self.heartbeat.running_out()) is not None:  # first: it reads no file
            return running_out
        if self.lost:
            return "aborted: this worker lost the job"
        if self.signals >= KILL_AFTER_SIGNALS:
            return f"killed: its worker was stopped by {self.signals} signals"
        request = self.spool.owners.stop_requested(self.since)
        if request is not None and request.kill_jobs:
            return "killed: `worker stop --now`"
        return None

    # ---- the loop ------------------------------------------------------------------------

    def _loop(self) -> None:
        assert self._wake is not None
        spool = self.spool
        last_rescan = 0.0
        last_recover = 0.0
        while not self.stopping:
            now = time.time()
            cfg = spool.config
            self.settings_notes.say(self.spool.store.config_error, cfg.problems)
            if self._stop_requested():
                return
            reason = self._wake.check()
            if reason:
                self.log(f"lost file-system events ({reason}); falling back to polling every "
                         f"{cfg.poll_interval:g}s")
            if self.lost:
                self._reregister("this worker's registration was taken over (declared dead elsewhere)")
            if now - last_recover >= RECOVER_EVERY:
                last_recover = now
                self._recover()
            if now >= self.duties.next_at:
                self.duties.run(now)
            if now - last_rescan >= self.rescans.interval(now, cfg.poll_interval):
                last_rescan = now
                self.rescans.run()
            self.rescans.collect_mail()
            self._adopt_dropins(now)
            blocked = self.admission.blocked()
            if self.burst and self.admission.everything_paused:
                return
            name = self.index.pop_ready(int(now * 1000), self.pacing.spread(), blocked) if blocked is not None else None
            if name is not None:
                self._claim_and_run(name)
                continue
            if self.burst and not self.index.has_dropins():
                if last_rescan != now:
                    last_rescan = 0.0  # one fresh listing before deciding there is nothing to do
                    continue
                if not self.retrying.left(self.index, self.admission.paused_queues):
                    return
            # Idle: retention's backlog first, if any, and then only a look at what arrived meanwhile.
            self._sleep(now, last_rescan, last_recover, now if self.duties.idle(now) else None)

    def _sleep(self, now: float, last_rescan: float, last_recover: float, until: float | None = None) -> None:
        assert self._wake is not None
        cfg = self.spool.config
        wake_at = min(last_rescan + cfg.poll_interval, last_recover + RECOVER_EVERY, now + MAX_WAIT,
                      self.duties.next_at, until if until is not None else now + MAX_WAIT)
        due = self.index.next_due_ms()
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
        try:
            self.spool.store.check_safe()  # again: a directory may have been swapped or opened up
        except SpoolError as e:
            self.log(f"{e}; stopping")
            self.unsafe = self.stopping = True
            return
        try:
            for recovered in self.spool.recovery.run(self.owner):
                self.log(str(recovered))
            self.rescans.reshare(self.owner)
        except Exception as e:  # recovery is retried on the next sweep; the worker goes on
            self.log(f"recovery sweep failed: {type(e).__name__}: {e}")

    def _adopt_dropins(self, now: float) -> None:
        for name in self.index.dropins_due(now):
            poll = self.spool.config.poll_interval
            try:
                result = self.spool.transitions.adopt(name, self.owner)
            except LostOwnership:
                self.lost = True
                return
            except Exception as e:  # a file nobody foresaw must cost a log line, never the worker
                self.log(f"cannot take dropped file {name!r}: {type(e).__name__}: {e}")
                self.index.defer_dropin(name, now + poll)
                continue
            if result.outcome is Adopted.WAIT:
                # Look again at the next rescan (or sooner, when its writer closes it); it is
                # quarantined only once drop_grace has passed since its last change.
                self.index.defer_dropin(name, min(result.retry_at or now + poll, now + poll))
                continue
            self.index.forget_dropin(name)
            if result.moved is not None and result.moved.state == State.PENDING:
                self.rescans.remember(result.moved.name)  # before any claim: FIFO by arrival, not by event order
            if result.outcome is Adopted.QUARANTINED:
                self.log(f"quarantined dropped file {name!r}: {result.reason}")

    # ---- one job -------------------------------------------------------------------------

    def _claim_and_run(self, name: str) -> None:
        go, slot = self.admission.slot_for(name, self.owner)
        if not go:
            self.index.add(name)  # every slot of its queue is taken: passed over until one frees
            return
        try:
            claimed = self._claim(name)
            if claimed is not None:
                claimed_at = time.time()
                if self.job_lines:
                    self.job_lines.claimed(self.owner, claimed.job.id, claimed.job.running_attempt)
                kill = KillRequest(claimed.path, claimed.job)
                self._finish(claimed, self._run(claimed, kill), kill, claimed_at)
        finally:
            self.admission.give_back(slot)  # once the job has moved on (or the claim was lost)

    def _claim(self, name: str) -> Claimed | None:
        started = time.monotonic()
        try:
            claimed = self.spool.transitions.claim(name, self.owner)
        except LostOwnership:
            self.lost = True
            self.rescans.relist()  # the name may still be in pending/: list again, not forget it
            return None
        except OSError as e:
            self.log(f"cannot claim {name!r}: {e}")
            self.rescans.relist()
            return None
        self.rescans.tried(name, claimed is not None, time.monotonic() - started, self.owner)
        return claimed  # None: another worker's rename won (or the file was quarantined)

    def _run(self, claimed: Claimed, kill: KillRequest) -> runner.Outcome:
        env = {**self._base_env, "SPOOLQ_HOST": self.host, "SPOOLQ_SPOOL": self.spool.root,
               "SPOOLQ_OWNER": self.owner}
        return attempt.run(self.spool, claimed.job, self.host, self.owner, env, self.group,
                           lambda: CANCELLED if kill.asked() else self._abort_reason())

    def _finish(self, claimed: Claimed, outcome: runner.Outcome, kill: KillRequest, claimed_at: float) -> None:
        finished_at = time.time()
        outcome.error = self.heartbeat.why_stopped(outcome.error) if not outcome.ok else None
        cancelled = outcome.error == CANCELLED and kill.asked()
        moved = attempt.record(self.spool, claimed, outcome, self.host, self.log, final=cancelled)
        if cancelled:
            kill.withdraw()
        fact = attempt.fact(claimed, outcome, moved, self.host, self.owner, claimed_at, finished_at)
        if self.events is not None:
            self.events.record(fact)
        if self.job_lines:
            self.job_lines.finished(fact)
        if moved is not None:
            self.hooks.after(fact, State.SCHEDULED if moved.state == State.PENDING and _due_later(moved.name) else moved.state)
        if moved is None:
            self.lost = True
        elif moved.state == State.PENDING:
            self.rescans.remember(moved.name)
            if self.burst:
                self.retrying.entries.add(moved.name)
