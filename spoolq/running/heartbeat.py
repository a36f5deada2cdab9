"""A worker's heartbeat: the thread that keeps its lease by touching its registration, and says
whether it can (a worker whose heartbeat fails must not claim: its lease would run out under the
job, and the job would run twice); and the guard that stops the running job before a lease it
could not renew can run out for anyone else (a host cut off from the spool: another host takes
the job back once the lease has run out, and only one copy may run by then). A worker with
several slots has one heartbeat and one guard for all of them: the guard stops every running job."""

from __future__ import annotations

import signal
import threading
import time
from typing import Callable

from ..system import liveness
from ..system.liveness import Group
from ..store.judge import beat_interval
from ..system.runner import KILL_GRACE
from ..spool import Spool

MARGIN = 0.5  # seconds before its lease can run out that a job is killed, whatever its length...
DRIFT = 0.01  # ... and this share of the lease: this host's clock and the file server's may run apart
LOOK = 0.5  # seconds between the guard's looks while a job runs: a host woken from a suspend is seen


def clock() -> float:
    """Seconds on a clock that never stops, not even while this machine is suspended (a lease runs
    on elsewhere meanwhile): CLOCK_BOOTTIME where there is one."""
    return time.clock_gettime(getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC))


def stop_times(renewed_at: float, lease: float) -> tuple[float, float]:
    """When (on clock()) a job must have SIGTERM and SIGKILL if the lease renewed at
    `renewed_at` is renewed no more. A rescuer judges on the file server's clock that the lease
    has run out once `lease` has passed since the registration's mtime, which the server set after
    `renewed_at`: the job is dead MARGIN (and the clocks' drift) before that, having had SIGTERM
    KILL_GRACE (at most an eighth of the lease) earlier still."""
    kill_at = renewed_at + lease - MARGIN - DRIFT * lease
    return kill_at - min(KILL_GRACE, lease / 8), kill_at


