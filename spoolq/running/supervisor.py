"""Process supervision: keep N workers alive, detach, stop gracefully, recover after a crash."""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Callable

from ..format import layout
from ..store import attempts_log
from ..system import fsio, liveness, locks
from ..format.errors import SpoolError
from ..store.judge import beat_interval
from ..store.owners import StartedAt, WorkerInfo
from ..store.store import io_error
from ..pending.listing import SharedListing
from ..spool import Spool
from .lifecycle import (EXIT_CANNOT_START, EXIT_SIGNALLED, EXIT_UNREACHABLE, EXIT_UNSAFE, KILL_AFTER_SIGNALS, CannotStart,
                        unregister)
from .worker import Worker
from ..system.notify import sd_notify
from .log_lines import JobLines, Tally, text_log

RESTART_WINDOW = 10.0  # seconds: a worker dying faster than this is restarted with a growing delay
READY_WITHIN = 15.0  # seconds: READY=1 is sent once the workers registered, or after this
READY_POLL = 0.05


@dataclass
class Child:
    pid: int
    started: float


class Supervisor:
    def __init__(self, spool: Spool, count: int, *, burst: bool = False,
                 log: Callable[[str], None] = text_log, since: StartedAt | None = None,
                 allow_unsafe_fs: bool = False, queues: frozenset[str] | None = None,
                 job_lines: JobLines | None = None, slots: int = 1):
        self.spool = spool
        self.slots = slots  # jobs each worker runs at once
        self.job_lines = job_lines
        self.spawned: set[int] = set()  # every worker pid it started: a burst sums up their attempts
        self._ready_at: float | None = None  # until readiness is told (sd_notify): the latest time
        self.allow_unsafe_fs = allow_unsafe_fs
        self.queues = queues
        self.count = count
        self.burst = burst
        self._log = log
        self.children: dict[int, Child] = {}
        self.stopping = False
        self.signals = 0
        self.token = ""
        self.lease = 0.0  # the lease its registration records: what other hosts judge its heartbeat by
        # When `worker start` began: a `worker stop` from then on stops these workers, even one
        # that comes before they registered (`worker start --detach & worker stop`).
        self.since = since or spool.owners.since(liveness.started_at(os.getpid()) or time.time())
        self._quick_deaths = 0
        self.failed = False  # a worker could not start or found the spool unsafe: exit 1
        self.shared: SharedListing | None = None  # its workers take turns listing pending/ for each other

    def log(self, message: str) -> None:
        self._log(f"supervisor {os.getpid()}: {message}")

    def _on_signal(self, signum: int, _frame: object) -> None:
        """Every stop signal is passed on to each worker, which counts them: the first stops
        after the running jobs, the third kills them (see Worker.request_stop)."""
        self.stopping = True
        self.signals += 1
        name = signal.Signals(signum).name
        if self.signals == 1:
            sd_notify("STOPPING=1")  # the stop begins now: `systemctl status` says "deactivating" while jobs finish
            self.log(f"{name}: stopping after the running jobs finish")
        elif self.signals == KILL_AFTER_SIGNALS - 1:
            self.log(f"{name}: still running: {self._running() or 'no job'}; once more kills them "
                     "(their attempts count)")
        elif self.signals == KILL_AFTER_SIGNALS:
            self.log(f"{name}: killing the running jobs")
        for pid in list(self.children):
            _signal(pid, signal.SIGTERM)

    def _running(self) -> str:
        try:
            mine = [w for w in self.spool.owners.workers(role="worker") if w.extra.get("supervisor") == os.getpid()]
        except Exception:  # a signal handler must not fail: this is only a message
            return "(cannot tell)"
        return ", ".join(f"job {job} (worker pid {w.pid})" for w in mine for job in w.jobs)

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        self.token = self._register()
        signal.signal(signal.SIGALRM, self._heartbeat)
        self._heartbeat()
        if self.count > 1:
            self.shared = SharedListing.create()
            locks.load_before_forking()
        began, began_at = time.monotonic(), time.time()
        try:
            self._recover()
            for _ in range(self.count):
                self._spawn()
            if os.environ.get("NOTIFY_SOCKET"):
                self._ready_at = time.monotonic() + READY_WITHIN
                signal.setitimer(signal.ITIMER_REAL, READY_POLL)  # look soon, not a heartbeat from now
            while self.children:
                self._reap_one()
        finally:
            if not self.signals:
                sd_notify("STOPPING=1")  # a stop no signal began (a stop request, the end of a burst)
            signal.setitimer(signal.ITIMER_REAL, 0)
            unregister(self.spool, self.token, self.log)  # (a spool gone read-only: said, its lease runs out)
            if self.shared is not None:
                self.shared.close()
        if self.burst:
            self.log(self._tally(began_at).summary(time.monotonic() - began))
        return 1 if self.failed else 0

    def _tally(self, since: float) -> Tally:
        """The attempts its workers logged since the burst began (their owner tokens hold their pids)."""
        host, pids = layout.host_name(), {str(pid) for pid in self.spawned}
        facts = [f for f in attempts_log.read(self.spool.layout.dir("events"), since - 1)
                 if f.host == host and f.claimed >= since - 1 and _pid_of(f.worker) in pids]
        return Tally(facts)

    def _announce_ready(self) -> None:
        """Tell a service manager (sd_notify) once this start's workers have all registered, or
        once READY_WITHIN has passed (a worker that cannot start is said in the log)."""
        if self._ready_at is None or not os.environ.get("NOTIFY_SOCKET"):
            return
        mine = [w for w in self.spool.owners.workers(role="worker") if w.extra.get("supervisor") == os.getpid()]
        if len(mine) >= self.count or time.monotonic() >= self._ready_at:
            self._ready_at = None
            root = self.spool.root.replace("\n", " ")  # one field a line: a newline in a path is not a new field
            sd_notify(f"READY=1\nSTATUS={len(mine)} of {self.count} workers running on {root}")

    def _register(self) -> str:
        self.lease = self.spool.config.lease_timeout
        try:
            return self.spool.owners.register("supervisor", workers=self.count, lease=self.lease)
        except OSError as e:  # a read-only or full spool: said as what could not be done
            raise io_error("cannot start the workers", e) from None

    def _heartbeat(self, *_args: object) -> None:
        """SIGALRM: touch the registration, or after its lease any sweep takes this live
        supervisor for dead, and the processing/<token>~<dead> of a rescue in progress with it.
        A timer, not a thread: the supervisor forks. A new lease_timeout is recorded at the next
        beat (up to 5 s later): until then its registration is judged by the lease it records."""
        try:
            lease = self.spool.config.lease_timeout
            self.spool.owners.heartbeat(self.token, lease if lease != self.lease else None)
            self.lease = lease
            interval = beat_interval(lease)
            if self._ready_at is not None:
                self._announce_ready()
                interval = min(interval, READY_POLL) if self._ready_at is not None else interval
        except Exception:
            interval = 1.0
        signal.setitimer(signal.ITIMER_REAL, interval)

    def _spawn(self) -> None:
        # RACE: a stop signal passed on to a worker just forked would otherwise run the
        # supervisor's handler in it (inherited until the worker installs its own) and be lost:
        # the worker would never stop. Held across the fork, it reaches the worker's handler.
        held = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM}
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        pid = os.fork()
        if pid:
            # RACE: a stop signal held across the fork runs its handler as soon as the mask is
            # restored: the new worker must be among the children it passes the signal on to by
            # then, or it would never hear of the stop (chaos.py caught one running on for good).
            self.children[pid] = Child(pid, time.monotonic())
            self.spawned.add(pid)
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            return
        if pid == 0:
            code = 1
            try:
                for signum in held:
                    signal.signal(signum, signal.SIG_DFL)
                os.environ.pop("NOTIFY_SOCKET", None)  # the supervisor speaks to the service manager, not its jobs
                worker = Worker(self.spool, burst=self.burst, log=self._log, supervisor=os.getppid(),
                                allow_unsafe_fs=self.allow_unsafe_fs, since=self.since, shared=self.shared,
                                queues=self.queues, job_lines=self.job_lines, slots=self.slots)
                worker.install_signal_handlers()
                signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
                code = worker.run()
            except CannotStart as e:
                self._log(f"worker {os.getpid()}: cannot start: {e}")
                code = EXIT_CANNOT_START
            except BaseException as e:  # a worker must never take its supervisor's code path
                try:
                    import traceback
                    self._log(f"worker {os.getpid()}: crashed: {type(e).__name__}: {e}\n{traceback.format_exc()}")
                except BaseException:
                    pass
            finally:
                os._exit(code)

    def _reap_one(self) -> None:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            self.children.clear()
            return
        except InterruptedError:
            return
        child = self.children.pop(pid, None)
        if child is None:
            return
        code = os.waitstatus_to_exitcode(status)
        if code == 0:
            return  # stopped on request, or a burst found nothing more to do
        if code == EXIT_SIGNALLED:
            if not self._stop_wanted():
                self.log(f"worker pid {pid} was stopped by a signal of its own; starting another")
                self._spawn()  # the pool keeps its size: stopping all of it is `worker stop`'s
            return
        if code == EXIT_UNSAFE or (code == EXIT_CANNOT_START and self.burst):
            self.failed = True  # starting more would fail the same way (a burst has no later)
            self.stopping = True
            self.log(f"worker pid {pid} could not go on; stopping the others after their jobs")
            for other in list(self.children):
                _signal(other, signal.SIGTERM)
            return
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else \
            "stopped: it lost the spool's file system or ran out of open files (it says why)" \
            if code == EXIT_UNREACHABLE else f"exited with status {code}"
        self.log(f"worker pid {pid} {how}")
        self._recover()
        if self._stop_wanted():
            return
        if code != -signal.SIGKILL:
            # SIGKILL comes from outside (OOM killer, operator, a job killing its worker): the job's
            # attempt count and backoff bound that loop, and pacing would leave the queue unserved.
            self._pace(child)
        if self._stop_wanted():
            return  # a stop arrived while we paced: a worker spawned now would never be told
        self._spawn()

    def _stop_wanted(self) -> bool:
        return self.stopping or self.spool.owners.stop_requested(self.since) is not None

    def _pace(self, child: Child) -> None:
        """Workers that die young are restarted with a growing delay, so a crash loop cannot spin."""
        if time.monotonic() - child.started < RESTART_WINDOW:
            self._quick_deaths += 1
        else:
            self._quick_deaths = 0
        delay = min(0.05 * (2 ** min(self._quick_deaths, 7)), 5.0) if self._quick_deaths > 1 else 0.0
        if delay:
            time.sleep(delay)

    def _recover(self) -> None:
        try:
            owners = self.spool.owners
            if not owners.heartbeat(self.token):  # declared dead elsewhere (frozen past its lease)
                old, self.token = self.token, self._register()
                owners.unregister(old)
            for recovered in self.spool.recovery.run(self.token):
                self.log(str(recovered))
        except (OSError, SpoolError) as e:  # LostOwnership: another rescuer fenced this one
            self.log(f"recovery failed: {e}")


