"""What one job costs a worker: the system calls of a burst, counted by strace, held under a bound
measured on this code (so the per-job path cannot drift back), and the lease guard, which is no
longer woken at every job's start and end, still stopping a job in time."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import SPOOLQ, strace_path, wait_for
from spoolq import Spool
from spoolq.running.heartbeat import Heartbeat, clock
from spoolq.system import liveness

# System calls a `true` job costs a burst worker whose stderr is a file, run where its jobs were
# enqueued (its threads, not the job's own process): 56-57 measured on a quiet machine, up to
# 58.8 beside other tests on both cores (claim, read, spawn, wait, finish, attempts log, job
# lines, and one lstat for an earlier run's log: attempt.py); 62-64 while every job made an
# output log, silent or not (open, lseek, header, footer, close); 79 while the lease guard was
# woken at every job's start and end, each job line looked first whether stderr could take it,
# the output log's footer asked for its offset, and PWD was compared with the job's directory by
# two stats.
CALLS_A_JOB = 61


def _enqueue(spool_dir: str, n: int, tmp_path) -> None:
    """n `true` jobs, enqueued in the directory the spool is in (so their cwd is that)."""
    batch = tmp_path / f"batch-{n}.jsonl"
    batch.write_text("".join(json.dumps({"id": f"j{i:05d}", "command": "true"}) + "\n" for i in range(n)))
    subprocess.run([*SPOOLQ, "--spool", spool_dir, "enqueue", "--batch", str(batch)], check=True,
                   capture_output=True, cwd=os.path.dirname(spool_dir))


def _here(spool_dir: str) -> dict[str, object]:
    """Run in the directory the jobs were enqueued in, as a shell started there would (PWD)."""
    here = os.path.dirname(spool_dir)
    return {"cwd": here, "env": {**os.environ, "PWD": here}}


def _worker_calls(spool_dir: str, out_dir: str) -> int:
    """System calls of a `worker start --burst` (supervisor, worker and their threads), leaving
    out the jobs' own processes (each a file that execs `true`)."""
    os.makedirs(out_dir)
    with open(os.path.join(out_dir, "stderr"), "wb") as stderr:  # a log file, as a service has it
        subprocess.run([strace_path(), "-ff", "-o", os.path.join(out_dir, "t"), *SPOOLQ, "--spool", spool_dir,
                        "worker", "start", "--burst"], check=True, stdout=subprocess.DEVNULL, stderr=stderr,
                       timeout=300, **_here(spool_dir))
    true = shutil.which("true")
    total = 0
    for path in glob.glob(os.path.join(out_dir, "t.*")):
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
        if any(line.startswith(f'execve("{true}"') for line in lines):
            continue  # a job
        total += sum(1 for line in lines if not line.startswith(("+++", "---")))
    return total


@pytest.mark.slow
def test_a_job_in_a_burst_costs_its_worker_a_bounded_number_of_system_calls(tmp_path):
    """The difference between a burst of 250 jobs and one of 50 is what 200 jobs cost: start-up,
    registration and leaving cancel out."""
    strace_path()
    counts = {}
    for n in (50, 250):
        spool_dir = str(tmp_path / f"spool-{n}")
        _enqueue(spool_dir, n, tmp_path)
        counts[n] = _worker_calls(spool_dir, str(tmp_path / f"trace-{n}"))
        assert len(os.listdir(os.path.join(spool_dir, "done"))) == n
    per_job = (counts[250] - counts[50]) / 200
    assert per_job <= CALLS_A_JOB, f"{per_job:.1f} system calls a job (bound {CALLS_A_JOB}): {counts}"


def _sleeper() -> tuple[subprocess.Popen, tuple[int, tuple[int, int]]]:
    """A process leading a group of its own, and the group as a worker records it."""
    before = liveness.ticks_now()
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    return proc, (proc.pid, (before, liveness.ticks_now()))


def test_the_lease_guard_stops_a_job_that_began_while_it_was_not_woken(spool: Spool):
    """A job that ended and the next one that began are not told to the guard thread (it looks
    again by its stop time anyway): the next job is still stopped before the lease can run out."""
    heartbeat = Heartbeat(spool, lambda message: None)
    heartbeat.start(lambda lease: "nobody")  # no registration: the lease is never renewed
    first, first_group = _sleeper()
    second, second_group = _sleeper()
    try:
        lease = heartbeat._renewed[1]
        with heartbeat._guarding:  # renewed long ago: SIGTERM due in about a second
            heartbeat._renewed = (clock() - lease + 3.0, lease)
        heartbeat.guard(0, first_group)  # wakes the guard: it waits until the stop time
        wait_for(lambda: not heartbeat._asleep, 5, "the guard to wait with a time limit")
        first.kill()
        first.wait()
        heartbeat.guard(0, None)
        heartbeat.guard(0, second_group)  # not woken for this one
        started = time.monotonic()
        wait_for(lambda: second.poll() is not None, 10, "the guard to stop the second job")
        assert second.returncode == -signal.SIGTERM
        assert time.monotonic() - started < 3.0
        assert heartbeat.why_stopped(None) and "could not renew its lease" in heartbeat.why_stopped(None)
    finally:
        heartbeat.stop()
        for proc in (first, second):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.slow
