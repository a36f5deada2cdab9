"""Running one command: its own process group, a timeout, output to a log file, an exit status."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Callable

KILL_GRACE = 1.0  # seconds between SIGTERM and SIGKILL of a timed-out group


@dataclass
class Outcome:
    ok: bool
    exit_code: int | None
    error: str | None
    seconds: float


def run(command: str, *, cwd: str | None, env: dict[str, str], timeout: float | None, log_fd: int,
        should_abort: Callable[[], bool] = lambda: False, poll: float = 0.5) -> Outcome:
    """Run `command` with /bin/sh in a new session; stdout and stderr go to `log_fd`."""
    started = time.monotonic()
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", command], cwd=cwd or None, env=env,
                                stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                                start_new_session=True, close_fds=True)
    except OSError as e:
        what = f"cwd {cwd!r}" if cwd and not os.path.isdir(cwd) else "/bin/sh"
        return Outcome(False, None, f"cannot start: {what}: {e.strerror}", time.monotonic() - started)
    deadline = started + timeout if timeout else None
    pidfd = _pidfd(proc.pid)
    try:
        while True:
            wait = poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic()))
            code = _wait(proc, pidfd, wait)
            if code is not None:
                break
            if should_abort():
                kill_group(proc)
                return Outcome(False, None, "aborted: this worker lost the job", time.monotonic() - started)
            if deadline is not None and time.monotonic() >= deadline:
                kill_group(proc)
                return Outcome(False, None, f"timed out after {timeout:g}s; its process group was killed",
                               time.monotonic() - started)
    finally:
        if pidfd is not None:
            os.close(pidfd)
    seconds = time.monotonic() - started
    if code == 0:
        return Outcome(True, 0, None, seconds)
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        return Outcome(False, code, f"killed by signal {name}", seconds)
    if code == 127:
        return Outcome(False, code, "exit status 127: command not found", seconds)
    return Outcome(False, code, f"exit status {code}", seconds)


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when the child exits (Linux 5.3+): an exact wake-up,
    where Popen.wait(timeout) polls with sleeps."""
    try:
        return os.pidfd_open(pid)  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return None


def _wait(proc: subprocess.Popen[bytes], pidfd: int | None, seconds: float) -> int | None:
    if pidfd is None:
        try:
            return proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return None
    ready, _, _ = select.select([pidfd], [], [], seconds)
    return proc.wait() if ready else None


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the whole group, then SIGKILL whatever is left after a short grace."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=KILL_GRACE)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
