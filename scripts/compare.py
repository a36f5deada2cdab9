"""bench.py --compare: the other queues a job can be handed to, each behind one small interface, so
that bench.py runs the same workloads on each of them, in turn with spoolq:

    nq            Debian `nq`: no runner; each `nq` call forks its job, which waits for the lock of
                  every earlier job of its NQDIR (one job at a time a directory: two NQDIRs are its
                  two slots, jobs dealt between them in turn)
    task-spooler  Debian `task-spooler` (`tsp`; `ts` where that is task-spooler, not moreutils'):
                  a server holds the queue in memory, `tsp -S 2` slots; each queued job is a
                  waiting client process
    huey          PyPI `huey` (`pip install -e '.[bench]'`): SqliteHuey (its SQLite file, WAL,
                  SQLite's default synchronous=FULL) and a `huey_consumer` process of 2 worker
                  threads, polling the file every 0.1 s (`-d 0.1 -m 0.1`: by default an idle
                  consumer's poll backs off to 10 s); the task runs its command with subprocess

Each tool lives in a temp dir of its own (NQDIR, TS_SOCKET and TMPDIR, the SQLite file) that the
caller removes. A runner: start() (2 slots, idle), submit(argv) as a user would hand it one job,
drained() until every job submitted has finished, stop()."""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable, Iterator, Protocol

import idlecost

SLOTS = 2


class Runner(Protocol):
    name: str
    submit_means: str  # how a job handed in reaches its runner
    drain_means: str
    enqueue_argv: list[str]  # one enqueue of `true`, whole process
    env: dict[str, str]

    def start(self) -> None: ...
    def submit(self, argv: list[str]) -> None: ...
    def drained(self, timeout: float) -> None: ...
    def stop(self) -> None: ...


