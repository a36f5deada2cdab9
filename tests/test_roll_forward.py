"""The roll-forward of a cut batch (moves/enqueue.py, finish_batches): a batch killed between its
renames is published whole by whoever finds its plan (a worker's recovery sweep, `fsck
--repair`), and that finder does what the dead enqueuer had left to do for the jobs that wait
(`enqueue --after`): it makes waiting/ durable and judges them once more, so one whose
dependency finished while the batch lay cut is released or killed at once, not left waiting."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from conftest import SPOOLQ, strace_path
from spoolq import Spool
from spoolq.format import layout


def cli(root: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SPOOLQ, "--spool", root, *args], capture_output=True, text=True, timeout=120)


def records(root: str, tag: str) -> str:
    return f"echo {tag} >> {root}.runs"


def runs(root: str) -> list[str]:
    return open(root + ".runs").read().split() if os.path.exists(root + ".runs") else []


def plans(spool: Spool) -> list[str]:
    return [n for n in os.listdir(spool.layout.tmp) if layout.is_temp_name(n, "plan")]


def cut_batch_waiting_for(root: str, dep: str) -> None:
    """b and c, both `--after dep`, enqueued as one batch that is killed at its first rename:
    its plan names both, nothing is published."""
    batch = root + ".jsonl"
    with open(batch, "w") as f:
        for tag in ("b", "c"):
            f.write(json.dumps({"id": tag, "command": records(root, tag), "after": [dep]}) + "\n")
    r = subprocess.run([strace_path(), "-f", "-qq", "-o", "/dev/null", "-e", "trace=rename,renameat,renameat2",
                        "-e", "inject=rename,renameat,renameat2:signal=SIGKILL:when=1",
                        *SPOOLQ, "--spool", root, "enqueue", "--batch", batch], capture_output=True, timeout=120)
    assert r.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), r.stderr
    spool = Spool(root, create=False)
    assert len(plans(spool)) == 1 and os.listdir(spool.layout.dir("waiting")) == []


def finish_as_a_worker(spool: Spool, job_id: str, *, ok: bool) -> None:
    """`job_id` claimed and finished in this process: it judges what waits for it, and finds
    nothing in waiting/ yet (the cut batch's jobs are still temp files)."""
    owner = spool.owners.register("worker")
    try:
        entry = next(e for e in spool.store.shards.entries() if getattr(layout.parse_pending(e), "job_id", None) == job_id)
        claimed = spool.transitions.claim(entry, owner)
        moved = spool.transitions.finish(claimed, ok=ok, exit_code=0 if ok else 1, error=None if ok else "exit 1",
                                         final=True)
    finally:
        spool.owners.unregister(owner)
    assert moved.woken == () and moved.unwoken is None


@pytest.fixture
def cut(tmp_path, request):
    """A spool where job a finished (done or dead, per the param) while a batch waiting for it
    lay cut before its first rename."""
    root = str(tmp_path / "spool")
    spool = Spool(root)
    ok = request.param == "done"
    spool.enqueue({"id": "a", "command": "true" if ok else "false", "max_retries": 0})
    cut_batch_waiting_for(root, "a")
    finish_as_a_worker(spool, "a", ok=ok)
    return root, request.param


def judged(root: str, dep_state: str) -> None:
    spool = Spool(root, create=False)
    assert plans(spool) == []
    states = {t: spool.find(t).state for t in ("b", "c")}
    if dep_state == "done":
        assert states == {"b": "done", "c": "done"}, states  # released, and run by that same burst
        assert sorted(runs(root)) == ["b", "c"]
    else:
        assert states == {"b": "dead", "c": "dead"}, states
        assert {spool.find(t).job.last_error for t in ("b", "c")} == {"dependency a is dead"}
        assert runs(root) == []
    assert os.listdir(spool.layout.dir("waiting")) == [] and os.listdir(spool.layout.dir("after")) == []


@pytest.mark.parametrize("cut", ["done", "dead"], indirect=True)
def test_a_workers_recovery_sweep_judges_the_waiters_of_a_cut_batch_it_publishes(cut):
    """One `worker start --burst`: its first recovery sweep publishes the batch, and the jobs are
    released (and run) or killed by that same worker, not left waiting after it leaves."""
    root, dep_state = cut
    r = cli(root, "worker", "start", "--burst")
    assert r.returncode == 0, r.stderr
    judged(root, dep_state)


def test_the_roll_forward_makes_waiting_durable(tmp_path):
    """As the enqueuer does after its renames: waiting/ is fsync'd before the plan goes."""
    root = str(tmp_path / "spool")
    Spool(root).enqueue({"id": "a", "command": "true"})
    cut_batch_waiting_for(root, "a")
    trace = tmp_path / "trace"
    r = subprocess.run([strace_path(), "-f", "-qq", "-y", "-o", str(trace), "-e", "trace=fsync,fdatasync,unlink,unlinkat",
                        *SPOOLQ, "--spool", root, "fsck", "--repair"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert Spool(root, create=False).find("b").state == "waiting"
    calls = trace.read_text().splitlines()
    synced = [i for i, line in enumerate(calls) if "fsync(" in line and line.split("<", 1)[1].startswith(
        os.path.join(root, "waiting") + ">")]
    plan_gone = [i for i, line in enumerate(calls) if "unlink" in line and ".plan" in line]
    assert synced and plan_gone and synced[0] < plan_gone[0], calls
