"""Hooks: a shell command (config on_done, on_dead, on_failure) the worker runs after it has
recorded an attempt's outcome, told about the job by environment variables. A hook runs in a
thread of its own, so it never holds up the next claim; it has hook_timeout seconds (then its
process group is killed); its output and a failing status go to the worker's log; it is never
retried. It runs after the transition, so a hook that fails cannot change what happened."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Callable

from ..format.states import State
from ..system import fsio
from ..store.attempts_log import FinishedAttempt
from ..spool import Spool
from .attempt import spool_env

if TYPE_CHECKING:
    import subprocess

SETTING = {State.DONE: "on_done", State.DEAD: "on_dead", "retry": "on_failure"}
MAX_RUNNING = 16  # hooks at once per worker; beyond, a hook is skipped and said to be
MAX_OUTPUT = 64 * 1024  # of a hook's output kept for the log; the rest is read and dropped


class Hooks:
    def __init__(self, spool: Spool, log: Callable[[str], None]):
        self.spool = spool
        self.log = log
        self.running: list[threading.Thread] = []

    def after(self, fact: FinishedAttempt, state: str) -> None:
        """Start the hook for this outcome, if one is set (`state`: where the job is now)."""
        setting = SETTING.get(fact.outcome)
        command = getattr(self.spool.config, setting) if setting else ""
        if not command:
            return
        self.running = [t for t in self.running if t.is_alive()]
        if len(self.running) >= MAX_RUNNING:
            self.log(f"hook {setting} for job {fact.id} skipped: {MAX_RUNNING} hooks are still running")
            return
        env = {**os.environ, "SPOOLQ_JOB_ID": fact.id, "SPOOLQ_STATE": state,
               "SPOOLQ_EXIT_CODE": "" if fact.exit_code is None else str(fact.exit_code),
               "SPOOLQ_ATTEMPT": str(fact.attempt), "SPOOLQ_LAST_ERROR": fact.error or "",
               "SPOOLQ_QUEUE": fact.queue, **spool_env(self.spool.root)}
        thread = threading.Thread(target=self._run, args=(f"{setting} for job {fact.id}", command, env,
                                                          float(self.spool.config.hook_timeout)), daemon=True)
        thread.start()
        self.running.append(thread)

    def wait(self) -> None:
        """At the worker's exit: let the running hooks end (each is bounded by its timeout)."""
        for thread in self.running:
            thread.join()

    def _run(self, what: str, command: str, env: dict[str, str], timeout: float) -> None:
        import subprocess  # only where a hook is set: most workers never start one

        try:
            # cwd given: the worker steps into a job's directory around each spawn (runner.spawn), and
            # a hook started in that moment would run there.
            proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=self.spool.root)
        except OSError as e:
            self.log(f"hook {what}: cannot start: {e.strerror}")
            return
        deadline = time.monotonic() + timeout
        output, timed_out = _read_until(proc, deadline)
        if not timed_out:  # its output closed: it may still run (it closed it on purpose)
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
        if timed_out:
            _kill_group(proc.pid)
        status = proc.wait()
        for line in output.decode(errors="replace").splitlines():
            self.log(f"hook {what}: {line}")
        if timed_out:
            self.log(f"hook {what}: timed out after {timeout:g}s; its process group was killed")
        elif status != 0:
            self.log(f"hook {what}: exit status {status}" if status > 0 else f"hook {what}: killed by {_signal_name(-status)}")


def _read_until(proc: subprocess.Popen, deadline: float) -> tuple[bytes, bool]:
    """The hook's output (at most MAX_OUTPUT) until it closes it, or True once the deadline passed."""
    assert proc.stdout is not None
    fd, kept = proc.stdout.fileno(), bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            proc.stdout.close()
            return bytes(kept), True
        if not fsio.readable([fd], left):
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            proc.stdout.close()
            return bytes(kept), False
        kept += chunk[: max(0, MAX_OUTPUT - len(kept))]


def _signal_name(number: int) -> str:
    try:
        return f"signal {signal.Signals(number).name}"
    except ValueError:  # a real-time signal has no name
        return f"signal {number}"


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