def test_job_lines_go_whole_to_a_log_file_and_are_dropped_by_a_full_pipe(tmp_path):
    """stderr a file: a line for every job claimed and finished, none dropped (no look first).
    stderr a pipe nobody reads: the lines it cannot take are dropped and counted, never waited for."""
    n = 100
    pipe_jobs = 500  # some 90 kB of lines: more than a pipe holds (64 kB)
    file_spool, pipe_spool = str(tmp_path / "to-file"), str(tmp_path / "to-pipe")
    _enqueue(file_spool, n, tmp_path)
    _enqueue(pipe_spool, pipe_jobs, tmp_path)
    log = tmp_path / "worker.log"
    with open(log, "wb") as stderr:
        subprocess.run([*SPOOLQ, "--spool", file_spool, "worker", "start", "--burst"], check=True,
                       stdout=subprocess.DEVNULL, stderr=stderr, timeout=300)
    text = log.read_text()
    assert text.count(" claimed\n") == n and text.count(" finished: exit 0 ") == n, text[-2000:]
    assert "dropped" not in text
    proc = subprocess.Popen([*SPOOLQ, "--spool", pipe_spool, "worker", "start", "--burst"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        done = os.path.join(pipe_spool, "done")
        wait_for(lambda: len(os.listdir(done)) == pipe_jobs, 120, "every job to run, stderr unread")
        said = proc.communicate(timeout=60)[1].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert " job lines dropped: stderr was not read" in said, said[-2000:]


class _Stream:
    """A stderr whose descriptor is `fd`, keeping what is written to it."""

    def __init__(self, fd: int):
        self.fd, self.written = fd, []

    def fileno(self) -> int:
        return self.fd

    def write(self, text: str) -> None:
        self.written.append(text)

    def flush(self) -> None:
        pass


def test_job_lines_to_dev_null_are_not_even_made_and_to_a_file_they_are(monkeypatch, tmp_path):
    from spoolq.running.log_lines import JobLines
    from spoolq.store.attempts_log import FinishedAttempt
    fact = FinishedAttempt("j1", "default", 1, "h", "w", 1.0, 1.0, 1.0, 2.0, "done", 0)
    with open(os.devnull, "w") as null, open(tmp_path / "log", "w") as log:
        for target, lines in ((null, 0), (log, 2)):
            stream = _Stream(target.fileno())
            monkeypatch.setattr("sys.stderr", stream)
            job_lines = JobLines()
            job_lines.claimed("w", "j1", 1)
            job_lines.finished(fact)
            assert len(stream.written) == lines and job_lines.dropped == 0, (target, stream.written)


def test_a_job_started_where_its_worker_was_sees_the_pwd_the_shell_would_show(spool: Spool, tmp_path):
    """PWD that names the job's directory by the very path the worker stepped into is kept with no
    look; reached through a symlink it is still the spelling dash keeps, not the resolved one."""
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    elsewhere = str(tmp_path)
    for job_id, command, cwd in [("direct", "printenv PWD", str(link)), ("shell", "printenv PWD; true", str(link)),
                                 ("other", "printenv PWD", str(real)), ("other-sh", "printenv PWD; true", str(real)),
                                 ("moved", "printenv PWD", elsewhere)]:
        spool.enqueue({"id": job_id, "command": command, "cwd": cwd})
    subprocess.run([*SPOOLQ, "--spool", spool.root, "worker", "start", "--burst", "--quiet"], check=True,
                   capture_output=True, cwd=str(link), env={**os.environ, "PWD": str(link)}, timeout=120)

    def printed(job_id: str) -> str:
        with open(spool.output_path(job_id)) as f:
            return [line for line in f.read().splitlines() if not line.startswith("==>")][0]

    assert printed("direct") == printed("shell") == str(link)
    assert printed("other") == printed("other-sh") == str(link)  # the same directory: dash keeps PWD
    assert printed("moved") == elsewhere
