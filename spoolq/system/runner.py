"""Running one command: its own process group, a timeout, its output through a pipe, an exit status.

A job's processes are its process group. When its shell exits, whatever is left in the group is
killed too (SIGKILL), as CI runners do, unless the job asked to keep them (`keep_children`); a
timeout or an abort sends the group SIGTERM, then SIGKILL after KILL_GRACE; a process that left the group on purpose (setsid, a daemon) is
never the job's any more and is never touched. Output goes through a pipe that the worker
copies into the job's log, so its cap holds while the job runs; when the attempt ends the pipe
is closed, and a kept child writing to it gets EPIPE.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Callable

from . import direct_exec, fsio

KILL_GRACE = 1.0  # seconds between SIGTERM and SIGKILL of a job's process group
DRAIN_AFTER_KILL = 0.2  # seconds to wait for the output pipe to close once the group is killed
SHELL = "/bin/sh"
DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
CHUNK = 65536
_STEPPING_IN = threading.Lock()  # held around a chdir for a spawn: the one working directory is the process's


@dataclass
class Outcome:
    ok: bool
    exit_code: int | None
    error: str | None
    seconds: float
    output_bytes: int = 0  # what the job wrote, before any cap (set by attempt.run)
    output_lost: str | None = None  # why none of it could be kept (set by attempt.run)


def run(command: str, *, cwd: str | None, env: dict[str, str], timeout: float | None,
        output: Callable[[bytes], object], should_abort: Callable[[], str | None] = lambda: None,
        keep_children: bool = False, shell: bool = False, on_spawn: Callable[[int], object] = lambda pid: None,
        poll: float = 0.5) -> Outcome:
    """Run `command` (directly, or with /bin/sh: see spawn) in a new session; its stdout and
    stderr, as they come, go to `output`. `should_abort` is asked every `poll` seconds: a reason
    kills the group and ends it. `on_spawn` hears the leader's pid (the group's id) as soon as it
    runs."""
    started = time.monotonic()
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        pid = spawn(command, cwd=cwd, env=env, out_fd=write_end, shell=shell)
    except OSError as e:
        os.close(read_end)
        what = f"cwd {cwd!r}" if cwd and (e.filename == cwd or not os.path.isdir(cwd)) else SHELL  # chdir's, or exec's
        return Outcome(False, None, f"cannot start: {what}: {e.strerror}", time.monotonic() - started)
    finally:
        os.close(write_end)
    job = _Running(pid, read_end, output)
    try:
        try:
            on_spawn(pid)
            deadline = started + timeout if timeout else None
            why = job.wait(deadline, should_abort, poll, timeout)
        except BaseException:  # the worker cannot watch the job any more: it must not run on unwatched
            job.kill()
            raise
        job.end(terminate=why is not None, kill_children=not keep_children)
        if why is not None:
            return Outcome(False, None, why, time.monotonic() - started)
        return _outcome(job.status, time.monotonic() - started)
    finally:
        job.close()


class _Running:
    """One spawned job: its leader's pid (reaped only once its group has been dealt with, so
    that the pid, and with it the group id, cannot be reused meanwhile), and its output pipe."""

    def __init__(self, pid: int, read_end: int, output: Callable[[bytes], object]):
        self.pid = pid
        self.read_end: int | None = read_end
        self.output = output
        self.pidfd = _pidfd(pid)
        self.status = 0

    def wait(self, deadline: float | None, should_abort: Callable[[], str | None], poll: float,
             timeout: float | None) -> str | None:
        """Until the leader exits (None), or a reason to kill the job arises (returned)."""
        next_check = time.monotonic() + poll
        while True:
            until = next_check if deadline is None else min(next_check, deadline)
            if self.pump(until):
                return None
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return f"timed out after {timeout:g}s; its process group was killed"
            if now >= next_check:
                next_check = now + poll
                abort = should_abort()
                if abort:
                    return abort

    def pump(self, until: float) -> bool:
        """Copy output until the leader exits (True) or `until` (False)."""
        while True:
            wait = max(0.0, until - time.monotonic())
            if self.pidfd is None:
                wait = min(wait, 0.01)  # no pidfd (Linux < 5.3): look at the leader often
            watched = [fd for fd in (self.pidfd, self.read_end) if fd is not None]
            ready = fsio.readable(watched, wait)
            if self.read_end is not None and self.read_end in ready:
                self._read()
            if self._leader_exited(self.pidfd in ready if self.pidfd is not None else None):
                return True
            if time.monotonic() >= until:
                return False

    def end(self, *, terminate: bool, kill_children: bool) -> None:
        """End the attempt: stop the leader if it must go (SIGTERM to its group, SIGKILL after
        KILL_GRACE), then what is left of its group, then reap the leader."""
        if terminate:
            self._signal_group(signal.SIGTERM)
            self.pump(time.monotonic() + KILL_GRACE)
        if terminate or kill_children:
            self._signal_group(signal.SIGKILL)
            self._drain(time.monotonic() + DRAIN_AFTER_KILL)
        else:
            self._drain(time.monotonic())  # what is in the pipe now; kept children write on
        self.status = os.waitpid(self.pid, 0)[1]

    def kill(self) -> None:
        """SIGKILL the group, then reap the leader: nothing of the job is left to watch."""
        self._signal_group(signal.SIGKILL)
        os.waitpid(self.pid, 0)

    def _drain(self, until: float) -> None:
        """Copy what is left in the pipe, until every writer has closed it or `until`: a process
        that left the group without closing its stdout must not hold the worker up."""
        while self.read_end is not None:
            if not fsio.readable([self.read_end], max(0.0, until - time.monotonic())):
                return
            self._read()

    def _signal_group(self, signum: int) -> None:
        # RACE: the leader is not reaped yet, so its pid (the group's id) cannot be reused: the
        # signal reaches this job's group or, once every member is gone, no one (ESRCH).
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def _leader_exited(self, pidfd_ready: bool | None) -> bool:
        if pidfd_ready is not None:
            return pidfd_ready
        if self.pidfd is not None:
            return bool(fsio.readable([self.pidfd], 0))
        try:  # without reaping: the pid stays reserved until end_group
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def _read(self) -> None:
        assert self.read_end is not None
        data = os.read(self.read_end, CHUNK)
        if data:
            self.output(data)
        else:  # every writer has closed it
            os.close(self.read_end)
            self.read_end = None

    def close(self) -> None:
        for fd in (self.read_end, self.pidfd):
            if fd is not None:
                os.close(fd)
        self.read_end = self.pidfd = None


def _outcome(status: int, seconds: float) -> Outcome:
    code = os.waitstatus_to_exitcode(status)
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


def spawn(command: str, *, cwd: str | None, env: dict[str, str], out_fd: int, shell: bool = False) -> int:
    """Start `command` as the leader of a new session (so of its own process group), stdin from
    /dev/null, stdout and stderr to `out_fd`: directly when the shell would only split it into
    words (direct_exec.py), else, or when `shell` is asked for, as `/bin/sh -c command`. Returns its pid.

    posix_spawn (vfork underneath) costs the worker a fraction of what subprocess does per job;
    it has no chdir action before Python 3.13, so the worker steps into `cwd` around the call
    and back by a descriptor of where it was (its own directory may have been deleted: a name
    would fail). Its own paths are all absolute. Linux with glibc 2.26+ has POSIX_SPAWN_SETSID."""
    if not cwd:
        pid = None if shell else _spawn_direct(command, env, out_fd)
        return pid if pid is not None else _posix_spawn(SHELL, [SHELL, "-c", command], env, out_fd)
    # RACE: the directory is the process's, not the thread's: a worker's slots (its threads) step
    # into their jobs' directories one at a time, and every other path the worker uses is absolute.
    with _STEPPING_IN:
        here = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.chdir(cwd)
            pid = None if shell else _spawn_direct(command, env, out_fd, cwd)
            return pid if pid is not None else _posix_spawn(SHELL, [SHELL, "-c", command], env, out_fd)
        finally:
            os.fchdir(here)
            os.close(here)


def _spawn_direct(command: str, env: dict[str, str], out_fd: int, cwd: str | None = None) -> int | None:
    """The pid of `command` started without a shell, or None: the shell must run it (it needs
    the shell, or it could not be started, and the shell will say why in its own words). `cwd`:
    where the worker just stepped (None: it stayed)."""
    argv = direct_exec.words(command) if direct_exec.shell_is_dash(SHELL) else None
    if argv is None:
        return None
    program = direct_exec.find(argv[0], env)
    exec_env = direct_exec.environment(env, cwd) if program else None
    if program is None or exec_env is None:
        return None
    try:
        return _posix_spawn(program, argv, exec_env, out_fd)
    except OSError:
        return None


def _posix_spawn(program: str, argv: list[str], env: dict[str, str], out_fd: int) -> int:
    # SIGPIPE and SIGXFSZ back to their defaults (Python ignores both, and an ignored signal
    # stays ignored across exec: `yes | head -1` would end in a write error), no signal blocked.
    return os.posix_spawn(program, argv, env, setsid=True, setsigdef=DEFAULT_SIGNALS, setsigmask=(),
                          file_actions=[
                              (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                              (os.POSIX_SPAWN_DUP2, out_fd, 1),
                              (os.POSIX_SPAWN_DUP2, out_fd, 2),
                          ])


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
    where polling with waitid(WNOHANG) would sleep between looks."""
    try:
        return os.pidfd_open(pid)  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return None
