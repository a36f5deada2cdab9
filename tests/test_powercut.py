"""Power cuts: every acknowledged job survives one, whatever enqueued it.

LazyFS (a FUSE file system that keeps written data in its own cache until fsync, and drops what
was never synced on the command `lazyfs::clear-cache`) stands in for a disk losing power: jobs
are enqueued one by one, in batches and by the drop-in protocol while a worker runs; the cache
is cleared, every process killed, the file system unmounted and mounted again (a reboot). Then
every job whose enqueue said so is still there and runs.

LazyFS is built outside the repository (.ci/run does it from ../shared/tools/lazyfs) and named
by SPOOLQ_LAZYFS; without it these tests skip (SPOOLQ_REQUIRE_LAZYFS=1 makes that a failure).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import SPOOLQ, wait_for
from spoolq import Spool
from spoolq.format import layout as L

ROUNDS = 3
STEP_TIMEOUT = 60  # LazyFS can deadlock, rarely, under heavy concurrent writes: bound every step


def _lazyfs() -> str:
    path = os.environ.get("SPOOLQ_LAZYFS", "")
    if path and os.access(path, os.X_OK) and shutil.which("fusermount3"):
        return path
    reason = "LazyFS is not built (SPOOLQ_LAZYFS names its binary; .ci/run builds it), or fusermount3 is missing"
    if os.environ.get("SPOOLQ_REQUIRE_LAZYFS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


class LazyMount:
    """One LazyFS mount of `backing` at `mount`; `power_cut()` drops what was never synced."""

    def __init__(self, binary: str, work: Path):
        self.binary, self.work = binary, work
        self.backing, self.mount = work / "backing", work / "mnt"
        self.backing.mkdir(exist_ok=True)
        self.mount.mkdir(exist_ok=True)
        # Not under `work`: LazyFS takes a --config-path containing "-o" (as pytest's
        # "pytest-of-root" does) for a mount option, and silently uses its default config.
        self.control = Path(tempfile.mkdtemp(prefix="spoolq_lazyfs_"))
        self.faults, self.completed = self.control / "faults.fifo", self.control / "completed.fifo"
        self.config = self.control / "lazyfs.toml"
        self.config.write_text(
            f'[faults]\nfifo_path="{self.faults}"\nfifo_path_completed="{self.completed}"\n'
            '[cache]\napply_eviction=false\n[cache.simple]\ncustom_size="256mb"\nblocks_per_page=1\n'
            '[filesystem]\nlog_all_operations=false\nlogfile=""\n')
        self.proc: subprocess.Popen | None = None
        self.log = open(self.control / "lazyfs.log", "ab")

    def log_tail(self) -> str:
        return (self.control / "lazyfs.log").read_text(errors="replace")[-2000:]

    def up(self) -> None:
        self.proc = subprocess.Popen([self.binary, str(self.mount), "--config-path", str(self.config), "-o",
                                      "allow_other", "-o", "modules=subdir", "-o", f"subdir={self.backing}", "-f"],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: os.path.ismount(self.mount) and self.faults.exists(), STEP_TIMEOUT, "the LazyFS mount")

    def power_cut(self) -> None:
        """Drop every unsynced byte, and wait until LazyFS says it has. Its answer goes to a FIFO
        only if a reader has it open at that instant: open it first (non-blocking)."""
        answer = os.open(self.completed, os.O_RDONLY | os.O_NONBLOCK)
        try:
            with open(self.faults, "w") as f:
                f.write("lazyfs::clear-cache\n")
            got = b""
            deadline = time.monotonic() + STEP_TIMEOUT
            while b"finished::clear-cache" not in got and time.monotonic() < deadline:
                if select.select([answer], [], [], max(0.0, deadline - time.monotonic()))[0]:
                    got += os.read(answer, 4096) or b""
                    if not got:
                        time.sleep(0.01)  # no writer yet: a FIFO without one reads as end of file
        finally:
            os.close(answer)
        assert b"finished::clear-cache" in got, f"{got!r}; LazyFS said:\n{self.log_tail()}"

    def down(self) -> None:
        subprocess.run(["fusermount3", "-u", "-z", str(self.mount)], capture_output=True, timeout=STEP_TIMEOUT)
        if self.proc is not None:
            try:
                self.proc.wait(STEP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self.proc = None

    def remove(self) -> None:
        self.log.close()
        shutil.rmtree(self.control, ignore_errors=True)


@pytest.fixture
def lazy(tmp_path):
    mount = LazyMount(_lazyfs(), tmp_path)
    mount.up()
    yield mount
    mount.down()
    mount.remove()


def _spoolq(root: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*SPOOLQ, "--spool", root, *args], input=stdin, capture_output=True, text=True,
                          timeout=STEP_TIMEOUT)


def _acknowledge(root: str, round_no: int) -> list[str]:
    """Enqueue by every way there is; the ids whose enqueue said it had taken them."""
    acked: list[str] = []
    for i in range(3):
        r = _spoolq(root, "enqueue", "--id", f"r{round_no}-one{i}", "--cmd", "true")
        if r.returncode == 0:
            acked += r.stdout.split()
    batch = "".join(json.dumps({"id": f"r{round_no}-batch{i}", "command": "true"}) + "\n" for i in range(25))
    r = _spoolq(root, "enqueue", "--batch", "-", stdin=batch)
    if r.returncode == 0:
        acked += r.stdout.split()
    pending = os.path.join(root, "pending")
    for i in range(3):  # the drop-in protocol: write under a dot name, fsync, rename
        job_id = f"r{round_no}-drop{i}"
        staged = os.path.join(pending, f".{job_id}.tmp")
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, json.dumps({"id": job_id, "command": "true"}).encode())
        os.fsync(fd)
        os.close(fd)
        os.rename(staged, os.path.join(pending, f"{job_id}.json"))
        acked.append(job_id)
    return acked


def test_every_acknowledged_job_survives_a_power_cut(lazy, tmp_path):
    root = str(lazy.mount / "spool")
    assert _spoolq(root, "init").returncode == 0
    # LazyFS does not show a heartbeat made by utime: a long lease keeps a live worker live.
    assert _spoolq(root, "config", "set", "lease_timeout", "3600").returncode == 0
    acked: list[str] = []
    for round_no in range(ROUNDS):
        worker = subprocess.Popen([*SPOOLQ, "--spool", root, "worker", "start"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            acked += _acknowledge(root, round_no)
            time.sleep(0.2 * round_no)  # a different share of the jobs has run at each cut
            lazy.power_cut()
        finally:
            os.killpg(worker.pid, signal.SIGKILL)  # the power is gone: nothing runs on
            worker.wait()
        lazy.down()
        lazy.up()  # the reboot
        # What a dead worker held is recovered (its cut attempt counts: the job waits out its
        # backoff, scheduled); everything ready runs. No acknowledged job is missing, and none
        # was quarantined for a torn or empty file.
        r = _spoolq(root, "worker", "start", "--burst")
        burst_ended = time.time()
        assert r.returncode == 0, r.stderr
        spool = Spool(root)
        states = {job_id: _state(spool, job_id, burst_ended) for job_id in acked}
        lost = {job_id: state for job_id, state in states.items() if state not in ("done", "scheduled")}
        assert lost == {}, f"round {round_no}: lost or broken after the cut: {lost}"
        assert list(states.values()).count("scheduled") <= 1 + round_no  # at most one cut attempt a round
        counts = spool.counts()
        assert counts.dead == counts.quarantined == 0, _spoolq(root, "dlq", "list").stdout
    assert len(acked) == ROUNDS * (3 + 25 + 3)


def _state(spool: Spool, job_id: str, burst_ended: float) -> str | None:
    """The job's state as the burst left it: a recovered job whose backoff ran out in the moment
    between the burst's last look and this one was still scheduled then (a burst leaves the
    retries of jobs it did not run), so it counts as scheduled; one due earlier is a job the
    burst should have run, and stays pending (the check then fails)."""
    try:
        view = spool.find(job_id)
    except Exception:
        return None
    if view.state == "pending":
        due = L.parse_pending(os.path.basename(view.path))
        if due is not None and due.due_ms / 1000 > burst_ended - 0.5:
            return "scheduled"
    return view.state
