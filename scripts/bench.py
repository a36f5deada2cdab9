#!/usr/bin/env python3
"""spoolq benchmark: every speed and memory target, each beside a reference run made in the
same invocation, so the ratio means something on a noisy machine.

    scripts/bench.py                 # the full table (a few minutes on 2 cores)
    scripts/bench.py --quick         # small sizes, for a smoke run
    scripts/bench.py --json          # one JSON object for machines
    scripts/bench.py --only none --compare   # nq, task-spooler and huey beside spoolq (compare.py)

It uses only the public CLI, the Python API and the documented on-disk format, and creates
its own spools in a temp dir that it removes afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # multihost.py

from spoolq import Spool  # noqa: E402
import compare  # noqa: E402
from compare import wait_until  # noqa: E402
import idlecost  # noqa: E402
import slotsbench  # noqa: E402
from spoolq.format import layout as L  # noqa: E402

# The console script a user runs (no runpy overhead), else the module.
_SCRIPT = os.path.join(os.path.dirname(sys.executable), "spoolq")
SPOOLQ = [_SCRIPT] if os.access(_SCRIPT, os.X_OK) else [sys.executable, "-m", "spoolq"]


@dataclass
class Row:
    name: str
    unit: str
    samples: list[float]
    reference_name: str
    reference: list[float]
    target: str
    passed: bool | None = None
    notes: str = ""
    extra: dict = field(default_factory=dict)
    paired: bool = False  # samples[i] and reference[i] ran one after the other

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def ref_median(self) -> float:
        return statistics.median(self.reference) if self.reference else float("nan")

    @property
    def ratio(self) -> float:
        """Paired rows: the median of the pairs' ratios, which a machine whose speed drifts during
        the run moves far less than a ratio of two medians taken minutes apart."""
        if self.paired:
            return statistics.median(s / r for s, r in zip(self.samples, self.reference))
        return self.median / self.ref_median if self.reference and self.ref_median else float("nan")


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


# ---- helpers ---------------------------------------------------------------------------------


def cli(spool: str, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*SPOOLQ, "--spool", spool, *args], capture_output=True, text=True, check=check, **kw)


def start_workers(spool: str, count: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*SPOOLQ, "--spool", spool, "worker", "start", "--count", str(count), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def stop_workers(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def ready_workers(spool: Spool, n: int) -> bool:
    return len(spool.workers(role="worker")) >= n


def count_done(spool_dir: str) -> int:
    return len(os.listdir(os.path.join(spool_dir, "done")))


def write_batch(path: str, n: int, command: str = "true") -> None:
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"j{i:07d}", "command": command}) + "\n")


def publish_by_rename(spool: Spool, job_id: str, command: str) -> float:
    """Stage a job under a dot name, fsync it, then rename it into pending/: returns the time of
    the rename, the instant the job becomes visible (the drop-in protocol of layout.py)."""
    job = spool.make_job({"id": job_id, "command": command})
    staged = os.path.join(spool.layout.pending, f".{job_id}.tmp")
    with open(staged, "wb") as f:
        f.write(job.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.close(os.open(spool.layout.id_marker(job_id), os.O_CREAT | os.O_WRONLY, 0o600))
    final = os.path.join(spool.layout.pending, L.pending_name(job.id, job.priority, job.seq, None))
    t0 = time.time_ns()
    os.rename(staged, final)
    return t0


class Marker:
    """A FIFO the job opens for writing: the moment our blocked open returns is when the command
    started, to the microsecond (file mtimes are only as fine as the kernel's coarse clock)."""

    def __init__(self, path: str):
        self.path = path
        self.at: int | None = None
        os.mkfifo(path, 0o600)
        self._thread = threading.Thread(target=self._wait, daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        fd = os.open(self.path, os.O_RDONLY)
        self.at = time.time_ns()
        os.read(fd, 1)
        os.close(fd)

    def time(self, timeout: float = 10) -> int:
        self._thread.join(timeout)
        if self.at is None:
            raise TimeoutError(f"{self.path} was never opened")
        return self.at


def marker_time(path: str, timeout: float = 10) -> int:
    wait_until(lambda: os.path.exists(path), timeout)
    return os.stat(path).st_mtime_ns


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker_pids(spool: Spool) -> list[int]:
    return [w.pid for w in spool.workers(role="worker")]


# ---- rows ------------------------------------------------------------------------------------


def reference_spawn_latency(tmp: str, n: int) -> list[float]:
    """Popen of `sh -c ': > marker'` until the marker exists: the floor any runner pays."""
    out = []
    for i in range(n):
        marker = Marker(os.path.join(tmp, f"ref-{i}"))
        t0 = time.time_ns()
        subprocess.Popen(["/bin/sh", "-c", f": > {marker.path}"], start_new_session=True).wait()
        out.append((marker.time() - t0) / 1e6)
    return out


@contextlib.contextmanager
def idle_worker(tmp: str, prefix: str) -> Iterator[tuple[Spool, str]]:
    """A fresh spool with one worker settled into its idle wait, and a directory for markers."""
    spool_dir = tempfile.mkdtemp(dir=tmp, prefix=prefix)
    spool = Spool(spool_dir)
    marks = os.path.join(spool_dir, "marks")
    os.mkdir(marks)
    proc = start_workers(spool_dir, 1)
    try:
        wait_until(lambda: ready_workers(spool, 1), 15, 0.01)
        time.sleep(0.3)  # let the worker settle into its idle wait: the thing being measured
        yield spool, marks
    finally:
        stop_workers(proc)


def pickup_latency(tmp: str, n: int, after_claim: float | None) -> list[float]:
    with idle_worker(tmp, "latency-") as (spool, marks):
        out = []
        for i in range(n):
            if after_claim is not None:
                # A job claimed just before: the next arrival must not wait behind its move.
                t_prev = publish_by_rename(spool, f"prev{i}", f": > {marks}/prev{i}")
                marker_time(f"{marks}/prev{i}")
                time.sleep(max(0.0, after_claim - (time.time_ns() - t_prev) / 1e9))
            marker = Marker(f"{marks}/lat{i}")
            t0 = publish_by_rename(spool, f"lat{i}", f": > {marker.path}")
            out.append((marker.time() - t0) / 1e6)
            if after_claim is None:
                time.sleep(0.02)
        return out


def throughput(tmp: str, n: int, repeat: int, command: str, target: float) -> Row:
    """n jobs of `command` drained by `worker start --count 2 --burst`, against xargs running the
    same command line with sh -c, as a shell user would."""
    samples, refs = [], []
    cpu: dict[str, list[float]] = {"spoolq": [], "xargs": []}  # CPU seconds a job, every process of the run
    for r in range(repeat):
        spool_dir = spool_of_jobs(tmp, "tput", n, r, command)
        t0, c0 = time.monotonic(), children_cpu()
        subprocess.run([*SPOOLQ, "--spool", spool_dir, "worker", "start", "--count", "2", "--burst"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        elapsed, cpu_used = time.monotonic() - t0, children_cpu() - c0
        assert count_done(spool_dir) == n, "not every job finished"
        samples.append(n / elapsed)
        cpu["spoolq"].append(cpu_used / n)
        t0, c0 = time.monotonic(), children_cpu()
        subprocess.run(["xargs", "-P2", "-n1", "sh", "-c", command], input=b"".join(b"%d\n" % i for i in range(n)),
                       check=True)
        refs.append(n / (time.monotonic() - t0))
        cpu["xargs"].append((children_cpu() - c0) / n)
    row = Row(f"throughput: {n} `{command}` jobs, 2 workers, --burst", "jobs/s", samples,
              f"xargs -P2 -n1 sh -c '{command}'", refs, f">= {target:g} x xargs", paired=True)
    row.passed = row.ratio >= target
    c0 = children_cpu()
    bare = bare_spawn_rate(n, command)
    cpu["ceiling"] = [(children_cpu() - c0) / n]
    cpu["stripped"] = [stripped_loop_cpu(tmp, n, command)]
    stripped_rate = stripped_loop_rate(tmp, n, command)
    row.extra["bare_spawn"] = bare
    row.extra["stripped_loops"] = stripped_rate
    row.extra["cpu_ms_a_job"] = {k: statistics.median(v) * 1000 for k, v in cpu.items()}
    ms = row.extra["cpu_ms_a_job"]
    row.notes = (f"ceiling: 2 Python processes spawning it, no bookkeeping: {bare:.0f}/s ({bare / row.ref_median:.2f} x xargs); "
                 f"CPU a job, every process counted: spoolq {ms['spoolq']:.2f} ms, xargs {ms['xargs']:.2f} ms, "
                 f"ceiling {ms['ceiling']:.2f} ms (spoolq's own: {ms['spoolq'] - ms['ceiling']:.2f} ms; "
                 f"a stripped loop's own: {ms['stripped']:.2f} ms); two stripped loops: {stripped_rate:.0f}/s "
                 f"({stripped_rate / bare:.2f} x the ceiling; spoolq {row.median / bare:.2f} x)")
    if gnu_parallel():  # where installed: once, it is slow
        t0 = time.monotonic()
        subprocess.run(["parallel", "--will-cite", "-j2", "-N0", "sh", "-c", command],
                       input=b"".join(b"%d\n" % i for i in range(n)), check=True)
        rate = n / (time.monotonic() - t0)
        row.extra["parallel"] = rate
        row.notes += f"; GNU parallel -j2: {rate:.0f}/s, spoolq {row.median / rate:.1f} x"
    return row


def children_cpu() -> float:
    """User and system seconds of every process this one has waited for (and theirs, in turn)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def in_child(body: Callable[[], None]) -> float:
    """CPU seconds `body` costs, run in a forked child (with every process it waits for)."""
    c0 = children_cpu()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            body()
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0:
        raise RuntimeError("a measurement's child failed (its traceback is above)")
    return children_cpu() - c0


def stripped_loop_cpu(tmp: str, n: int, command: str) -> float:
    """CPU a job beyond a bare spawn of a loop that does only what no worker can leave out (see
    `stripped_loop`): what spoolq's bookkeeping would have to cost to reach the ceiling. One
    process, in a spool of n."""
    program, argv = _direct(command)
    spool_dir = spool_of_jobs(tmp, "stripped", n, 0, command)
    env = dict(os.environ)

    def bare() -> None:
        for _ in range(n):
            os.waitpid(os.posix_spawn(program, argv, env, setsid=True), 0)

    return (in_child(lambda: stripped_loop(spool_dir, 0, command)) - in_child(bare)) / n


def stripped_loop_rate(tmp: str, n: int, command: str) -> float:
    """What two such stripped loops reach together (jobs/s) draining one spool of n, as two
    workers do: the throughput a worker that checks and records nothing else could have."""
    spool_dir = spool_of_jobs(tmp, "stripped2", n, 0, command)
    rate = n / in_two_processes(lambda k: stripped_loop(spool_dir, k, command))
    assert count_done(spool_dir) == n, "the stripped loops left jobs undone"
    return rate


def in_two_processes(body: Callable[[int], None]) -> float:
    """Seconds until `body(0)` and `body(1)`, each in a forked child, have both returned."""
    t0 = time.monotonic()
    pids = []
    for k in range(2):
        pid = os.fork()
        if pid == 0:
            try:
                body(k)
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    return time.monotonic() - t0


def stripped_loop(spool_dir: str, k: int, command: str) -> None:
    """Loop `k` (0 or 1: they take the names from either end) drains the spool doing only what no
    worker can leave out: claim by rename, read and parse the job file, spawn with a pipe and a
    pidfd, wait, rename into done/, one attempts-log line (no output log: a silent job that
    succeeds at once has none, store/output.py). It checks and records nothing else (no fence,
    finished copy, group record, heartbeat, stop, pause or limits, field checks)."""
    program, argv = _direct(command)
    env = dict(os.environ)
    mine, done = (os.path.join(spool_dir, d) for d in (f"processing/stripped{k}", "done"))
    os.makedirs(mine)
    pending = os.path.join(spool_dir, "pending")
    attempts_log = os.open(os.path.join(spool_dir, "events", f"stripped{k}.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    names = sorted(os.listdir(pending))
    for name in reversed(names) if k else names:
        job_id = name.split("@", 1)[1][:-len(".json")]
        path = os.path.join(mine, f"{job_id}.json")
        try:
            os.rename(os.path.join(pending, name), path)
        except FileNotFoundError:
            continue  # the other loop took it
        with open(path, "rb") as f:
            json.loads(f.read())
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        pid = os.posix_spawn(program, argv, env, setsid=True, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0), (os.POSIX_SPAWN_DUP2, write_end, 1),
            (os.POSIX_SPAWN_DUP2, write_end, 2)])
        os.close(write_end)
        pidfd = os.pidfd_open(pid)
        while os.read(read_end, 65536):
            pass
        os.close(read_end)
        os.waitpid(pid, 0)
        os.close(pidfd)
        os.rename(path, os.path.join(done, f"{job_id}.json"))
        os.write(attempts_log, json.dumps({"id": job_id, "outcome": "done", "finished": time.time()}).encode() + b"\n")


def _direct(command: str) -> tuple[str, list[str]]:
    """The program and argv a worker runs `command` with: directly where it can, else the shell."""
    from spoolq.system import direct_exec

    argv = direct_exec.words(command)
    program = direct_exec.find(argv[0], dict(os.environ)) if argv else None
    return (program, argv) if program and argv else ("/bin/sh", ["/bin/sh", "-c", command])


def bare_spawn_rate(n: int, command: str) -> float:
    """What a Python runner that only starts each job (posix_spawn as the worker does it, wait,
    nothing recorded) reaches with 2 processes: the ceiling a worker's bookkeeping eats into."""
    program, argv = _direct(command)

    def spawn_half(_k: int) -> None:
        for _ in range(n // 2):
            os.waitpid(os.posix_spawn(program, argv, dict(os.environ), setsid=True), 0)

    return n / in_two_processes(spawn_half)


def gnu_parallel() -> bool:
    """GNU parallel is installed as `parallel` (moreutils ships another program of that name,
    which takes none of its options)."""
    if not shutil.which("parallel"):
        return False
    probe = subprocess.run(["parallel", "--version"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return probe.returncode == 0 and "GNU parallel" in probe.stdout


def spool_of_jobs(tmp: str, prefix: str, n: int, r: int, command: str = "true") -> str:
    """A new spool holding n jobs of `command`, enqueued as one batch."""
    spool_dir = tempfile.mkdtemp(dir=tmp, prefix=f"{prefix}-")
    batch = os.path.join(tmp, f"{prefix}-{r}.jsonl")
    write_batch(batch, n, command)
    cli(spool_dir, "enqueue", "--batch", batch)
    return spool_dir


def beside(tmp: str, n: int, repeat: int, what: str, setup: Callable[[str], None]) -> Row:
    """n `true` jobs of the default queue drained by 2 burst workers in a spool that `setup` also
    gave something else (a limited queue, jobs waiting for others), against the same without it,
    in turn."""
    samples, refs = [], []
    for r in range(repeat):
        for other in (True, False):
            spool_dir = spool_of_jobs(tmp, "beside", n, r)
            if other:
                setup(spool_dir)
            t0 = time.monotonic()
            subprocess.run([*SPOOLQ, "--spool", spool_dir, "worker", "start", "--count", "2", "--burst"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            (samples if other else refs).append(n / (time.monotonic() - t0))
            shutil.rmtree(spool_dir, ignore_errors=True)
    row = Row(f"throughput: {n} `true` jobs beside {what}", "jobs/s", samples,
              "the same spool without it", refs, ">= 0.95 x", paired=True)
    row.passed = row.ratio >= 0.95
    return row


def a_limited_queue(spool_dir: str) -> None:
    cli(spool_dir, "queue", "set", "enc", "--concurrency", "1")
    for _ in range(20):
        cli(spool_dir, "enqueue", "--queue", "enc", "--delay", "3600", "true")


def waiting_jobs(spool_dir: str, count: int = 10_000) -> None:
    cli(spool_dir, "enqueue", "--id", "gate", "--delay", "3600", "true")
    batch = os.path.join(spool_dir + ".waiting.jsonl")
    with open(batch, "w") as f:
        f.writelines('{"command": "true", "after": ["gate"]}\n' for _ in range(count))
    cli(spool_dir, "enqueue", "--batch", batch)


def dropin_latency(tmp: str, n: int) -> list[float]:
    """A file dropped by the drop-in protocol (written under a dot name, fsync'd, renamed to
    <id>.json in pending/) until its command starts."""
    with idle_worker(tmp, "dropin-") as (spool, marks):
        out = []
        for i in range(n):
            marker = Marker(f"{marks}/drop{i}")
            staged = os.path.join(spool.layout.pending, f".drop{i}.tmp")
            with open(staged, "wb") as f:
                f.write(json.dumps({"id": f"drop{i}", "command": f": > {marker.path}"}).encode())
                f.flush()
                os.fsync(f.fileno())
            t0 = time.time_ns()
            os.rename(staged, os.path.join(spool.layout.pending, f"drop{i}.json"))
            out.append((marker.time() - t0) / 1e6)
            time.sleep(0.02)
        return out


def drain_rate(spool_dir: str, measure: int) -> tuple[float, float, float]:
    """Start 2 workers on a filled spool; returns (seconds to first job, drain jobs/s, worker MB)."""
    spool = Spool(spool_dir)
    first_marker = os.path.join(spool_dir, "first.mark")
    marks = os.path.join(spool_dir, "marks")
    # Progress is read from the marks every MARK_EVERY-th job leaves (one stat a poll), never by
    # listing done/: that listing grows with every run and its cost would be charged to the drain.
    ran = {int(n) for n in os.listdir(marks)}
    not_yet = (i for i in itertools.count(0, MARK_EVERY) if i not in ran)
    ahead = list(itertools.islice(not_yet, 3 + measure // MARK_EVERY))
    start_mark, end_mark = ahead[2], ahead[-1]  # 200 jobs in, so the workers are up to speed
    t0 = time.time_ns()
    proc = start_workers(spool_dir, 2)
    try:
        first = (marker_time(first_marker, 60) - t0) / 1e9
        seen = lambda i: os.path.exists(os.path.join(marks, str(i)))  # noqa: E731
        wait_until(lambda: seen(start_mark), 120, 0.001)
        t_start = time.monotonic()
        wait_until(lambda: seen(end_mark), 300, 0.001)
        rate = (end_mark - start_mark) / (time.monotonic() - t_start)
        mem = max((rss_mb(p) for p in worker_pids(spool)), default=float("nan"))
        return first, rate, mem
    finally:
        stop_workers(proc)


MARK_EVERY = 100


def sharded_rows(tmp: str, n: int, repeat: int) -> list[Row]:
    """What `pending_shards 60` costs on one host, each against the same without it, in turn: one
    CLI enqueue; a batch of n; the same n drained by 2 burst workers."""
    dirs = {}
    for shards in (60, 0):
        dirs[shards] = os.path.join(tmp, f"one-{shards}")
        cli(dirs[shards], "init")
        cli(dirs[shards], "config", "set", "pending_shards", str(shards))
    times: dict[int, list[float]] = {60: [], 0: []}
    for _ in range(max(10, repeat * 8)):
        for shards in (60, 0):
            times[shards] += timed_runs([*SPOOLQ, "--spool", dirs[shards], "enqueue", "--cmd", "true"], 1)
    batch: dict[int, list[float]] = {60: [], 0: []}
    drain: dict[int, list[float]] = {60: [], 0: []}
    path = os.path.join(tmp, "sharded.jsonl")
    write_batch(path, n)
    for r in range(repeat):
        for shards in (60, 0):
            spool_dir = os.path.join(tmp, f"shards-{shards}-{r}")
            cli(spool_dir, "init")
            cli(spool_dir, "config", "set", "pending_shards", str(shards))
            t0 = time.monotonic()
            cli(spool_dir, "enqueue", "--batch", path)
            batch[shards].append(n / (time.monotonic() - t0))
            t0 = time.monotonic()
            subprocess.run([*SPOOLQ, "--spool", spool_dir, "worker", "start", "--count", "2", "--burst"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            drain[shards].append(n / (time.monotonic() - t0))
            assert count_done(spool_dir) == n, "not every job finished"
    ref = "the same, pending_shards 0"
    rows = [Row("one `spoolq enqueue --cmd true`, pending_shards 60", "s", times[60], ref, times[0], "<= 1.1 x",
                paired=True),
            Row(f"`enqueue --batch` of {n}, pending_shards 60", "jobs/s", batch[60], ref, batch[0], ">= 0.9 x",
                paired=True),
            Row(f"throughput: {n} `true` jobs, 2 workers, --burst, pending_shards 60", "jobs/s", drain[60], ref,
                drain[0], ">= 0.95 x", paired=True)]
    rows[0].passed = rows[0].ratio <= 1.1
    rows[1].passed = rows[1].ratio >= 0.9
    rows[2].passed = rows[2].ratio >= 0.95
    return rows


def fill_spool(tmp: str, n: int, name: str) -> tuple[str, float]:
    """A spool with a marker job first, then n-1 `true` jobs, every MARK_EVERY-th of which leaves
    a mark named by its place: returns (dir, enqueue seconds)."""
    spool_dir = os.path.join(tmp, name)
    batch = os.path.join(tmp, f"{name}.jsonl")
    with open(batch, "w") as f:
        f.write(json.dumps({"id": "first", "command": f": > {spool_dir}/first.mark"}) + "\n")
        for i in range(n - 1):
            command = f": > {spool_dir}/marks/{i}" if i % MARK_EVERY == 0 else "true"
            f.write(json.dumps({"id": f"j{i:07d}", "command": command}) + "\n")
    cli(spool_dir, "init")
    os.mkdir(os.path.join(spool_dir, "marks"))
    t0 = time.monotonic()
    subprocess.run([*SPOOLQ, "--spool", spool_dir, "enqueue", "--batch", batch], stdout=subprocess.DEVNULL,
                   check=True)
    return spool_dir, time.monotonic() - t0


def raw_file_rate(tmp: str, n: int) -> float:
    """Reference for batch enqueue: write n small files and rename each, no fsync, in Python."""
    d = tempfile.mkdtemp(dir=tmp, prefix="raw-")
    payload = b'{"id":"x","command":"true"}\n' * 8
    t0 = time.monotonic()
    for i in range(n):
        p = os.path.join(d, f".t{i}")
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, payload)
        os.close(fd)
        os.rename(p, os.path.join(d, f"f{i}.json"))
    return n / (time.monotonic() - t0)


def job_lines_row(tmp: str, n: int, repeat: int) -> Row:
    """A foreground worker's line per job claimed and finished, written to a file (as a journal or
    a redirect takes them), against --quiet: what the lines cost, in turn."""
    samples, refs = [], []
    for r in range(repeat):
        for quiet in (False, True):
            spool_dir = spool_of_jobs(tmp, "lines", n, r)
            with open(os.path.join(tmp, f"lines-{r}-{quiet}.log"), "w") as log:
                t0 = time.monotonic()
                subprocess.run([*SPOOLQ, "--spool", spool_dir, "worker", "start", "--count", "2", "--burst",
                                *(["--quiet"] if quiet else [])], stdout=subprocess.DEVNULL, stderr=log, check=True)
            (refs if quiet else samples).append(n / (time.monotonic() - t0))
    row = Row(f"throughput: {n} `true` jobs, a line per job claimed and finished (to a file)", "jobs/s", samples,
              "the same with --quiet", refs, ">= 0.95 x", paired=True)
    row.passed = row.ratio >= 0.95
    return row


def history_spool(tmp: str, n: int) -> str:
    """n jobs, half pending and half done (moved to done/<id>.json as a worker leaves them), and a
    day of n attempts in the attempts log, written by the writer the workers use."""
    from spoolq.store import attempts_log

    spool_dir, _ = fill_spool(tmp, n, "history")
    pending = os.path.join(spool_dir, "pending")
    for name in sorted(os.listdir(pending))[: n // 2]:
        os.rename(os.path.join(pending, name), os.path.join(spool_dir, "done", L.parse_pending(name).job_id + ".json"))
    spool = Spool(spool_dir)
    log = attempts_log.EventLog(spool.layout.dir("events"), "bench-1-x", modes=spool.store.modes, keep_seconds=9 * 86400)
    now = time.time()
    for i in range(n):
        finished = now - 86000 * i / n
        failed = i % 20 == 0
        log.record(attempts_log.FinishedAttempt(f"j{i:07d}", ("default", "mail", "video")[i % 3], 1, "bench", "bench-1-x",
                               finished - 1.5, finished - 1, finished - 1, finished, "retry" if failed else "done",
                               1 if failed else 0, "exit status 1" if failed else None, 10))
    log.close()
    return spool_dir


def http_times(url: str, n: int) -> list[float]:
    import urllib.request

    out = []
    for _ in range(n):
        t0 = time.monotonic()
        with urllib.request.urlopen(url, timeout=60) as r:
            r.read()
        out.append(time.monotonic() - t0)
    return out


def observe_rows(tmp: str, n: int, repeat: int) -> list[Row]:
    """What seeing the queue costs at n jobs with a day of n attempts: `stats --since 1d`, and
    the dashboard's overview (a fresh process's first look, then its refreshes), done list and job page."""
    spool_dir = history_spool(tmp, n)
    rows = []
    ref = timed_runs([*SPOOLQ, "--spool", spool_dir, "status", "--json"], repeat)
    s = timed_runs([*SPOOLQ, "--spool", spool_dir, "stats", "--since", "1d", "--json"], repeat)
    rows.append(Row(f"`stats --since 1d`, {n} jobs, {n} attempts that day", "s", s, "`status --json`", ref,
                    "<= 1 s", statistics.median(s) <= 1))
    import importlib.util
    import socket

    if importlib.util.find_spec("flask") is None:  # the web extra is not installed
        return rows

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    web = subprocess.Popen([*SPOOLQ, "--spool", spool_dir, "web", "--bind", f"127.0.0.1:{port}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 30, 0.05)
        floor = http_times(base + "/static/style.css", 20)
        cold = http_times(base + "/", 1)
        warm = http_times(base + "/", max(5, repeat * 3))
        rows.append(Row(f"dashboard overview, {n} jobs, {n} attempts that day (refresh)", "s", warm,
                        "a static file from the same server", floor, "<= 0.5 s", statistics.median(warm) <= 0.5,
                        f"a fresh dashboard's first overview: {cold[0]:.2f} s (reads each finished job's file once)"))
        http_times(base + "/jobs/done", 1)  # its first look reads each finished file's time once
        done_list = http_times(base + "/jobs/done", max(5, repeat * 3))
        rows.append(Row(f"dashboard done list, {n} jobs (refresh, every 2 s while shown)", "s", done_list,
                        "a static file from the same server", floor, "<= 0.25 s", statistics.median(done_list) <= 0.25))
        page = http_times(base + "/job/j0000007", 20)
        rows.append(Row(f"dashboard job page, {n} jobs", "ms", [t * 1000 for t in page],
                        "a static file from the same server", [t * 1000 for t in floor], "<= 50 ms",
                        statistics.median(page) <= 0.05))
    finally:
        os.killpg(web.pid, signal.SIGINT)
        web.wait(30)
    return rows


def churn_rows(tmp: str, total: int, per_round: int) -> list[Row]:
    """`total` jobs through one spool in rounds of `per_round`, with retention on (keep_done 1 s):
    each round's enqueue rate and drain rate (2 running workers), its first rounds against its
    last, and the most done/ ever held."""
    spool_dir = os.path.join(tmp, "churn")
    cli(spool_dir, "config", "set", "keep_done", "1")
    workers = start_workers(spool_dir, 2, "--quiet")
    spool = Spool(spool_dir)
    enq, drain, most_done = [], [], 0
    try:
        wait_until(lambda: ready_workers(spool, 2), 30, 0.01)
        for r in range(total // per_round):
            batch = os.path.join(tmp, "churn.jsonl")
            with open(batch, "w") as f:
                f.writelines('{"command": "true"}\n' for _ in range(per_round))
            t0 = time.monotonic()
            cli(spool_dir, "enqueue", "--batch", batch)
            enq.append(per_round / (time.monotonic() - t0))
            t0 = time.monotonic()
            wait_until(lambda: (lambda c: c.pending + c.processing == 0)(spool.counts()), 600, 0.01)
            drain.append(per_round / (time.monotonic() - t0))
            most_done = max(most_done, count_done(spool_dir))
            wait_until(lambda: count_done(spool_dir) < per_round // 10, 120, 0.05)  # the idle workers purge
            progress(f"churn round {r + 1}: enqueue {enq[-1]:.0f}/s, drain {drain[-1]:.0f}/s, done/ at most {most_done}")
    finally:
        stop_workers(workers)
    k = max(1, len(enq) // 5)
    rows = [Row(f"churn: enqueue --batch of {per_round}, last {k} rounds of {total // per_round}", "jobs/s", enq[-k:],
                f"its first {k} rounds", enq[:k], ">= 0.9 x"),
            Row(f"churn: drain of {per_round}, 2 workers, retention on, last {k} rounds", "jobs/s", drain[-k:],
                f"its first {k} rounds", drain[:k], ">= 0.9 x")]
    for row in rows:
        row.passed = row.ratio >= 0.9
    rows[-1].notes = f"done/ held at most {most_done} jobs of {total} (keep_done 1 s)"
    rows[-1].extra["most_done"] = most_done
    return rows


def enqueue_rows(tmp: str, n: int) -> list[Row]:
    """One `spoolq enqueue --cmd true`, whole process, against `python -c pass`, in turn, on the
    disk and on tmpfs; the CPU ratio beside."""
    rows = []
    for label, where in idlecost.disks(tmp):
        progress(f"one enqueue vs python -c pass ({label})")
        s, ref, cpu = idlecost.enqueue_pairs(SPOOLQ, os.path.join(where, "cli"), n)
        row = Row(f"one `spoolq enqueue --cmd true` ({label})", "s", s, "python -c pass", ref, "<= 2 x",
                  notes=f"CPU {statistics.median(cpu):.2f} x", paired=True)
        row.passed = row.ratio <= 2
        rows.append(row)
    return rows


def idle_rows(tmp: str, n: int, window: float) -> list[Row]:
    """An idle worker beside n done jobs (and their logs) against one beside none, every periodic
    duty on (retention of done, dead and logs, a schedule, the metrics textfile, heartbeats and
    recovery sweeps), at once over the same window, on the disk and on tmpfs."""
    rows = []
    for label, where in idlecost.disks(tmp):
        full, empty = os.path.join(where, "idle-full"), os.path.join(where, "idle-empty")
        progress(f"idle worker: {n} done jobs against none ({label})")
        idlecost.finished_spool(SPOOLQ, full, n)
        idlecost.finished_spool(SPOOLQ, empty, 0)
        (cpu, calls), (ref_cpu, ref_calls) = idlecost.idle_cost(SPOOLQ, [full, empty], 180, window)
        rows.append(Row(f"idle worker, {n} done jobs, every duty on ({label})", "%", [cpu],
                        "the same beside an empty spool", [ref_cpu], "<= 0.3 % of a core", cpu <= 0.3,
                        f"system calls a minute: {calls} against {ref_calls}",
                        {"syscalls_per_minute": calls, "reference_syscalls_per_minute": ref_calls}))
    return rows


class SpoolqRunner:
    """spoolq behind compare.py's runner interface: `worker start --count 2`; a job handed in by
    the Python API (`Spool.enqueue`, durable when it returns) of a process that imported spoolq."""

    name = "spoolq"
    submit_means = "`Spool.enqueue` in a Python process; the worker wakes on inotify"
    drain_means = "`worker start --count 2`; until done/ holds every job"

    def __init__(self, where: str):
        self.dir = os.path.join(where, "spool")
        cli(self.dir, "init")
        self.spool = Spool(self.dir)
        self.submitted = 0
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = start_workers(self.dir, compare.SLOTS, "--quiet")
        wait_until(lambda: ready_workers(self.spool, compare.SLOTS), 15, 0.01)
        time.sleep(0.3)  # into their idle wait

    def submit(self, argv: list[str]) -> None:
        self.spool.enqueue({"command": shlex.join(argv)})
        self.submitted += 1

    def submit_all(self, n: int) -> None:
        self.spool.enqueue_many([{"command": "true"} for _ in range(n)])
        self.submitted += n

    def drained(self, timeout: float) -> None:
        wait_until(lambda: count_done(self.dir) >= self.submitted, timeout, 0.005)

    def stop(self) -> None:
        if self.proc:
            stop_workers(self.proc)


def compare_rows(tmp: str, repeat: int, jobs: int, samples: int) -> list[Row]:
    """nq, task-spooler and huey where installed, each on spoolq's workloads in turn with spoolq:
    one enqueue (whole process), a drain of `jobs` queued `true` with 2 slots, pickup when idle."""
    makers, missing = compare.tools()
    for name, why in missing.items():
        progress(f"--compare skips {name}: {why}")
    rows = []
    progress(f"one enqueue by {', '.join(makers) or 'none of them'}, in turn with spoolq's")
    for name, (theirs, ours) in compare.enqueue_pairs(SPOOLQ, tmp, makers, max(10, repeat * 8)).items():
        rows.append(Row(f"one enqueue of `true` by {name}", "s", theirs, "one `spoolq enqueue --cmd true`",
                        ours, "-", paired=True))
    for name, make in makers.items():
        progress(f"drain of {jobs} queued `true`, 2 slots: {name} in turn with spoolq ({repeat} pairs)")
        theirs, ours, means = [], [], ""
        for r in range(repeat):
            pair = ((SpoolqRunner, ours), (make, theirs))
            for maker, out in pair if r % 2 == 0 else pair[::-1]:  # who goes first, in turn
                where = tempfile.mkdtemp(dir=tmp, prefix=f"drain-{name}-")
                with compare.running(maker(where)) as runner:
                    out.append(jobs / compare.drain_seconds(runner, where, jobs, str(r),
                                                            getattr(runner, "submit_all", None)))
                    if out is theirs:
                        means = runner.drain_means
        rows.append(Row(f"drain: {jobs} queued `true`, 2 slots, by {name}", "jobs/s", theirs,
                        "spoolq, 2 workers, the same", ours, "-", notes=means, paired=True))
    for name, make in makers.items():
        progress(f"pickup, idle: {name} in turn with spoolq ({samples} pairs)")
        theirs, ours, means = pickup_pairs(tmp, make, samples)
        p90 = lambda xs: sorted(xs)[min(len(xs) - 1, int(len(xs) * 0.9))]  # noqa: E731
        rows.append(Row(f"pickup, idle: job handed in -> command starts, by {name}", "ms", theirs,
                        "spoolq: Spool.enqueue -> command starts", ours, "-",
                        notes=f"p90 {p90(theirs):.2f} ms, spoolq's {p90(ours):.2f} ms; {means}",
                        extra={"p90": p90(theirs), "reference_p90": p90(ours)}, paired=True))
    return rows


def pickup_pairs(tmp: str, make: Callable[[str], compare.Runner], n: int) -> tuple[list[float], list[float], str]:
    """An idle spoolq and an idle other runner side by side (2 slots each); n + 1 times a job of
    `sh -c ': > FIFO'` handed to each in turn, after a pause drawn from 20-120 ms (so a polling
    runner is caught at every phase of its poll): ms from the start of the hand-in until the
    command starts. The first pair warms up and is not counted. (theirs, spoolq's, how)."""
    pace = random.Random(29)
    theirs: list[float] = []
    ours: list[float] = []
    calls: dict[str, list[float]] = {"spoolq": [], "other": []}  # ms the hand-in itself took
    marks = tempfile.mkdtemp(dir=tmp, prefix="pickup-marks-")
    with compare.running(make(tempfile.mkdtemp(dir=tmp, prefix="pickup-"))) as other, \
            compare.running(SpoolqRunner(tempfile.mkdtemp(dir=tmp, prefix="pickup-spoolq-"))) as spoolq:
        for i in range(n + 1):
            for runner, out, call in ((spoolq, ours, calls["spoolq"]), (other, theirs, calls["other"])):
                time.sleep(pace.uniform(0.02, 0.12))
                marker = Marker(os.path.join(marks, f"{runner.name}-{i}"))
                t0 = time.time_ns()
                runner.submit(["sh", "-c", f": > {marker.path}"])
                handed = time.time_ns()
                started = marker.time()
                if i:
                    out.append((started - t0) / 1e6)
                    call.append((handed - t0) / 1e6)
    mid = {k: statistics.median(v) for k, v in calls.items()}
    return theirs, ours, f"{other.submit_means}; the hand-in call {mid['other']:.2f} ms, spoolq's {mid['spoolq']:.2f} ms"


def timed_runs(argv: list[str], n: int, **kw) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.monotonic()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, **kw)
        out.append(time.monotonic() - t0)
    return out


# ---- main ------------------------------------------------------------------------------------


# The keys --only takes, each a row set of main(): a key no row set answers to is refused, so a
# command in docs/performance.md cannot print an empty table (tests/test_bench.py holds them).
ROW_KEYS = ("latency", "after", "dropin", "throughput", "limits", "waiting", "shellcmd", "plain", "cli", "idle",
            "batch", "backlog", "shards", "hosts", "lines", "observe", "churn", "slots")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency-samples", type=int, default=60)
    ap.add_argument("--jobs", type=int, default=2000, help="throughput row: jobs")
    ap.add_argument("--big", type=int, default=100_000, help="backlog size")
    ap.add_argument("--small", type=int, default=5_000, help="reference backlog size")
    ap.add_argument("--drain", type=int, default=3000, help="jobs measured while draining")
    ap.add_argument("--repeat", type=int, default=3, help="repeats of the cheap rows")
    ap.add_argument("--slots-jobs", type=int, default=1280, help="slots rows: `sleep 1` jobs drained")
    ap.add_argument("--slots-running", type=int, default=128, help="slots rows: jobs at once (the slots)")
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--compare", action="store_true",
                    help="add rows of nq, task-spooler and huey where installed (huey: pip install -e '.[bench]'): "
                         "one enqueue, a drain, pickup, each in turn with spoolq's")
    ap.add_argument("--compare-jobs", type=int, default=500, help="--compare: jobs a drain runs")
    ap.add_argument("--only", help="comma-separated row keys: " + ",".join(ROW_KEYS) + " (none: only --compare's rows)")
    a = ap.parse_args()
    if a.quick:
        # Small sizes, or smaller ones given with it.
        a.latency_samples, a.jobs, a.big, a.small, a.drain, a.repeat, a.compare_jobs = (
            min(a.latency_samples, 15), min(a.jobs, 300), min(a.big, 10_000), min(a.small, 1_000),
            min(a.drain, 500), 1, min(a.compare_jobs, 50))
        a.slots_jobs, a.slots_running = min(a.slots_jobs, 128), min(a.slots_running, 32)
    only = set(a.only.split(",")) if a.only else None
    if only is not None and only - {*ROW_KEYS, "none"}:
        ap.error(f"unknown row key {', '.join(sorted(only - {*ROW_KEYS, 'none'}))}: the keys are {','.join(ROW_KEYS)}")
    want = lambda key: only is None or key in only  # noqa: E731
    # Measure what an installed spoolq costs: compiled modules, as pip leaves them.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    import compileall
    import spoolq

    compileall.compile_dir(os.path.dirname(spoolq.__file__), quiet=1)
    rows: list[Row] = []
    # Every spool is kept until the end: a mass delete makes ext4 skip the freed inodes for a
    # while, and would charge the next row's file creations for the previous row's clean-up.
    tmp = tempfile.mkdtemp(prefix="spoolq-bench-")
    try:
        if want("latency") or want("after") or want("dropin"):
            progress("reference: process spawn latency")
            ref = reference_spawn_latency(tmp, a.latency_samples)
        if want("latency"):
            progress("pickup latency, idle worker")
            s = pickup_latency(tmp, a.latency_samples, None)
            p99 = sorted(s)[min(len(s) - 1, int(len(s) * 0.99))]
            rows.append(Row("pickup latency: rename into pending/ -> command starts (idle)", "ms", s,
                            "Popen(sh -c ...) -> command starts", ref, "median <= 2 ms, p99 <= 5 ms",
                            statistics.median(s) <= 2 and p99 <= 5, f"p99 {p99:.2f} ms", {"p99": p99}))
        if want("dropin"):
            progress("pickup latency of a dropped file, idle worker")
            s = dropin_latency(tmp, a.latency_samples)
            p90 = sorted(s)[min(len(s) - 1, int(len(s) * 0.9))]
            rows.append(Row("pickup latency: drop-in renamed into pending/ -> command starts", "ms", s,
                            "Popen(sh -c ...) -> command starts", ref, "median <= 3 ms, p90 <= 10 ms",
                            statistics.median(s) <= 3 and p90 <= 10, f"p90 {p90:.2f} ms", {"p90": p90}))
        if want("after"):
            progress("pickup latency, 50 ms after a claim")
            s = pickup_latency(tmp, a.latency_samples, 0.05)
            rows.append(Row("pickup latency, 50 ms after another job was claimed", "ms", s,
                            "Popen(sh -c ...) -> command starts", ref, "median <= 5 ms",
                            statistics.median(s) <= 5))
        if want("throughput"):
            progress(f"throughput: {a.jobs} jobs")
            rows.append(throughput(tmp, a.jobs, a.repeat, "true", 1.0))
        if want("shellcmd"):
            progress(f"throughput: {a.jobs} jobs that need the shell")
            rows.append(throughput(tmp, a.jobs, a.repeat, "true && true", 0.85))
        if want("limits"):
            progress(f"throughput: {a.jobs} jobs beside a limited queue")
            rows.append(beside(tmp, a.jobs, a.repeat, "a queue limited to 1", a_limited_queue))
        if want("waiting"):
            progress(f"throughput: {a.jobs} jobs beside 10,000 waiting for another")
            rows.append(beside(tmp, a.jobs, a.repeat, "10,000 jobs waiting (--after)", waiting_jobs))
        if want("plain"):
            progress(f"throughput: {a.jobs} jobs of a program the shell would start")
            rows.append(throughput(tmp, a.jobs, a.repeat, "sleep 0", 1.0))
        if want("cli"):
            rows.extend(enqueue_rows(tmp, max(10, a.repeat * 8)))
        if want("idle"):
            rows.extend(idle_rows(tmp, a.big, 20 if a.quick else 60))
        if a.compare:
            rows.extend(compare_rows(tmp, a.repeat, a.compare_jobs, a.latency_samples))
        if want("batch") or want("backlog"):
            progress(f"enqueue --batch of {a.big} jobs")
            big_dir, seconds = fill_spool(tmp, a.big, "big")
            ref_rate = raw_file_rate(tmp, min(a.big, 20000))
            rate = a.big / seconds
            rows.append(Row(f"`enqueue --batch` of {a.big} jobs (durable)", "jobs/s", [rate],
                            "create+rename small files, no fsync", [ref_rate], ">= 5,000 jobs/s", rate >= 5000))
            progress(f"status --json with {a.big} jobs")
            s = timed_runs([*SPOOLQ, "--spool", big_dir, "status", "--json"], a.repeat)
            ref = timed_runs([sys.executable, "-c", "import click"], a.repeat)
            rows.append(Row(f"`status --json` with {a.big} jobs", "s", s, "python -c 'import click'", ref,
                            "<= 0.5 s", statistics.median(s) <= 0.5))
        if want("backlog"):
            big, small = [], []
            for r in range(a.repeat):
                progress(f"draining with {a.big} pending ({r + 1}/{a.repeat})")
                big.append(drain_rate(big_dir, a.drain))
                small_dir, _ = fill_spool(tmp, a.small, f"small{r}")
                progress(f"draining with {a.small} pending ({r + 1}/{a.repeat})")
                small.append(drain_rate(small_dir, min(a.drain, a.small - 400)))
            drain = Row(f"drain rate with {a.big} pending", "jobs/s", [b[1] for b in big],
                        f"drain rate with {a.small} pending", [s[1] for s in small], ">= 0.9 x", paired=True)
            drain.passed = drain.ratio >= 0.9
            rows.append(drain)
            rows.append(Row(f"worker resident memory with {a.big} pending", "MB", [b[2] for b in big],
                            f"with {a.small} pending", [s[2] for s in small], "<= 80 MB",
                            max(b[2] for b in big) <= 80))
            rows.append(Row(f"worker start with {a.big} pending -> first job runs", "s", [big[0][0]],
                            f"with {a.small} pending", [small[0][0]], "<= 2 s", big[0][0] <= 2,
                            "first run only: later runs start on a partly drained spool"))
        if want("shards"):
            progress(f"pending_shards 60 against 0: one enqueue, a batch of {a.jobs * 5}, its drain")
            rows.extend(sharded_rows(tmp, a.jobs * 5, a.repeat))
        if want("lines"):
            progress(f"throughput: {a.jobs} jobs, a worker's line per job against --quiet")
            rows.append(job_lines_row(tmp, a.jobs, a.repeat))
        if want("observe"):
            progress(f"stats and the dashboard with {a.big} jobs and a day of {a.big} attempts")
            rows.extend(observe_rows(tmp, a.big, a.repeat))
        if want("churn"):
            progress(f"churn: {a.big * 2} jobs through one spool with retention on")
            rows.extend(churn_rows(tmp, a.big * 2, 10_000 if not a.quick else 2_000))
        if want("slots"):
            rows.extend(slotsbench.rows(Row, tmp, SPOOLQ, a.slots_jobs, a.slots_running, a.repeat, progress))
        if want("hosts"):
            rows.extend(multihost_rows(a.repeat, 100 if a.quick else 400))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(rows, a.json)
    return 0


def multihost_rows(repeat: int, jobs: int) -> list[Row]:
    """The multi-host rows: 2 hosts x 2 workers on a real GlusterFS (strict; scripts/multihost.py),
    each beside 1 host x 4 workers on the same volume, run in turn."""
    import multihost

    progress(f"2 hosts x 2 workers on GlusterFS, {jobs} jobs, against 1 host x 4 workers")
    try:
        with multihost.gluster_hosts(2) as points:
            pairs = [(multihost.drain(multihost.fresh_spool(points), 2, jobs),
                      multihost.drain(multihost.fresh_spool(points[:1]), 4, jobs)) for _ in range(repeat)]
            progress("2 hosts x 2 long-running workers fed 10 jobs/s: one start of 2 per host, against 2 of 1")
            trickles = [(multihost.trickle(multihost.fresh_spool(points), 1, 2),
                         multihost.trickle(multihost.fresh_spool(points), 2, 1)) for _ in range(repeat)]
            progress(f"the same fed beside {BACKLOG:,} scheduled jobs: pending/ sharded, against not")
            backlogs = [(multihost.trickle(multihost.fresh_spool(points), 1, 2, scheduled=BACKLOG, shards=60),
                         multihost.trickle(multihost.fresh_spool(points), 1, 2, scheduled=BACKLOG))
                        for _ in range(repeat)]
    except multihost.Unavailable as e:
        progress(f"skipped the multi-host rows: {e}")
        return []
    ref = "1 host x 4 workers, same volume"
    rate = Row("drain rate, 2 hosts x 2 workers, GlusterFS strict", "jobs/s", [p[0]["jobs_per_s"] for p in pairs],
               ref, [p[1]["jobs_per_s"] for p in pairs], ">= 0.8 x", paired=True)
    rate.passed = rate.ratio >= 0.8
    failed = Row("failed claims per claim, 2 hosts x 2 workers", "", [p[0]["failed_claims_per_claim"] for p in pairs],
                 ref, [p[1]["failed_claims_per_claim"] for p in pairs], "<= 1.5",
                 statistics.median(p[0]["failed_claims_per_claim"] for p in pairs) <= 1.5)
    listings = Row("listings of pending/ per second, 2 hosts x 2 workers", "/s",
                   [p[0]["listings_per_s"] for p in pairs], ref, [p[1]["listings_per_s"] for p in pairs],
                   "(what the server lists)", None)
    shared = Row("listings/s, 2 hosts x 2 workers, 10 jobs/s, 2,000 scheduled", "/s",
                 [t[0]["listings_per_s"] for t in trickles], "the same workers as 2 starts of 1 per host (no sharing)",
                 [t[1]["listings_per_s"] for t in trickles], "<= 0.7 x", paired=True)
    shared.passed = shared.ratio <= 0.7
    names = Row(f"names listed/s, 2 hosts x 2 workers, 10 jobs/s, {BACKLOG:,} scheduled, pending_shards 60", "/s",
                [b[0]["names_per_s"] for b in backlogs], "the same, pending/ not sharded",
                [b[1]["names_per_s"] for b in backlogs], "<= 0.1 x", paired=True)
    names.passed = names.ratio <= 0.1
    return [rate, failed, listings, shared, names]


BACKLOG = 5_000  # scheduled jobs beside the sharded trickle: what every unsharded listing reads


def report(rows: list[Row], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"rows": [{**asdict(r), "median": r.median, "reference_median": r.ref_median,
                                    "ratio": r.ratio} for r in rows]}, indent=1))
        return
    print(f"{'what':<62} {'median':>10} {'range':>19} {'reference':>10} {'ratio':>6}  {'target':<28} ok")
    for r in rows:
        rng = f"{min(r.samples):.3g}-{max(r.samples):.3g}" if len(r.samples) > 1 else "-"
        ok = {True: "yes", False: "NO", None: "?"}[r.passed]
        print(f"{r.name[:62]:<62} {r.median:>8.3g}{r.unit[:2]:>2} {rng:>19} {r.ref_median:>10.3g} "
              f"{r.ratio:>6.2f}  {r.target:<28} {ok}")
        print(f"{'':<62} reference: {r.reference_name}" + (f"; {r.notes}" if r.notes else ""))


if __name__ == "__main__":
    sys.exit(main())