class Heartbeat:
    """The thread that touches a worker's registration every heartbeat interval of the lease it
    beats under (a lease set meanwhile is recorded in the registration at once: rescuers judge it
    by that). Whatever goes wrong in one beat (a config.json caught half-written, a full disk, a
    file system out of reach) is logged and tried again at the next; the worker asks `healthy()`
    before each claim and stops claiming while its beats fail, and the guard thread kills the
    process group of every running job (one a slot) before the last lease renewed can run out."""

    def __init__(self, spool: Spool, log: Callable[[str], None]):
        self.spool = spool
        self.log = log
        self.owner = ""
        self.lost = False  # the registration is gone: this owner was declared dead elsewhere
        self._stop = threading.Event()
        self._guarding = threading.Condition()  # guards the four below; notified when one changes
        self._renewed = (clock(), 30.0)  # when the lease was last renewed (before the call), and its length
        self._groups: dict[int, Group] = {}  # slot -> the process group of the job it runs
        self._sent: dict[int, int] = {}  # slot -> the last signal the guard sent its group
        self._stopped: dict[int, str | None] = {}  # slot -> why the guard stopped its job, if it did
        self._failing: str | None = None
        self._asleep = False  # the guard waits with no time limit (no job, or SIGKILL sent): wake it for a job

    def start(self, register: Callable[[float], str]) -> str:
        """Register (`register` under the configured lease, returning the owner token) and beat
        for that owner from then on; its token."""
        lease, renewed_at = self.spool.config.lease_timeout, clock()
        self.owner, self.lost, self._renewed = register(lease), False, (renewed_at, lease)
        threading.Thread(target=self._loop, name="heartbeat", daemon=True).start()
        threading.Thread(target=self._guard, name="lease-guard", daemon=True).start()
        return self.owner

    def stop(self) -> None:
        self._stop.set()
        with self._guarding:
            self._guarding.notify_all()

    def beating(self) -> bool:
        """Healthy, and its last beat worked: the spool answers now."""
        return self._failing is None and self.healthy()

    def healthy(self) -> bool:
        renewed_at, lease = self._renewed
        return clock() - renewed_at < lease / 2

    def running_out(self) -> str | None:
        """Why to stop the running job now: its lease will run out before it can be renewed."""
        renewed_at, lease = self._renewed
        if clock() < stop_times(renewed_at, lease)[0]:
            return None
        return (f"killed: its worker could not renew its lease for {clock() - renewed_at:.1f}s "
                f"(lease {lease:g}s), so another host may take the job back")

    def why_stopped(self, error: str | None, slot: int = 0) -> str | None:
        """A failed attempt's error: the guard's reason if it killed the slot's job, else `error`."""
        with self._guarding:
            return self._stopped.get(slot) or error

    def guard(self, slot: int, group: Group | None) -> None:
        """The process group of the job `slot` runs (None: none now), for the guard to stop in time.
        The guard is woken only when it waits with no time limit: otherwise it looks again by
        its stop time anyway (a wake-up per job boundary is a thread switch per job)."""
        with self._guarding:
            if group is None:
                self._groups.pop(slot, None)
                return
            self._groups[slot] = group
            self._sent.pop(slot, None)
            self._stopped.pop(slot, None)
            if self._asleep:
                self._guarding.notify_all()

    def _loop(self) -> None:
        while not self._stop.wait(0.25):  # 4 looks a second: a lease set meanwhile is recorded at once
            try:
                renewed_at, lease = self._renewed
                now = clock()
                configured = self.spool.config.lease_timeout
                if configured == lease and now - renewed_at < beat_interval(lease):
                    continue
                if not self.spool.owners.heartbeat(self.owner, configured if configured != lease else None):
                    self.lost = True  # no lease to renew: the worker aborts its job and registers anew
                    continue
                with self._guarding:
                    self._renewed = (now, configured)
                    self._guarding.notify_all()
                if self._failing:
                    self.log(f"heartbeat works again (it failed: {self._failing})")
                    self._failing = None
            except Exception as e:  # never let the thread die: a dead heartbeat means a lost lease
                if self._failing is None:
                    self.log(f"heartbeat failed: {type(e).__name__}: {e}; trying again, not claiming meanwhile, "
                             "and the running job is killed before the lease can run out")
                self._failing = f"{type(e).__name__}: {e}"

    def _guard(self) -> None:
        """Kill every running job's group at its stop times (stop_times), unless the lease is
        renewed first. It touches no file: a file system out of reach cannot hold it up."""
        with self._guarding:
            while not self._stop.is_set():
                term_at, kill_at = stop_times(*self._renewed)
                now = clock()
                killed = all(self._sent.get(slot) == signal.SIGKILL for slot in self._groups)
                if killed or now < term_at:
                    # RACE: guard() may change the groups while this waits: a new group wakes an
                    # untimed wait (_asleep: no group, or every one sent SIGKILL), and a timed one
                    # ends by the stop time, which only a renewal (that notifies) moves; a group
                    # gone meanwhile is seen at the next look.
                    self._asleep = killed
                    self._guarding.wait(None if killed else min(term_at - now, LOOK))
                    self._asleep = False
                    continue
                signum = signal.SIGKILL if now >= kill_at else signal.SIGTERM
                reached = self._signal_groups(signum)
                if reached and signum == signal.SIGTERM:
                    whose = "its process group" if reached == 1 else f"the process groups of its {reached} jobs"
                    self.log(f"{self.running_out()}: SIGTERM to {whose}, SIGKILL in {kill_at - now:.1f}s")
                if signum == signal.SIGTERM:
                    self._guarding.wait(min(max(0.0, kill_at - clock()), LOOK))

    def _signal_groups(self, signum: int) -> int:
        """Send `signum` to every running job's group not sent it yet (the guard's lock held);
        how many groups it reached."""
        reached = 0
        for slot, group in self._groups.items():
            if self._sent.get(slot) == signum:
                continue
            self._sent[slot] = signum
            self._stopped[slot] = self.running_out()
            # RACE: the job may end and its leader be reaped at this moment: a new process
            # holding its pid started after the window, and kill_job_group leaves it alone.
            reached += liveness.kill_job_group(*group, signum=signum)
        return reached
