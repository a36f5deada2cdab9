"""Issue 5: many hosts on one shared file system, simulated on one machine.

Host A uses the spool directly; host B uses a bindfs (FUSE) passthrough view of the same
directory. B therefore gets no inotify events for A's writes, as an NFS client gets none for
another client's writes, and must be woken by polling. Each host's processes run with their own
SPOOLQ_HOST. Every worker is a real `spoolq worker start` process.

The view forwards locks to the directory below (``--enable-lock-forwarding``, which needs
``--multithreaded``): a flock taken through B excludes one taken on A, as a shared file system's
server makes it (without it, FUSE keeps B's flocks in B's kernel alone, and they exclude nobody
on A). The view is mounted with ``-o attr_timeout=0,entry_timeout=0,negative_timeout=0``. Without them
the kernel's FUSE cache (measured: ~1 s) keeps stat() results on B stale -- a heartbeat's mtime, a
config or stop file replaced by rename, a directory a rescuer renamed away -- while readdir is
always fresh. That is the analogue of NFS attribute caching (actimeo). These tests also pass with
bindfs's default caching (bindfs resolves every operation by path, so a renamed-away directory is
never reached through a stale entry); the options only keep the timing margins of a 2 s lease and a
0.5 s poll deterministic on a loaded machine.

If bindfs or FUSE is unavailable the tests are skipped with the reason (set SPOOLQ_REQUIRE_FUSE=1
to make that a failure instead).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

import dfs
from conftest import SPOOLQ, process_state, stop_gracefully, strace_path, wait_for
from spoolq import Spool
from spoolq.system import locks
from spoolq.store import config as config_mod
from spoolq.format.errors import SpoolError
from spoolq.format.states import State

BINDFS_OPTIONS = "attr_timeout=0,entry_timeout=0,negative_timeout=0"
BINDFS_LOCKS = ["--enable-lock-forwarding", "--multithreaded"]  # flocks reach the directory below, as on a server
RIG_MARK = "SPOOLQ_TEST_RIG"  # in the environment of every process the rig starts, and of their jobs
POLL = 0.5
SKEW_SECONDS = 3600.0  # host C's clock is this far ahead
SKEW = f"+{SKEW_SECONDS:.0f}s"


def _unavailable(reason: str) -> None:
    if os.environ.get("SPOOLQ_REQUIRE_FUSE") == "1":
        pytest.fail(f"multi-host rig unavailable: {reason}")
    pytest.skip(f"multi-host rig unavailable: {reason}")


class HostWorkers:
    """`spoolq worker start --count N` on one host, in the foreground, its log in a file."""

    def __init__(self, rig: "Rig", host: str, count: int):
        self.rig = rig
        self.host = host
        self.count = count
        self.log_path = rig.tmp / f"worker-{host}-{len(rig.procs)}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([*SPOOLQ, "--spool", rig.path(host), "worker", "start", "--count",
                                          str(count)], stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=rig.env(host), start_new_session=True)
        rig.procs.append(self.proc)

    def registrations(self) -> list:
        return [w for w in self.rig.spool().workers()
                if w.role == "worker" and w.extra.get("supervisor") == self.proc.pid]

    def wait_ready(self, timeout: float = 15) -> "HostWorkers":
        wait_for(lambda: len(self.registrations()) >= self.count or self.proc.poll() is not None, timeout,
                 f"{self.count} workers on host {self.host} to register")
        assert self.proc.poll() is None, f"workers on host {self.host} exited:\n{self.log()}"
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15) -> None:
        """Graceful stop (SIGTERM to the supervisor: running jobs finish first)."""
        stop_gracefully(self.proc, timeout)


class Rig:
    """Spool at <tmp>/spool (host A) and a bindfs view of it at <tmp>/hostB (host B); or, with
    a GlusterFS volume, one directory of it seen through host A's client and host B's."""

    def __init__(self, tmp: Path, gluster: dfs.Gluster | None = None, volume: str = ""):
        self.tmp = tmp
        self.mark = secrets.token_hex(8)
        self.procs: list[subprocess.Popen] = []
        self.bindfs: subprocess.Popen | None = None
        self.unsafe = volume == "stock"  # workers refuse such a spool unless told otherwise
        self.gluster, self.volume = gluster, volume
        self.cut_off: set[str] = set()  # hosts partitioned, reconnected at close
        if gluster is None:
            self.a, self.b = str(tmp / "spool"), str(tmp / "hostB")
            os.mkdir(self.b)
        else:
            self.name = gluster.new_dir(volume, f"spool-{self.mark}")
            self.a, self.b = (os.path.join(gluster.mount(volume, h), self.name) for h in ("A", "B"))
        Spool(self.a)

    # ---- the FUSE view -------------------------------------------------------------------

    def mount(self) -> None:
        exe = shutil.which("bindfs")
        if exe is None:
            _unavailable("bindfs is not installed (Debian package 'bindfs'; .ci/run installs it)")
        if not os.path.exists("/dev/fuse"):
            _unavailable("/dev/fuse is missing: FUSE is not available here")
        # -f: stay in the foreground, so the rig owns the daemon; --no-allow-other: no need for
        # user_allow_other in /etc/fuse.conf, every process of the test runs as the mounting user.
        self.bindfs = subprocess.Popen([exe, "-f", "--no-allow-other", *BINDFS_LOCKS, "-o", BINDFS_OPTIONS, self.a, self.b],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not (os.path.ismount(self.b) and os.path.isdir(os.path.join(self.b, "pending"))):
            if self.bindfs.poll() is not None:
                code = self.bindfs.returncode
                out = self.bindfs.stdout.read().decode(errors="replace").strip() if self.bindfs.stdout else ""
                self.bindfs = None
                _unavailable(f"bindfs could not mount {self.a} on {self.b}: {out or f'exit status {code}'}")
            if time.monotonic() > deadline:
                self.close()
                _unavailable("bindfs did not mount within 10s")
            time.sleep(0.02)

    def close(self) -> None:
        """Kill everything the rig started (stopped processes included), then unmount. Never raises."""
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._kill_marked()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if self.bindfs is None:
            for host in list(self.cut_off):
                self.heal(host)  # the next test's rig mounts the volume there again
            shutil.rmtree(self.a, ignore_errors=True)  # on the session's Gluster volume: leave it clean
            if self.gluster is not None:
                self.gluster.unmount(self.volume, "C")  # the skewed host's client, if it was made
            return
        deadline = time.monotonic() + 5
        while os.path.ismount(self.b):
            r = subprocess.run(["fusermount", "-u", self.b], capture_output=True)
            if r.returncode != 0 and shutil.which("fusermount") is None:
                subprocess.run(["umount", self.b], capture_output=True)
            if not os.path.ismount(self.b):
                break
            if time.monotonic() > deadline:
                subprocess.run(["fusermount", "-uz", self.b], capture_output=True)  # lazy: last resort
                break
            self._kill_marked()
            time.sleep(0.1)
        try:
            self.bindfs.wait(5)
        except subprocess.TimeoutExpired:
            self.bindfs.kill()
            self.bindfs.wait()

    def _kill_marked(self) -> None:
        """SIGKILL the process group of every process carrying this rig's mark (jobs run in their own)."""
        needle = f"{RIG_MARK}={self.mark}".encode()
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if needle not in f.read().split(b"\0"):
                        continue
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                continue

    # ---- driving the hosts ---------------------------------------------------------------

    def path(self, host: str) -> str:
        """Host C is an hour ahead: its processes' clocks, and on Gluster its client's too (on
        bindfs it shares B's view)."""
        if host == "C" and self.gluster is not None:
            return os.path.join(self.gluster.mount(self.volume, "C", skew=SKEW), self.name)
        return self.a if host == "A" else self.b

    def env(self, host: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("SPOOLQ_DIR", "SPOOLQ_HOST")}
        env = {**env, "SPOOLQ_HOST": host, RIG_MARK: self.mark, **(dfs.skewed_python(SKEW_SECONDS, self.tmp / "skew") if host == "C" else {})}
        return {**env, "SPOOLQ_ALLOW_UNSAFE_FS": "1"} if self.unsafe else env

    def spool(self, host: str = "A") -> Spool:
        """An in-process view for reading state (never recovers: that would take a host's identity)."""
        return Spool(self.path(host))

    def run(self, host: str, *args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*SPOOLQ, "--spool", self.path(host), *args], capture_output=True, text=True,
                              input=input, timeout=timeout, env=self.env(host))

    def ok(self, host: str, *args: str, input: str | None = None) -> str:
        r = self.run(host, *args, input=input)
        assert r.returncode == 0, f"spoolq {' '.join(args)} on {host}: {r.returncode}\n{r.stdout}{r.stderr}"
        assert "Traceback" not in r.stderr, r.stderr
        return r.stdout

    def start(self, host: str, count: int = 1) -> HostWorkers:
        return HostWorkers(self, host, count).wait_ready()

    def workers(self, host: str) -> list:
        return [w for w in self.spool().workers() if w.role == "worker" and w.host == host]

    def partition(self, host: str) -> None:
        """Cut `host` off from the spool, its processes up (Gluster only: its client is killed)."""
        assert self.gluster is not None
        self.gluster.partition(self.volume, host)
        self.cut_off.add(host)

    def heal(self, host: str) -> None:
        assert self.gluster is not None
        self.gluster.heal(self.volume, host)
        self.cut_off.discard(host)