def wait_until(predicate: Callable[[], object], timeout: float, pause: float = 0.0005) -> object:
    """The predicate's first true value, polled every `pause` seconds (bench.py's rows use it too)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        time.sleep(pause)


def quiet(argv: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, **kw)


class Nq:
    name = "nq"
    submit_means = "an `nq` call forks the job at once"
    drain_means = ("two NQDIRs as its 2 slots (nq runs one job at a time a directory), jobs dealt in turn, "
                   "each queued job a process waiting on the locks before it; until `nq -w` returns in both")

    def __init__(self, where: str):
        self.dirs = [os.path.join(where, f"slot{i}") for i in range(SLOTS)]
        for d in self.dirs:
            os.makedirs(d)
        self.env = dict(os.environ, NQDIR=os.path.join(where, "enqueue"))
        os.makedirs(self.env["NQDIR"])
        self.enqueue_argv = ["nq", "-q", "true"]
        self.turn = itertools.cycle(self.dirs)

    def start(self) -> None:
        pass  # nothing runs until a job is handed in

    def submit(self, argv: list[str]) -> None:
        quiet(["nq", "-q", *argv], dict(self.env, NQDIR=next(self.turn)))

    def drained(self, timeout: float) -> None:
        for d in self.dirs:  # `nq -w`: until every job of the directory has let go of its lock
            quiet(["nq", "-w"], dict(self.env, NQDIR=d), timeout=timeout)

    def stop(self) -> None:
        self.drained(60)


class Tsp:
    name = "task-spooler"
    submit_means = "a `tsp` call hands the job to its idle server"
    drain_means = "`tsp -S 2`, each queued job a waiting client process; until `tsp -w` of the last job of each slot"

    def __init__(self, where: str, program: str):
        self.program = program
        self.env = dict(os.environ, TS_SOCKET=os.path.join(where, "socket"), TMPDIR=where, TS_SAVELIST="")
        self.enqueue_argv = [program, "true"]
        self.ids: list[str] = []

    def start(self) -> None:
        quiet([self.program, "-S", str(SLOTS)], self.env)  # starts its server

    def submit(self, argv: list[str]) -> None:
        out = subprocess.run([self.program, *argv], env=self.env, check=True, capture_output=True, text=True,
                             stdin=subprocess.DEVNULL)
        self.ids.append(out.stdout.strip())

    def drained(self, timeout: float) -> None:
        for job_id in self.ids[-SLOTS:]:  # the last of each slot: the queue runs in order
            quiet([self.program, "-w", job_id], self.env, timeout=timeout)

    def stop(self) -> None:
        subprocess.run([self.program, "-K"], env=self.env, capture_output=True)


HUEY_TASKS = '''import subprocess

from huey import SqliteHuey

huey = SqliteHuey(filename={db!r})


@huey.task(name="run")
def run(argv):
    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
'''


class Huey:
    name = "huey"
    submit_means = "the task called in a Python process that imported it; the consumer polls SQLite every 0.1 s"
    drain_means = ("`huey_consumer -w 2 -k thread`, a task that runs `true` with subprocess; until the "
                   "consumer's log says every task executed")
    MODULE = "bench_huey_tasks"

    def __init__(self, where: str):
        self.where, self.log = where, os.path.join(where, "consumer.log")
        path = os.path.join(where, f"{self.MODULE}.py")
        with open(path, "w") as f:
            f.write(HUEY_TASKS.format(db=os.path.join(where, "huey.db")))
        spec = importlib.util.spec_from_file_location(self.MODULE, path)  # its tasks' names carry it
        self.tasks = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.tasks)
        self.env = dict(os.environ, PYTHONPATH=where)
        self.enqueue_argv = [sys.executable, "-c", f"import {self.MODULE} as t; t.run(['true'])"]
        self.submitted, self.seen, self.offset = 0, 0, 0
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        consumer = os.path.join(os.path.dirname(sys.executable), "huey_consumer")
        argv = [consumer] if os.access(consumer, os.X_OK) else [sys.executable, "-m", "huey.bin.huey_consumer"]
        self.proc = subprocess.Popen([*argv, f"{self.MODULE}.huey", "-w", str(SLOTS), "-k", "thread", "-d", "0.1",
                                      "-m", "0.1", "-l", self.log], env=self.env, cwd=self.where,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_until(lambda: os.path.exists(self.log) and b"consumer started" in open(self.log, "rb").read(), 30, 0.01)

    def submit(self, argv: list[str]) -> None:
        self.tasks.run(argv)
        self.submitted += 1

    def executed(self) -> int:
        """Tasks the consumer says it ran: its log's lines read since last time (a line a task)."""
        with open(self.log, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        whole = chunk[:chunk.rfind(b"\n") + 1]
        self.offset += len(whole)
        self.seen += whole.count(b" executed in ")
        return self.seen

    def drained(self, timeout: float) -> None:
        wait_until(lambda: self.executed() >= self.submitted, timeout, 0.005)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def task_spooler() -> str | None:
    """Debian names task-spooler's program `tsp`; elsewhere it is `ts`, which is also moreutils'."""
    if shutil.which("tsp"):
        return "tsp"
    if shutil.which("ts"):
        probe = subprocess.run(["ts", "-V"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if "Task Spooler" in probe.stdout + probe.stderr:
            return "ts"
    return None


def tools() -> tuple[dict[str, Callable[[str], Runner]], dict[str, str]]:
    """(name -> a maker of its runner in a directory, for each one installed; name -> how to get it,
    for each one not)."""
    found: dict[str, Callable[[str], Runner]] = {}
    missing: dict[str, str] = {}
    if shutil.which("nq"):
        found["nq"] = Nq
    else:
        missing["nq"] = "not installed: apt-get install nq"
    program = task_spooler()
    if program:
        found["task-spooler"] = lambda where: Tsp(where, program)
    else:
        missing["task-spooler"] = "not installed: apt-get install task-spooler"
    if importlib.util.find_spec("huey"):
        found["huey"] = Huey
    else:
        missing["huey"] = "not installed: pip install -e '.[bench]'"
    return found, missing


@contextlib.contextmanager
def running(runner: Runner) -> Iterator[Runner]:
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


def hold_slots(runner: Runner, where: str, tag: str) -> Callable[[], None]:
    """Make every slot of an idle runner busy with a job that `cat`s a FIFO of its own; returns
    what lets them all finish at once (closes the FIFOs' write ends: each `cat` reads its end)."""
    fifos = []
    for i in range(SLOTS):
        fifos.append(os.path.join(where, f"gate-{tag}-{i}"))
        os.mkfifo(fifos[-1], 0o600)
        runner.submit(["cat", fifos[-1]])
    held: list[int] = []
    for fifo in fifos:
        wait_until(lambda: opened_for_writing(fifo, held), 30, pause=0.002)

    def release() -> None:
        for fd in held:
            os.close(fd)

    return release


def opened_for_writing(fifo: str, held: list[int]) -> bool:
    """Opens the FIFO's write end once its job has the read end open (ENXIO until then)."""
    try:
        held.append(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        return True
    except OSError as e:
        if e.errno != errno.ENXIO:
            raise
        return False


def drain_seconds(runner: Runner, where: str, n: int, tag: str,
                  submit_all: Callable[[int], None] | None = None) -> float:
    """Both slots held busy while n jobs of `true` are queued behind them; then the seconds from
    letting the slots go until all n have run (the held jobs' own end included)."""
    release = hold_slots(runner, where, tag)
    if submit_all:
        submit_all(n)
    else:
        for _ in range(n):
            runner.submit(["true"])
    t0 = time.monotonic()
    release()
    runner.drained(300)
    return time.monotonic() - t0


def enqueue_pairs(spoolq: list[str], tmp: str, makers: dict[str, Callable[[str], Runner]],
                  n: int) -> dict[str, tuple[list[float], list[float]]]:
    """One enqueue of `true` by each tool, whole process, in turn with one `spoolq enqueue --cmd
    true` (no runner started: nq forks its job at once, task-spooler's first call starts its
    server): tool -> (its walls, spoolq's)."""
    spool_dir = os.path.join(tmp, "compare-enqueue")
    subprocess.run([*spoolq, "--spool", spool_dir, "init"], check=True, capture_output=True)
    runners = {name: make(tempfile.mkdtemp(dir=tmp, prefix=f"enqueue-{name}-")) for name, make in makers.items()}
    out: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in runners}
    try:
        for _ in range(n):
            for name, runner in runners.items():
                t0 = time.perf_counter()
                quiet(runner.enqueue_argv, runner.env, cwd=tmp)
                out[name][0].append(time.perf_counter() - t0)
                out[name][1].append(idlecost.process_seconds([*spoolq, "--spool", spool_dir, "enqueue", "--cmd",
                                                              "true"])[0])
    finally:
        for runner in runners.values():
            runner.stop()
    return out
