"""bench.py's `slots` rows: many I/O-bound jobs at once on one host. The memory every spoolq
process holds (PSS, so pages shared after the fork count once) while `running` `sleep 1` jobs run
in one worker of that many slots, against the same jobs as one worker process each (`--count`);
and `jobs` `sleep 1` jobs drained `running` at a time by one worker of that many slots, against
`xargs -P<running> -n1 sh -c 'sleep 1'`, pairs in turn."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from typing import Callable


def _tree(root: int) -> list[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        children.setdefault(int(data[data.rfind(b")") + 2:].split()[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    except (OSError, StopIteration):
        return 0


def _spool(tmp: str, spoolq: list[str], n: int, command: str) -> str:
    spool_dir = tempfile.mkdtemp(dir=tmp, prefix="slots-")
    lines = "".join(json.dumps({"command": command}) + "\n" for _ in range(n))
    subprocess.run([*spoolq, "--spool", spool_dir, "enqueue", "--batch", "-"], input=lines.encode(),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return spool_dir


def peak_pss(tmp: str, spoolq: list[str], running: int, worker_args: list[str], command: str) -> tuple[float, int]:
    """MB of PSS of every spoolq process of one `worker start --burst` (the jobs' own processes
    left out) at the moment the most jobs ran at once, and how many ran then."""
    spool_dir = _spool(tmp, spoolq, running, command)
    proc = subprocess.Popen([*spoolq, "--spool", spool_dir, "worker", "start", "--burst", *worker_args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    best = (0.0, 0)
    try:
        while proc.poll() is None:
            pids = _tree(proc.pid)
            jobs = sum(_comm(pid) == "sleep" for pid in pids)
            if jobs > best[1] or (jobs == best[1] and jobs):
                kb = sum(_pss_kb(pid) for pid in pids if _comm(pid) != "sleep")
                best = max(best, (kb / 1024, jobs), key=lambda b: (b[1], b[0]))
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return best


def drain_seconds(tmp: str, spoolq: list[str], n: int, running: int, command: str) -> float:
    """Seconds one worker of `running` slots takes to run n jobs of `command` (--burst)."""
    spool_dir = _spool(tmp, spoolq, n, command)
    t0 = time.monotonic()
    subprocess.run([*spoolq, "--spool", spool_dir, "worker", "start", "--slots", str(running), "--burst"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    elapsed = time.monotonic() - t0
    assert len(os.listdir(os.path.join(spool_dir, "done"))) == n, "not every job finished"
    return elapsed


def xargs_seconds(n: int, running: int, command: str) -> float:
    t0 = time.monotonic()
    subprocess.run(["xargs", f"-P{running}", "-n1", "sh", "-c", command],
                   input=b"".join(b"%d\n" % i for i in range(n)), check=True)
    return time.monotonic() - t0


def rows(row: Callable[..., object], tmp: str, spoolq: list[str], jobs: int, running: int, repeat: int,
         progress: Callable[[str], None]) -> list:
    """The two rows (`row`: bench.py's Row)."""
    command = "sleep 1"
    progress(f"slots: PSS of one worker of {running} slots, against {running} worker processes")
    mem = [peak_pss(tmp, spoolq, running, ["--slots", str(running)], command) for _ in range(repeat)]
    ref = [peak_pss(tmp, spoolq, running, ["--count", str(running)], "sleep 3")]  # the start takes seconds
    pss = row(f"PSS of every spoolq process, {running} `sleep 1` jobs in 1 worker of {running} slots", "MB",
              [m[0] for m in mem], f"`--count {running}`: a worker process a job (`sleep 3`)", [r[0] for r in ref],
              "<= 150 MB", max(m[0] for m in mem) <= 150,
              f"jobs running at the peak: {min(m[1] for m in mem)} (reference: {ref[0][1]})")
    samples, refs = [], []
    for r in range(repeat):
        progress(f"slots: {jobs} `{command}` jobs {running} at once, against xargs -P{running} ({r + 1}/{repeat})")
        samples.append(jobs / drain_seconds(tmp, spoolq, jobs, running, command))
        refs.append(jobs / xargs_seconds(jobs, running, command))
    rate = row(f"throughput: {jobs} `{command}` jobs, 1 worker of {running} slots, --burst", "jobs/s", samples,
               f"xargs -P{running} -n1 sh -c '{command}'", refs, ">= 0.95 x xargs", paired=True)
    rate.passed = rate.ratio >= 0.95
    return [pss, rate]