@pytest.fixture(params=["bindfs", "gluster-strict", "gluster-stock"])
def rig(request, tmp_path):
    yield from _rig(request, tmp_path)


@pytest.fixture(params=["bindfs", "gluster-strict"])
def safe_rig(request, tmp_path):
    yield from _rig(request, tmp_path)


@pytest.fixture
def strict_rig(request, tmp_path):
    """Strict GlusterFS only: the rig that can cut a host off (Rig.partition)."""
    yield from _rig(request, tmp_path, "gluster-strict")


def _rig(request, tmp_path, kind: str | None = None):
    kind = kind or request.param
    if kind == "bindfs":
        r = Rig(tmp_path)
    else:
        r = Rig(tmp_path, request.getfixturevalue("gluster"), kind.split("-")[1])
    try:
        if kind == "bindfs":
            r.mount()
        # Settings written through both views: the config lock is taken on A and on B.
        r.ok("B", "config", "set", "poll_interval", str(POLL))
        r.ok("A", "config", "set", "backoff_base", "0")
        yield r
    finally:
        r.close()


def _find_job_files(root: str, job_id: str) -> list[str]:
    """Every file anywhere in the state directories that holds job `job_id`."""
    hits = []
    for state in ("pending", "processing", "done", "dead"):
        for dirpath, _dirs, files in os.walk(os.path.join(root, state)):
            for name in files:
                if name == f"{job_id}.json" or name.endswith(f"@{job_id}.json"):
                    hits.append(os.path.relpath(os.path.join(dirpath, name), root))
    return hits