def _pid_of(owner: str) -> str:
    """The pid in an owner token (<host>-<pid>-<random>), or ''."""
    parts = owner.rsplit("-", 2)
    return parts[1] if len(parts) == 3 else ""


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def running_here(spool: Spool, queues: frozenset[str] | None) -> tuple[int, bool] | None:
    """The pid of a supervisor on this host whose live workers take jobs from `queues` (None:
    from every queue), and whether it still is (their parent: a pid alive is not enough, it may
    have been given to another process since the supervisor was killed), or None: a second
    `worker start --detach` would start a second set."""
    host = layout.host_name()
    for worker in spool.workers(role="worker"):
        theirs, pid = worker.extra.get("queues"), worker.extra.get("supervisor")
        if worker.host == host and isinstance(pid, int) and (frozenset(theirs) if theirs else None) == queues:
            return pid, supervised_by(worker) == pid
    return None


def supervised_by(worker: WorkerInfo) -> int | None:
    """The pid of the supervisor a worker of this host registered, while it still is: the
    worker's parent (a pid alive is not enough: a killed supervisor's is given to another process
    in time); None once its supervisor is gone, or for a worker started without one."""
    pid = worker.extra.get("supervisor")
    return pid if isinstance(pid, int) and liveness.parent_of(worker.pid) == pid else None


