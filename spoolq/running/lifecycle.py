"""A worker's start and end, around its loop: what it says wakes it, how it is told to stop, the
exit statuses its supervisor acts on, a spool's file system failing under it, and leaving the
registry."""

from __future__ import annotations

import errno
import resource
import signal
import time
from typing import Callable

from ..spool import Spool
from ..format.errors import SpoolError
from ..store import trust
from ..store.owners import StartedAt
from ..system import disk_full, mounts, watch
from .slot_threads import FILES_A_SLOT

KILL_AFTER_SIGNALS = 3  # the third stop signal kills the running jobs (their attempts count)
LOOK_EVERY = 0.25  # seconds between looks for a `worker stop --now`, whatever the number of running jobs

EXIT_SIGNALLED = 75  # stopped by a signal to this worker alone: its supervisor starts another
EXIT_UNSAFE = 77  # the spool stopped being safe to use: its supervisor stops too
EXIT_CANNOT_START = 78  # it could not register (a full disk, no inodes): not worth a traceback
EXIT_UNREACHABLE = 74  # the spool's file system failed under it (ENOTCONN, EIO), or it ran out of open
                       # files (EMFILE, ENFILE): its supervisor starts another
OUT_OF_FILES = (errno.EMFILE, errno.ENFILE)  # the worker's own limit (ulimit -n), or the system's: not the spool's


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




def still_safe(spool: Spool) -> str | None:
    """Why the spool is no longer safe to use (a directory swapped or opened up since the worker
    started, the spool moved away or deleted: Store.root_moved), or None. A mount out of reach
    (ENOTCONN, EIO: its directories "cannot be looked at") is no one's doing: raised as the
    OSError it is, the spool lost (unless_unreachable), so that its supervisor starts another once
    it is back, rather than said unsafe for good."""
    moved = spool.store.root_moved()
    if moved:
        return moved
    try:
        spool.store.check_safe()
    except SpoolError as e:
        if trust.CANNOT_LOOK in str(e):
            raise OSError(errno.EIO, str(e)) from None
        return str(e)
    return None


def unless_unreachable(loop: Callable[[], None], log: Callable[[str], None]) -> bool:
    """Run the worker's loop: False if the spool's file system failed under it (a host cut off
    from a shared spool: ENOTCONN, EIO), or the worker ran out of open files (a job's slot among
    many), said in one line, no traceback; its supervisor starts another, which waits for the
    spool to come back."""
    try:
        loop()
    except OSError as e:
        if e.errno in OUT_OF_FILES:
            log(f"out of open files ({disk_full.in_words(e)}; this worker may hold "
                f"{resource.getrlimit(resource.RLIMIT_NOFILE)[0]}, a running job {FILES_A_SLOT}): stopping "
                "(its supervisor starts another); raise `ulimit -n` or run fewer --slots")
        else:
            log(f"the spool's file system failed: {disk_full.in_words(e)}; stopping (its supervisor starts another "
                "once the spool can be reached)")
        return False
    return True


def unregister(spool: Spool, owner: str, log: Callable[[str], None] | None) -> None:
    """Leave the registry (`log`: None when the spool is known to be out of reach)."""
    try:
        spool.owners.unregister(owner)
    except OSError as e:  # its lease runs out: a worker on any host cleans up after it
        if log is not None:
            log(f"cannot unregister: {disk_full.in_words(e)}")


class CannotStart(Exception):
    """A worker could not begin (its registration could not be written, the spool is unsafe)."""


class Stops:
    """How a worker is told to stop: by signals (the first stops it after its running jobs, the
    third kills them), or by `worker stop` (from any host: a request in the spool; --now kills
    the running jobs too)."""

    def __init__(self, spool: Spool, since: StartedAt, poke: Callable[[], None], log: Callable[[str], None]):
        self.spool = spool
        self.since = since  # when the worker's command began: a stop request from then on is for it
        self.poke = poke  # wakes the worker's loop
        self.log = log
        self.stopping = False
        self.unsafe = False  # stopped because the spool is no longer safe to use (unsafe_now)
        self.signals = 0  # stop signals received
        self._now = (-LOOK_EVERY, False)  # when `worker stop --now` was last looked for, and what was found

    def unsafe_now(self) -> bool:
        """Stop, said in one line, if the spool is no longer safe to use (still_safe: a directory
        swapped or opened up, the spool moved away or deleted; never going on in a new one)."""
        unsafe = still_safe(self.spool)
        if unsafe:
            self.log(f"{unsafe}; stopping")
            self.unsafe = self.stopping = True
        return unsafe is not None

    def request(self, *_args: object) -> None:
        """A stop signal (a signal handler)."""
        self.stopping = True
        self.signals += 1
        self.poke()  # an idle worker stops now, not at its next rescan

    def install_signal_handlers(self, supervised: bool) -> None:
        signal.signal(signal.SIGTERM, self.request)
        signal.signal(signal.SIGHUP, self.request)
        # Under a supervisor, Ctrl+C reaches the supervisor, which passes each one on as a
        # SIGTERM: counted once here, not twice.
        signal.signal(signal.SIGINT, signal.SIG_IGN if supervised else self.request)

    def requested(self) -> bool:
        """Has `worker stop` asked this worker to stop? Said once in its log."""
        if self.spool.owners.stop_requested(self.since) is None:
            return False
        self.log("stop requested")
        return True

    def kill_reason(self) -> str | None:
        """Why to kill the running jobs now, if a stop says so. Asked by every running job twice
        a second: the spool's stop request is looked at once for all of them (LOOK_EVERY)."""
        if self.signals >= KILL_AFTER_SIGNALS:
            return f"killed: its worker was stopped by {self.signals} signals"
        # RACE: slots may ask at the same moment: each may look, and each finds the same answer.
        looked_at, now_killing = self._now
        if time.monotonic() - looked_at >= LOOK_EVERY:
            request = self.spool.owners.stop_requested(self.since)
            looked_at, now_killing = self._now = (time.monotonic(), request is not None and request.kill_jobs)
        return "killed: `worker stop --now`" if now_killing else None