@contextlib.contextmanager
def frozen(job_pgid: int, worker_pid: int) -> Iterator[float]:
    """A host frozen (a VM paused, SIGSTOP): its job's process group and its worker process, the
    heartbeat thread with it; woken again at the end. Yields when it froze."""
    os.killpg(job_pgid, signal.SIGSTOP)
    os.kill(worker_pid, signal.SIGSTOP)
    try:
        yield time.monotonic()
    finally:
        os.kill(worker_pid, signal.SIGCONT)
        os.killpg(job_pgid, signal.SIGCONT)


# ---- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("shards", [0, 60], ids=["flat", "sharded"])
def test_b_runs_jobs_enqueued_on_a_within_two_poll_intervals(rig, tmp_path, shards):
    if shards:
        rig.spool("A").set_config("pending_shards", shards)  # B polls pending/ and its newest shards
    b = rig.start("B", 1)
    # B's spool is on FUSE: the worker says that polling, not events, wakes it for other hosts.
    wait_for(lambda: "is what wakes this worker" in b.log(), 5, "B's wake-up announcement")
    line = next(l for l in b.log().splitlines() if "is what wakes this worker" in l)
    assert "spool is on fuse" in line and f"polling every {POLL:g}s" in line, line

    spool_a = rig.spool("A")
    out = tmp_path / "out"
    out.mkdir()
    latencies = []
    for i in range(3):
        time.sleep(0.17 * i)  # land at different points of B's polling cycle
        t0 = time.time()
        job = spool_a.enqueue({"command": f'date +%s.%N > {out}/{i}.t; echo "$SPOOLQ_HOST" > {out}/{i}.host'})
        wait_for(lambda: spool_a.find(job.id).state == "done", 10, f"job {i} to run on B")
        latencies.append(float((out / f"{i}.t").read_text()) - t0)
        assert (out / f"{i}.host").read_text().strip() == "B"
    assert max(latencies) <= 2 * POLL, f"start latencies on B: {latencies}"


@pytest.mark.parametrize("shards", [0, 60], ids=["flat", "sharded"])
def test_many_jobs_on_both_hosts_each_run_exactly_once(rig, tmp_path, shards):
    if shards:
        rig.spool("A").set_config("pending_shards", shards)
    ran = tmp_path / "ran.txt"
    a = rig.start("A", 2)
    b = rig.start("B", 2)

    hosts = {w["host"] for w in json.loads(rig.ok("A", "worker", "list", "--json"))}
    assert hosts == {"A", "B"}
    assert {w["host"] for w in json.loads(rig.ok("B", "worker", "list", "--json"))} == {"A", "B"}

    n = 600 if rig.gluster is None else 300  # Gluster here: ~40 jobs/s, all hosts together
    # Each job lasts ~10 ms so the run spans several of B's polls: instant jobs can all be gone,
    # run by A's event-driven workers, before B's next rescan on a loaded machine.
    cmd = f'sleep 0.01; echo "$SPOOLQ_JOB_ID $SPOOLQ_HOST" >> {ran}'
    batch = "".join(json.dumps({"id": f"j{i:04d}", "command": cmd})
                    + "\n" for i in range(n))
    rig.ok("A", "enqueue", "--batch", "-", input=batch)
    r = rig.run("B", "wait", "--timeout", "120", timeout=150)  # ~25 s on Gluster, unloaded
    assert r.returncode == 0, r.stdout + r.stderr + a.log() + b.log()

    lines = ran.read_text().split()
    ids, hosts = lines[0::2], lines[1::2]
    assert len(ids) == n and set(ids) == {f"j{i:04d}" for i in range(n)}, "some job ran twice or never"
    counts = {h: hosts.count(h) for h in set(hosts)}
    assert set(counts) == {"A", "B"}, counts
    status = json.loads(rig.ok("A", "status", "--json"))
    assert status["done"] == n and status["dead"] == 0 and status["processing"] == 0, status
    for log in (a.log(), b.log()):
        assert "recovered" not in log and "discarded" not in log, log


HOLD_US = 3_000_000  # how long strace holds host B's worker after its claim's move of the job