def signalled_here(workers: list[WorkerInfo]) -> list[int]:
    """The pids to signal to stop these workers of this host, where a stop request cannot be
    written: each one's supervisor, which stops its pool; a worker whose supervisor is gone
    (killed: the worker's parent is no longer the pid its registration names), the worker itself."""
    host = layout.host_name()
    return sorted({supervised_by(w) or w.pid for w in workers if w.host == host})


def detach(spool: Spool, count: int, *, burst: bool, since: StartedAt | None, allow_unsafe_fs: bool = False,
           queues: frozenset[str] | None = None, log: Callable[[str], None] = text_log, slots: int = 1) -> int:
    """Start a supervisor in the background, its output appended to log/worker-<host>.log.
    Returns the supervisor's pid once it is forked; the caller waits for its workers."""
    log_path = spool.worker_log()
    try:  # here, where a refusal can be said: a fifo put there must not hang the start either
        fd = fsio.open_append(log_path, spool.store.modes.file)
    except OSError as e:
        raise SpoolError(f"cannot write the workers' log {log_path}: {e.strerror}") from None
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(fd)
        os.close(write_end)
        data = os.read(read_end, 64)
        os.close(read_end)
        os.waitpid(pid, 0)
        return int(data or b"0")
    # First child: new session, fork again so the supervisor is never a session leader.
    os.close(read_end)
    os.setsid()
    pid2 = os.fork()
    if pid2:
        os.write(write_end, str(pid2).encode())
        os._exit(0)
    os.close(write_end)
    code = 1
    try:
        fsio.exact_mode(fd, spool.store.modes.file)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        os.close(null)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        os.chdir("/")
        code = Supervisor(spool, count, burst=burst, since=since, allow_unsafe_fs=allow_unsafe_fs, queues=queues,
                          log=log, slots=slots).run()
    finally:
        os._exit(code)
