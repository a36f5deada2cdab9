"""bench.py's rows of what a call or an idle worker costs, each on the disk of bench.py's temp dir
and on tmpfs (/dev/shm) in the same run: one `spoolq enqueue` against `python -c pass`, and an
idle worker beside a spool of many finished jobs against one beside an empty spool."""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Iterator

TMPFS = "/dev/shm"
DUTIES = {"keep_done": "7d", "keep_dead": "30d", "keep_output": "7d"}  # every periodic duty on, with a
# schedule and the metrics textfile added below; the lease's heartbeats and recovery sweeps always run


def disks(tmp: str) -> Iterator[tuple[str, str]]:
    """(label, a directory) of the disk under test, then of tmpfs when there is one (removed after)."""
    yield "disk", tmp
    if os.path.isdir(TMPFS) and os.access(TMPFS, os.W_OK):
        where = tempfile.mkdtemp(dir=TMPFS, prefix="spoolq-bench-")
        try:
            yield "tmpfs", where
        finally:
            shutil.rmtree(where, ignore_errors=True)


def process_seconds(argv: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one whole process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise RuntimeError(f"{argv} failed ({status})")
    return time.perf_counter() - t0, usage.ru_utime + usage.ru_stime


def enqueue_pairs(spoolq: list[str], spool_dir: str, n: int) -> tuple[list[float], list[float], list[float]]:
    """n pairs in turn: `python -c pass`, then one `spoolq enqueue --cmd true`; (enqueue wall,
    pass wall, enqueue CPU / pass CPU)."""
    subprocess.run([*spoolq, "--spool", spool_dir, "init"], check=True, capture_output=True)
    mine, ref, cpu = [], [], []
    for _ in range(n):
        wall_ref, cpu_ref = process_seconds([sys.executable, "-c", "pass"])
        wall, used = process_seconds([*spoolq, "--spool", spool_dir, "enqueue", "--cmd", "true"])
        mine.append(wall)
        ref.append(wall_ref)
        cpu.append(used / max(cpu_ref, 1e-4))
    return mine, ref, cpu


def finished_spool(spoolq: list[str], spool_dir: str, n: int) -> None:
    """A spool of n done jobs as workers leave them (done/<id>.json, ids/<id>, output/<id>.log:
    the documented format; a job that wrote something has a log), copied from one job run for
    real, and every periodic duty set."""
    subprocess.run([*spoolq, "--spool", spool_dir, "enqueue", "--cmd", "true"], check=True, capture_output=True)
    subprocess.run([*spoolq, "--spool", spool_dir, "worker", "start", "--burst", "--quiet"], check=True,
                   capture_output=True)
    done = os.path.join(spool_dir, "done")
    first = os.listdir(done)[0]
    with open(os.path.join(done, first)) as f:
        job = json.load(f)
    for i in range(n):
        job_id = f"bench{i:07d}"
        job["id"] = job_id
        with open(os.path.join(done, f"{job_id}.json"), "w") as f:
            json.dump(job, f, separators=(",", ":"))
        open(os.path.join(spool_dir, "ids", job_id), "w").close()
        open(os.path.join(spool_dir, "output", f"{job_id}.log"), "w").close()
    for key, value in DUTIES.items():
        subprocess.run([*spoolq, "--spool", spool_dir, "config", "set", key, value], check=True, capture_output=True)
    subprocess.run([*spoolq, "--spool", spool_dir, "config", "set", "metrics_textfile",
                    os.path.join(spool_dir, "node.prom")], check=True, capture_output=True)
    subprocess.run([*spoolq, "--spool", spool_dir, "schedule", "add", "yearly", "0 0 1 1 *", "--cmd", "true"],
                   check=True, capture_output=True)


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


def idle_cost(spoolq: list[str], spool_dirs: list[str], settle: float, window: float) -> list[tuple[float, int]]:
    """One worker on each spool, all idle at once over the same window once they settled (at most
    `settle` seconds):
    (% of a core, system calls a minute (0 without strace)) for each."""
    procs = [subprocess.Popen([*spoolq, "--spool", d, "worker", "start", "--count", "1", "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
             for d in spool_dirs]
    try:
        time.sleep(2)
        groups = [[p.pid, *children(p.pid)] for p in procs]
        settled(groups, settle)
        before = [cpu_ticks(g) for g in groups]
        time.sleep(window)
        after = [cpu_ticks(g) for g in groups]
        # Then a window of its own under strace (which slows what it traces: not in the CPU figure).
        traces = [strace(g, window, d) for g, d in zip(groups, spool_dirs)] if shutil.which("strace") else []
        for t in traces:
            t.wait()
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(30)
    calls = [syscalls(os.path.join(d, "strace.txt")) * 60 / window for d in spool_dirs] if traces else [0] * len(procs)
    tick = os.sysconf("SC_CLK_TCK")
    return [((b - a) / tick / window * 100, int(c)) for a, b, c in zip(before, after, calls)]


def settled(groups: list[list[int]], longest: float) -> None:
    """Until every worker is through its start (a first retention pass over every finished job,
    the textfile's first counts, which read each job file once, and count again once done/ has
    been still for a while): 5 s at under 1% of a core, after two of the textfile's intervals."""
    time.sleep(2 * 15)
    deadline = time.monotonic() + longest
    while time.monotonic() < deadline:
        before = [cpu_ticks(g) for g in groups]
        time.sleep(5)
        if all(cpu_ticks(g) - b < 0.05 * os.sysconf("SC_CLK_TCK") for g, b in zip(groups, before)):
            return


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def strace(pids: list[int], window: float, spool_dir: str) -> subprocess.Popen:
    argv = ["timeout", "-s", "INT", str(window), "strace", "-c", "-f", "-o", os.path.join(spool_dir, "strace.txt")]
    for pid in pids:
        argv += ["-p", str(pid)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def syscalls(path: str) -> int:
    """The total of `strace -c`'s table."""
    with open(path) as f:
        total = [line.split() for line in f if line.rstrip().endswith("total")]
    return int(total[-1][3]) if total else 0  # % time, seconds, usecs/call, calls, [errors,] total


def median(values: list[float]) -> float:
    return statistics.median(values)
