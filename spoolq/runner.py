"""Running one command: its own process group, a timeout, output to a log file, an exit status."""

from __future__ import annotations

import os
import select
import signal
import time
from dataclasses import dataclass
from typing import Callable

KILL_GRACE = 1.0  # seconds between SIGTERM and SIGKILL of a timed-out group
SHELL = "/bin/sh"


@dataclass
class Outcome:
    ok: bool
    exit_code: int | None
    error: str | None
    seconds: float


def run(command: str, *, cwd: str | None, env: dict[str, str], timeout: float | None, log_fd: int,
        should_abort: Callable[[], str | None] = lambda: None, poll: float = 0.5) -> Outcome:
    """Run `command` with /bin/sh in a new session; stdout and stderr go to `log_fd`.
    `should_abort` is asked every `poll` seconds: a reason kills the job's group and ends it."""
    started = time.monotonic()
    try:
        pid = spawn(command, cwd=cwd, env=env, log_fd=log_fd)
    except OSError as e:
        what = f"cwd {cwd!r}" if cwd and not os.path.isdir(cwd) else SHELL
        return Outcome(False, None, f"cannot start: {what}: {e.strerror}", time.monotonic() - started)
    deadline = started + timeout if timeout else None
    pidfd = _pidfd(pid)
    try:
        while True:
            wait = poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic()))
            status = _wait(pid, pidfd, wait)
            if status is not None:
                break
            abort = should_abort()
            if abort:
                kill_group(pid, pidfd)
                return Outcome(False, None, abort, time.monotonic() - started)
            if deadline is not None and time.monotonic() >= deadline:
                kill_group(pid, pidfd)
                return Outcome(False, None, f"timed out after {timeout:g}s; its process group was killed",
                               time.monotonic() - started)
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return _outcome(os.waitstatus_to_exitcode(status), time.monotonic() - started)


def _outcome(code: int, seconds: float) -> Outcome:
    if code == 0:
        return Outcome(True, 0, None, seconds)
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return Outcome(False, code, f"killed by signal {name}", seconds)
    if code == 127:
        return Outcome(False, code, "exit status 127: command not found", seconds)
    return Outcome(False, code, f"exit status {code}", seconds)


def spawn(command: str, *, cwd: str | None, env: dict[str, str], log_fd: int) -> int:
    """Start `/bin/sh -c command` as the leader of a new session (so of its own process group),
    stdin from /dev/null, stdout and stderr to `log_fd`. Returns its pid.

    posix_spawn (vfork underneath) costs the worker a fraction of what subprocess does per job;
    it has no chdir action before Python 3.13, so the worker steps into `cwd` around the call
    (its own paths are all absolute). Linux with glibc 2.26+ has POSIX_SPAWN_SETSID."""
    here = os.getcwd() if cwd else None
    if cwd:
        os.chdir(cwd)
    try:
        return os.posix_spawn(SHELL, [SHELL, "-c", command], env, setsid=True, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, log_fd, 1),
            (os.POSIX_SPAWN_DUP2, log_fd, 2),
        ])
    finally:
        if here is not None:
            os.chdir(here)


def keep_descriptors_from_jobs() -> None:
    """Mark every descriptor above stderr close-on-exec, once, after the worker's own set-up.

    posix_spawn does not close descriptors one by one as subprocess does: without this a job
    would inherit whatever the worker inherited (a cron's pipes) and watchdog's inotify
    descriptor, which it opens without close-on-exec. Descriptors Python opens later are
    close-on-exec already."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return
    for name in names:
        fd = int(name)
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                continue  # the listing's own descriptor, closed by now


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when the child exits (Linux 5.3+): an exact wake-up,
    where polling with waitpid(WNOHANG) would sleep between looks."""
    try:
        return os.pidfd_open(pid)  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return None


def _wait(pid: int, pidfd: int | None, seconds: float) -> int | None:
    """The child's wait status once it has exited within `seconds`, else None."""
    if pidfd is not None:
        ready, _, _ = select.select([pidfd], [], [], seconds)
        if not ready:
            return None
        return os.waitpid(pid, 0)[1]
    deadline = time.monotonic() + seconds
    pause = 0.0005
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() >= deadline:
            return None
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 0.05)


def kill_group(pid: int, pidfd: int | None = None) -> None:
    """SIGTERM the whole group, then SIGKILL whatever is left after a short grace; reap the leader."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    exited = _wait(pid, pidfd, KILL_GRACE) is not None
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if not exited:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