def test_a_job_two_hosts_claim_at_once_runs_once_on_a_file_system_without_renameat2_flags(safe_rig, tmp_path):
    """Where renameat2(RENAME_NOREPLACE) is refused (FUSE, NFS, GlusterFS) a claim linked the
    pending file into its owner's directory, then unlinked the pending name: the pending name
    stayed for that moment, and host A's claim took it too. The job then had two names, every
    claimer read it as "has 2 hard links", and it was quarantined as malformed instead of run
    (two claims by link at once: both kept it, or both quarantined it)."""
    a = safe_rig.spool("A")
    proof = tmp_path / "ran"
    a.enqueue({"id": "once", "command": f'echo "$SPOOLQ_HOST" >> {proof}'})
    (entry,) = os.listdir(a.layout.pending)
    calls = "link,linkat,rename,renameat,renameat2"
    worker = subprocess.Popen([strace_path(), "-f", "-qq", "-e", "signal=none", "-o", "/dev/null",
                               "-P", os.path.join(safe_rig.path("B"), "pending", entry),
                               "-e", f"trace={calls}", "-e", f"inject={calls}:delay_exit={HOLD_US}",
                               *SPOOLQ, "--spool", safe_rig.path("B"), "worker", "start", "--burst"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=safe_rig.env("B"), start_new_session=True)
    safe_rig.procs.append(worker)
    wait_for(lambda: [d for d in os.listdir(a.layout.processing)
                      if os.path.exists(os.path.join(a.layout.processing, d, "once.json"))], 30,
             "host B's claim to move the job into its directory")
    claimed = a.transitions.claim(entry, a.owners.register("worker"))
    if claimed is not None:
        proof.open("a").write("A\n")
        a.transitions.finish(claimed, ok=True, exit_code=0, error=None)
    out, _ = worker.communicate(timeout=60)
    runs = proof.read_text().split() if proof.exists() else []
    assert len(runs) == 1, f"ran on {runs}; dead/ holds {os.listdir(a.layout.dead)}\n{out.decode()}"
    assert a.find("once").state == State.DONE and not os.listdir(a.layout.dead)


def test_frozen_host_loses_its_lease_and_its_late_result_is_discarded(rig, tmp_path):
    rig.ok("A", "config", "set", "lease_timeout", "2")
    d = tmp_path / "j"
    d.mkdir()
    b = rig.start("B", 1)
    (b_worker,) = rig.workers("B")

    cmd = (f'if [ "$SPOOLQ_HOST" = B ]; then echo $$ > {d}/b.pid; sleep 3; echo late > {d}/b.late; exit 7; fi; '
           f'echo "$SPOOLQ_HOST $SPOOLQ_ATTEMPT" > {d}/a.ran')
    spool = rig.spool("A")
    job = spool.enqueue({"id": "frozen", "command": cmd, "max_retries": 3})
    wait_for(lambda: (d / "b.pid").exists() and (d / "b.pid").read_text().strip(), 5, "B to start the job")
    job_pgid = int((d / "b.pid").read_text())

    with frozen(job_pgid, b_worker.pid) as frozen_at:
        a = rig.start("A", 1)
        wait_for(lambda: spool.find(job.id).state == "done", 15, "A to recover and re-run the job")
        assert time.monotonic() - frozen_at >= 2, "recovered before the lease ran out"
        assert (d / "a.ran").read_text().split() == ["A", "2"]
        assert "recovered job frozen" in a.log(), a.log()
        a.stop()  # from here on only B can take jobs

    wait_for(lambda: "result of job frozen attempt 1 discarded" in b.log()
             and "result discarded" in Path(spool.output_path(job.id)).read_text(), 10,
             "B to discard its late result")
    shown = json.loads(rig.ok("B", "show", job.id, "--json"))
    assert (shown["state"], shown["attempts"], shown["exit_code"]) == ("done", 2, 0), shown
    assert "stopped during attempt 1" in (shown["last_error"] or ""), shown
    assert _find_job_files(rig.a, job.id) == [os.path.join("done", "frozen.json")]
    log = rig.ok("A", "logs", job.id)
    assert "attempt 2 of 4 on A" in log and "finished in" in log, log
    # B's late footer (exit status 7, or aborted) is followed by the mark that it is not the result.
    assert log.rstrip().endswith("==> attempt 1 on B: result discarded, the job was recovered elsewhere <=="), log

    # B's worker survived: same process, running (not crashed, not restarted), registered anew.
    assert process_state(b_worker.pid) in ("S", "R"), process_state(b_worker.pid)
    wait_for(lambda: [w for w in rig.workers("B") if w.pid == b_worker.pid and w.owner != b_worker.owner], 5,
             "B's worker to register under a new identity")
    assert "continuing under a new identity" in b.log()
    assert "crashed" not in b.log() and "Traceback" not in b.log(), b.log()
    nxt = spool.enqueue({"command": f'echo "$SPOOLQ_HOST" > {d}/next.host'})
    wait_for(lambda: spool.find(nxt.id).state == "done", 5, "B's worker to take a new job")
    assert (d / "next.host").read_text().strip() == "B"
    assert process_state(b_worker.pid) in ("S", "R")
    # Nothing else moved: still exactly one copy of the frozen job, in done/.
    assert _find_job_files(rig.a, job.id) == [os.path.join("done", "frozen.json")]
    # B's supervisor was never frozen: it heartbeats, so no sweep took it for dead.
    assert [w for w in rig.spool().workers() if w.role == "supervisor" and w.pid == b.proc.pid]


def test_worker_stop_on_a_stops_workers_on_b(rig):
    a = rig.start("A", 1)
    b = rig.start("B", 2)
    time.sleep(POLL)  # let B settle into its idle polling cycle
    t0 = time.monotonic()
    rig.spool("A").request_stop()  # what `worker stop` does on A, timed without the CLI's start-up
    b.proc.wait(2 * POLL + 2)
    took = time.monotonic() - t0
    assert b.proc.returncode == 0, b.log()
    assert took <= 2 * POLL + 1, f"B's workers took {took:.2f}s to stop"
    assert b.log().count("stop requested") == 2, b.log()
    a.proc.wait(5)
    assert rig.workers("A") == [] and rig.workers("B") == []


def test_worker_stop_cli_reaches_every_host(rig):
    rig.start("A", 1)
    b = rig.start("B", 1)
    r = rig.run("A", "worker", "stop", "--wait", "--timeout", "10")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "stop requested for 2 workers" in r.stdout and "all workers stopped" in r.stdout, r.stdout
    b.proc.wait(5)
    assert b.proc.returncode == 0


def test_config_lock_excludes_across_hosts(safe_rig, tmp_path):
    """The config/metadata lock (a flock the file system forwards) admits one holder at a time, whichever view
    each contender uses: a read-modify-write counter under it loses no update. Not on stock
    GlusterFS: there host B may read the config host A replaced a moment ago from its cache, under
    the lock, and lose A's setting (test_dfs shows the stale read), which is why workers refuse it."""
    rig = safe_rig
    counter = tmp_path / "counter"
    counter.write_text("0")
    script = (
        "import os, sys, time\n"
        "from spoolq.format import layout; from spoolq.store import config\n"
        "lay = layout.Layout(sys.argv[1])\n"
        "while not os.path.exists(sys.argv[2] + '.go'):\n"  # start together: contention is the point
        "    time.sleep(0.002)\n"
        "for _ in range(int(sys.argv[3])):\n"
        "    with config.locked(lay, 'rig-test', mode=0o600):\n"
        "        n = int(open(sys.argv[2]).read())\n"
        "        tmp = sys.argv[2] + '.' + str(os.getpid())\n"
        "        open(tmp, 'w').write(str(n + 1))\n"
        "        os.rename(tmp, sys.argv[2])\n"
    )
    per_host = 150
    procs = [subprocess.Popen([SPOOLQ[0], "-c", script, rig.path(h), str(counter), str(per_host)], env=rig.env(h))
             for h in ("A", "B", "A", "B")]
    rig.procs.extend(procs)
    time.sleep(0.5)
    (tmp_path / "counter.go").touch()
    for p in procs:
        assert p.wait(30) == 0
    assert int(counter.read_text()) == 4 * per_host
    assert locks.holder(os.path.join(rig.a, "locks", "rig-test.flock")) is None  # let go by every holder

    # And the real read-modify-write: settings saved from both hosts at once all survive.
    keys = {"A": ("max_retries", "7"), "B": ("job_timeout", "9")}
    runs = [subprocess.Popen([*SPOOLQ, "--spool", rig.path(h), "config", "set", *keys[h]], env=rig.env(h),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for h in ("A", "B")]
    for p in runs:
        assert p.wait(30) == 0, p.stderr.read()
    cfg = config_mod.load(rig.spool("A").layout)
    assert (cfg.max_retries, cfg.job_timeout, cfg.poll_interval, cfg.backoff_base) == (7, 9, POLL, 0)


HOLD = ("import sys, time\nfrom spoolq.format import layout; from spoolq.store import config\n"
        "with config.locked(layout.Layout(sys.argv[1]), sys.argv[2], mode=0o600):\n"
        "    print('held', flush=True)\n    time.sleep(120)\n")


@pytest.mark.parametrize("name", ["dlq", "retention"])
def test_a_lock_holder_killed_on_another_host_lets_this_host_in_at_once(rig, name):
    """A process on host B holds a spool lock (a `dlq retry`, a worker's retention) and is
    SIGKILLed: host A, which cannot judge B's pid, takes the lock at once, with nothing done by
    hand; while B held it, A's wait timed out naming B's holder."""
    b = subprocess.Popen([SPOOLQ[0], "-c", HOLD, rig.path("B"), name], env=rig.env("B"),
                         stdout=subprocess.PIPE, text=True, start_new_session=True)
    rig.procs.append(b)
    assert b.stdout.readline() == "held\n"
    lay = rig.spool("A").layout

    def says_who() -> str:
        with pytest.raises(SpoolError) as refused:  # B holds it: A never gets it
            with config_mod.locked(lay, name, mode=0o600, timeout=0.3):
                pass
        return str(refused.value)

    # The stock volume caches what A reads for about a second: B's record may show blank at first.
    wait_for(lambda: f"held by pid {b.pid} on host B" in says_who(), 10, "A's wait to name B's holder")
    b.kill()
    b.wait()
    started = time.monotonic()
    with config_mod.locked(lay, name, mode=0o600, timeout=5):
        took = time.monotonic() - started
    assert took < 1, f"host A waited {took:.2f}s for a dead holder's lock"
    assert "purged" in rig.ok("A", "purge")  # and the command that takes it runs


def test_a_host_an_hour_ahead_neither_steals_nor_keeps_jobs(safe_rig, tmp_path):
    """Leases are judged on the file system's clock, never a host's: host C, an hour ahead,
    takes no live job of A's and keeps none of its own past the lease when it freezes; and a
    stop asked for on C stops A's workers and no later ones."""
    rig = safe_rig
    rig.ok("A", "config", "set", "lease_timeout", "2")
    c_now = subprocess.run([SPOOLQ[0], "-c", "import time; print(time.time())"], capture_output=True, text=True,
                           env=rig.env("C")).stdout
    assert float(c_now) - time.time() > 3500, "host C's clock is not skewed"
    d = tmp_path / "j"
    d.mkdir()
    a = rig.start("A", 1)
    c = rig.start("C", 1)
    spool = rig.spool("A")
    # Two jobs that outlast the lease twice over, one on each host (each host has one worker).
    cmd = f'echo $$ > {d}/$SPOOLQ_HOST.pid; echo "$SPOOLQ_JOB_ID $SPOOLQ_ATTEMPT" >> {d}/$SPOOLQ_HOST.ran; sleep 4'
    jobs = [spool.enqueue({"id": f"long{i}", "command": cmd}) for i in range(2)]
    try:
        wait_for(lambda: (d / "A.pid").exists() and (d / "C.pid").exists(), 10, "a job to start on A and on C")
    except AssertionError:
        raise AssertionError(a.log() + c.log() + str(os.listdir(d)))
    r = rig.run("C", "wait", *[j.id for j in jobs], "--timeout", "20", timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr + a.log() + c.log()
    for job in jobs:
        if spool.find(job.id).to_dict()["attempts"] != 1:
            open("/tmp/hour.debug", "w").write(f"{spool.find(job.id).to_dict()}\n{a.log()}\n{c.log()}")
        assert spool.find(job.id).to_dict()["attempts"] == 1
    for log in (a.log(), c.log()):
        assert "recovered" not in log and "discarded" not in log, log

    # C freezes mid-job: A takes the job back once the lease is out, not at once, not in an hour.
    (d / "C.pid").unlink()
    a.stop()  # only C can take it
    job = spool.enqueue({"id": "frozen", "command": f'if [ "$SPOOLQ_HOST" = C ]; then echo $$ > {d}/C.pid; '
                                                    f'sleep 30; fi'})
    wait_for(lambda: (d / "C.pid").exists() and (d / "C.pid").read_text().strip(), 10, "C to start the job")
    (c_worker,) = rig.workers("C")
    with frozen(int((d / "C.pid").read_text()), c_worker.pid) as frozen_at:
        a = rig.start("A", 1)
        wait_for(lambda: spool.find(job.id).state == "done", 15, "A to take the frozen job back and run it")
        assert time.monotonic() - frozen_at >= 2, "taken back before the lease ran out"
        assert "recovered job frozen" in a.log(), a.log()

    # A stop asked for on C, an hour ahead, stops A's worker, which began before it.
    rig.ok("C", "worker", "stop")
    a.proc.wait(2 * POLL + 5)
    assert a.proc.returncode == 0 and "stop requested" in a.log(), a.log()
    # ... and a worker A starts after that stop request is not stopped by it.
    late = rig.start("A", 1)
    time.sleep(2 * POLL)  # two of its polls: a stop it wrongly took for its own would have acted
    assert late.proc.poll() is None, late.log()


def test_cancel_kill_on_a_kills_the_job_running_on_b(rig, tmp_path):
    rig.start("B", 1)
    child = tmp_path / "child.pid"
    spool_a = rig.spool("A")
    job = spool_a.enqueue({"command": f"sleep 60 & echo $! > {child}; wait", "max_retries": 3})
    wait_for(lambda: child.exists() and child.read_text().strip(), 2 * POLL + 5, "the job to start on B")
    r = rig.run("A", "cancel", "--kill", job.id)
    assert r.returncode == 0 and r.stdout == f"{job.id}: killed by its worker: cancelled\n", r.stdout + r.stderr
    view = spool_a.find(job.id)
    assert (view.state, view.job.last_error, view.job.attempts) == ("dead", "cancelled", 1)
    pid = int(child.read_text())
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z",
             10, "the job's child on B to be killed")


def test_pause_on_a_holds_the_workers_on_b_until_resume(rig, tmp_path):
    b = rig.start("B", 2)
    r = rig.run("A", "pause", "--queue", "video")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: b.log().count("queues paused, passed over: video") == 2, 2 * POLL + 5,
             "both workers on B to pass over the paused queue")
    spool_a = rig.spool("A")
    held = spool_a.enqueue({"queue": "video", "command": "true"})
    free = spool_a.enqueue({"queue": "mail", "command": "true"})
    wait_for(lambda: spool_a.find(free.id).state == "done", 2 * POLL + 5, "the other queue's job to run on B")
    assert spool_a.find(held.id).state == "pending"  # seen by B's listing with the other, and passed over
    assert rig.run("A", "resume", "--queue", "video").returncode == 0
    wait_for(lambda: spool_a.find(held.id).state == "done", 2 * POLL + 5, "the job to run on B after resume")


def test_a_queue_limit_holds_across_hosts(rig, tmp_path):
    """`queue set --concurrency 2`, 3 workers on each of two hosts, 200 short jobs: never more than
    2 at once, as the jobs themselves see it."""
    marks = tmp_path / "marks"
    marks.mkdir()
    assert rig.run("A", "queue", "set", "enc", "--concurrency", "2").returncode == 0
    spool_a = rig.spool("A")
    batch = "".join(json.dumps({"queue": "enc", "command": f"mkdir {marks}/{i}; sleep 0.01; ls {marks} | wc -l "
                                f">> {marks}.seen; rmdir {marks}/{i}"}) + "\n" for i in range(200))
    assert rig.run("A", "enqueue", "--batch", "-", input=batch).returncode == 0
    rig.start("A", 3)
    rig.start("B", 3)
    wait_for(lambda: spool_a.counts().done == 200, 120, "every job to run")
    seen = [int(n) for n in (tmp_path / "marks.seen").read_text().split()]
    assert len(seen) == 200 and max(seen) <= 2, max(seen)
    # The last job's slot is given back once its file has moved to done/: just after the count.
    wait_for(lambda: spool_a.slots.in_use() == {}, 10, "every slot to be given back")


# ---- partitions: a host cut off from the spool, its processes up ------------------------------


def _marking(marks: Path, b_seconds: float = 30, a_seconds: float = 2) -> str:
    """A job that, every 0.1 s while it runs, appends "<host> <job id> <time>" to `marks`: a
    local file, which a host cut off from the spool can still write."""
    return (f'if [ "$SPOOLQ_HOST" = B ]; then n={int(b_seconds * 10)}; else n={int(a_seconds * 10)}; fi; i=0; '
            f'while [ $i -lt $n ]; do echo "$SPOOLQ_HOST $SPOOLQ_JOB_ID $(date +%s.%N)" >> {marks}; '
            'sleep 0.1; i=$((i+1)); done')


def _runs(marks: Path) -> dict[tuple[str, str], list[float]]:
    """(host, job id) -> the times its copy there said it was running."""
    out: dict[tuple[str, str], list[float]] = {}
    for line in (marks.read_text().splitlines() if marks.exists() else []):
        words = line.split()
        if len(words) == 3:
            out.setdefault((words[0], words[1]), []).append(float(words[2]))
    return out


def _last_renewal(rig: Rig, owner: str) -> float:
    """The mtime of `owner`'s registration, read through A: its last heartbeat (the file
    system's clock is this machine's)."""
    return os.stat(os.path.join(rig.a, "workers", f"{owner}.json")).st_mtime


LEASE = 4.0


@pytest.mark.parametrize("limit", [0, 1], ids=["unlimited", "concurrency-1"])
def test_a_cut_off_host_stops_its_job_before_its_lease_can_run_out(strict_rig, tmp_path, limit):
    """Host B runs a 30 s job, lease 4 s, and is cut off from the spool. B's worker cannot renew
    its lease: it kills the job before the lease can run out for anyone else; host A takes the
    job back after the lease and runs it; the two copies never overlap. With `--concurrency 1`
    the queue never has two jobs running, as the jobs saw it (A's next job waits for B's slot,
    given back once the lease ran out). Reconnected, B records nothing: its result is discarded."""
    rig = strict_rig
    rig.ok("A", "config", "set", "lease_timeout", f"{LEASE:g}")
    if limit:
        rig.ok("A", "queue", "set", "enc", "--concurrency", str(limit))
    marks = tmp_path / "marks"
    b = rig.start("B", 1)
    (b_worker,) = rig.workers("B")
    spool = rig.spool("A")
    spool.enqueue({"id": "long", "queue": "enc", "command": _marking(marks), "max_retries": 3})
    wait_for(lambda: _runs(marks).get(("B", "long")), 10, "B to start the job")
    if limit:
        spool.enqueue({"id": "next", "queue": "enc", "command": _marking(marks)})
    a = rig.start("A", 2)
    rig.partition("B")
    renewed = _last_renewal(rig, b_worker.owner)
    wait_for(lambda: _runs(marks).get(("A", "long")), 30, "A to take the job back and run it")
    wait_for(lambda: spool.find("long").state == "done" and (not limit or spool.find("next").state == "done"),
             30, "A to run what there is")
    runs = _runs(marks)
    b_last = max(runs[("B", "long")])
    a_first = min(t for (host, _), times in runs.items() if host == "A" for t in times)
    print(f"partition, lease {LEASE:g}s: B's copy stopped {b_last - renewed:.2f}s after its last renewal, "
          f"A's started {a_first - renewed:.2f}s after it: {a_first - b_last:.2f}s apart")  # -s shows it
    assert b_last < renewed + LEASE, f"B's copy ran {b_last - renewed - LEASE:.2f}s past its lease"
    assert b_last < a_first, f"both hosts ran a job of the queue for {b_last - a_first:.2f}s"
    assert "could not renew its lease" in b.log(), b.log()
    rig.heal("B")
    wait_for(lambda: "result of job long attempt 1 discarded" in b.log(), 30, "B to find its job taken back")
    assert _find_job_files(rig.a, "long") == [os.path.join("done", "long.json")]
    assert spool.find("long").to_dict()["attempts"] == 2
    assert "Traceback" not in b.log() and "crashed" not in b.log(), b.log()
    a.stop()


def test_a_frozen_host_s_job_acts_at_most_a_moment_after_it_wakes(strict_rig, tmp_path):
    """Host B frozen (its worker and its job SIGSTOPped: a VM paused) past its lease; A takes
    the job back and runs it. The frozen copy can do nothing while frozen; woken (the job first,
    the worst order), it is killed by B's lease guard before it can act more than once."""
    rig = strict_rig
    rig.ok("A", "config", "set", "lease_timeout", f"{LEASE:g}")
    marks, pid = tmp_path / "marks", tmp_path / "b.pid"
    b = rig.start("B", 1)
    (b_worker,) = rig.workers("B")
    spool = rig.spool("A")
    spool.enqueue({"id": "long", "command": f'[ "$SPOOLQ_HOST" = B ] && echo $$ > {pid}; ' + _marking(marks, 30, 10),
                   "max_retries": 3})
    wait_for(lambda: _runs(marks).get(("B", "long")) and pid.exists() and pid.read_text().strip(), 10,
             "B to start the job")
    job_pgid = int(pid.read_text())
    rig.start("A", 1)
    os.killpg(job_pgid, signal.SIGSTOP)
    os.kill(b_worker.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: _runs(marks).get(("A", "long")), 30, "A to take the job back and run it")
    finally:
        woke = time.time()
        os.killpg(job_pgid, signal.SIGCONT)
        os.kill(b_worker.pid, signal.SIGCONT)
    wait_for(lambda: "result of job long attempt 1 discarded" in b.log(), 30, "B to find its job taken back")
    after = [t for t in _runs(marks)[("B", "long")] if t >= woke]
    print(f"frozen, lease {LEASE:g}s: B's copy acted {len(after)} times after waking, for "
          f"{max(after) - woke if after else 0:.3f}s")  # -s shows it
    assert len(after) <= 1 and (not after or max(after) - woke < 0.2), after


def test_cancel_kill_of_a_job_on_a_cut_off_host_says_what_is_known(strict_rig, tmp_path):
    """`cancel --kill` on A of a job running on B, cut off: nobody on B can see the request, and
    A's rescuer records the job cancelled once B's lease ran out. cancel says so, with B's host
    and when B's own worker stopped it, never "killed by its worker"; and B's copy had stopped."""
    rig = strict_rig
    rig.ok("A", "config", "set", "lease_timeout", f"{LEASE:g}")
    marks = tmp_path / "marks"
    rig.start("B", 1)
    (b_worker,) = rig.workers("B")
    spool = rig.spool("A")
    spool.enqueue({"id": "long", "command": _marking(marks), "max_retries": 3})
    wait_for(lambda: _runs(marks).get(("B", "long")), 10, "B to start the job")
    rig.start("A", 1)
    rig.partition("B")
    renewed = _last_renewal(rig, b_worker.owner)
    r = rig.run("A", "cancel", "--kill", "long")
    done_at = time.time()
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("long: recorded as cancelled: its worker on B could not be reached"), r.stdout
    assert "killed by its worker" not in r.stdout
    view = spool.find("long")
    assert (view.state, view.job.last_error) == ("dead", "cancelled")
    b_last = max(_runs(marks)[("B", "long")])
    assert b_last < renewed + LEASE < done_at, (b_last - renewed, done_at - renewed)


def test_a_worker_cut_off_from_the_spool_says_so_in_one_line_and_comes_back(strict_rig, tmp_path):
    """Two workers on B, one running a job that writes output (its log is on the spool), one
    idle; B is cut off, then reconnected. No traceback: a line that says what failed, the job
    killed before its lease could run out, and the supervisor's workers run jobs again after."""
    rig = strict_rig
    rig.ok("A", "config", "set", "lease_timeout", f"{LEASE:g}")
    b = rig.start("B", 2)
    spool = rig.spool("A")
    spool.enqueue({"id": "talky", "command": "while true; do echo tick; sleep 0.1; done", "max_retries": 0})
    log = Path(spool.output_path("talky"))
    wait_for(lambda: log.exists() and b"tick" in log.read_bytes(), 10, "the job to run on B")
    rig.partition("B")
    wait_for(lambda: "the spool's file system failed" in b.log() or "Traceback" in b.log(), 15,
             "B's workers to say they lost the spool")
    assert "Traceback" not in b.log(), b.log()
    wait_for(lambda: "could not renew its lease" in b.log(), 15, "B's worker to kill its job")
    rig.heal("B")
    nxt = spool.enqueue({"command": "true"})
    wait_for(lambda: spool.find(nxt.id).state == "done", 30, "B's workers to come back and run a job")
    wait_for(lambda: spool.find("talky").state == "dead", 30, "the killed job to be recorded")
    # Recorded by its worker once the spool answers again, or by a rescuer if that worker left
    # first (a new registration could not be written: it exits, and its supervisor starts another).
    error = spool.find("talky").job.last_error or ""
    assert "could not renew its lease" in error or "stopped during attempt 1" in error, (error, b.log())
    assert "Traceback" not in b.log() and "crashed" not in b.log(), b.log()


@pytest.mark.parametrize("steps", [("2",), ("3600", "2")], ids=["lowered", "raised-then-lowered"])
def test_a_lease_lowered_on_a_live_spool_takes_no_live_worker(strict_rig, tmp_path, steps):
    """Three workers on each of two hosts beat every 5 s (lease 30), four of them running a 12 s
    job, the others idle (they sweep for dead owners every 2 s); the lease is lowered to 2 s (or
    raised to an hour, then lowered). A registration is judged by the lease it was written
    under, and each owner records the new one as it starts beating under it: no live worker or
    supervisor is taken for dead (fenced), every job runs once."""
    rig = strict_rig
    marks = tmp_path / "marks"
    a, b = rig.start("A", 3), rig.start("B", 3)
    spool = rig.spool("A")
    for i in range(4):
        spool.enqueue({"id": f"j{i}", "command": _marking(marks, 12, 12), "max_retries": 3})
    wait_for(lambda: len(_runs(marks)) == 4, 20, "four workers to run a job each")
    for value in steps:
        rig.ok("A", "config", "set", "lease_timeout", value)
    wait_for(lambda: spool.counts().done == 4, 40, "every job to finish")
    logs = a.log() + b.log()
    fenced = [d for d in os.listdir(os.path.join(rig.a, "processing")) if "~" in d]
    assert not fenced, (fenced, logs)
    assert "recovered job" not in logs and "continuing under a new identity" not in logs, logs
    assert [spool.find(f"j{i}").to_dict()["attempts"] for i in range(4)] == [1] * 4
    assert len(_runs(marks)) == 4, sorted(_runs(marks))  # no job ran on a second host
    assert len([w for w in spool.workers() if w.role == "supervisor"]) == 2
