"""A worker that wakes just after it was fenced records nothing, whatever its client's caches say.

On GlusterFS at its defaults (tests/dfs.py, "stock") a client keeps a directory's name for about
a second after another host renamed it, and reaches the directory by its handle: a rescuer's
rename of ``processing/<owner>/`` does not stop that owner's own renames out of it. These tests
make the worst case happen on purpose, round after round:

1. host B's worker runs a job that stops the worker (``kill -STOP $PPID``) and then exits 0 or 1,
   so the worker is frozen holding a finished attempt it has not recorded yet;
2. the test keeps B's client's cached name of ``processing/<owner>/`` fresh while the lease runs
   out, then a rescuer on host A starts, under strace, which holds it just after its Nth rename
   (N = 1: the fence itself), for long enough;
3. B's worker is woken at once: it tries to record its result inside the cache window, while the
   rescuer stands still;
4. the rescuer goes on.

Then the job must be in exactly one place, in the state the rescuer gave it (the frozen worker's
result discarded, its attempt counted as lost), and the worker must say it discarded its result.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import process_state, strace_path, wait_for

WORKER = [sys.executable, "-c",
          "import sys; from spoolq.spool import Spool; from spoolq.running.worker import Worker; "
          "sys.exit(Worker(Spool(sys.argv[1]), allow_unsafe_fs=True).run())"]
RESCUER = [sys.executable, "-c",
           "import sys; from spoolq.spool import Spool; s = Spool(sys.argv[1]); "
           "me = s.owners.register('worker'); "  # a registered rescuer: its fence is no one else's to rescue
           "print([str(r) for r in s.recovery.run(me)]); s.owners.unregister(me)"]
RENAMES = "rename,renameat,renameat2"
HOLD_US = 1_500_000  # how long the rescuer stands still after its Nth rename
LEASE = 2.0  # the shortest allowed
ROUNDS = int(os.environ.get("SPOOLQ_FENCE_ROUNDS", "2"))  # more, to search longer by hand


def _look_up(path: str) -> None:
    try:
        os.stat(path)
    except FileNotFoundError:
        pass  # a client without caches (strict Gluster) knows at once that the name is gone


def _copies(root: str, job_id: str) -> list[str]:
    found = []
    for dirpath, _dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel.split(os.sep)[0] not in ("pending", "processing", "done", "dead"):
            continue
        for name in files:
            if name == f"{job_id}.json" or name.endswith(f"@{job_id}.json"):
                found.append(os.path.join(rel, name))
    return found


# Stock Gluster is where a cached name leaks through the fence: there the rescuer is held after
# each of its first three renames (the fence; its take of the job file; its move of the new
# state). On strict Gluster the woken worker's lookups are fresh: the fence alone is tried.
CASES = [(v, code, n) for v in ("stock", "strict") for code in (0, 1) for n in ((1, 2, 3) if v == "stock" else (1,))]


@pytest.mark.parametrize("volume, code, rename", CASES)
def test_a_worker_woken_right_after_its_fence_records_nothing(gluster, tmp_path, volume, code, rename):
    strace = strace_path()
    from spoolq import Spool

    name = gluster.new_dir(volume, os.path.basename(tmp_path))
    a, b = (os.path.join(gluster.mount(volume, h), name) for h in ("A", "B"))
    spool = Spool(a)
    spool.set_config("lease_timeout", LEASE)
    spool.set_config("backoff_base", 3600)  # the rescued job waits: the woken worker cannot take it again
    env = {k: v for k, v in os.environ.items() if k not in ("SPOOLQ_DIR",)}
    for round_ in range(ROUNDS):
        job = spool.enqueue({"id": f"r{round_}", "command": f"kill -STOP $PPID; exit {code}", "max_retries": 5})
        log = tmp_path / f"worker-{round_}.log"
        with open(log, "wb") as out:
            worker = subprocess.Popen([*WORKER, b], env={**env, "SPOOLQ_HOST": "B"}, stdout=out,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _one_round(strace, spool, a, b, job.id, worker, log, env, code, rename)
        finally:
            try:
                os.killpg(worker.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            worker.wait()


def _one_round(strace, spool, a, b, job_id, worker, log, env, code, rename) -> None:
    wait_for(lambda: process_state(worker.pid) == "T", 15, "the worker to stop itself from its job")
    (owner,) = [w.owner for w in spool.workers(live=False) if w.pid == worker.pid]
    held = os.path.join(b, "processing", owner)
    # Keep host B's client's name of the worker's directory fresh while the lease runs out.
    frozen_at = time.monotonic()
    while time.monotonic() - frozen_at < LEASE + 0.3:
        _look_up(held)
        time.sleep(0.05)
    rescuer = subprocess.Popen([strace, "-qq", "-o", "/dev/null", "-e", f"trace={RENAMES}",
                                "-e", f"inject={RENAMES}:delay_exit={HOLD_US}:when={rename}",
                                *RESCUER, a], env={**env, "SPOOLQ_HOST": "A"}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while os.path.isdir(os.path.join(a, "processing", owner)):  # the fence, seen from A
            _look_up(held)  # ... while B's client still knows the old name (on stock Gluster)
            assert time.monotonic() < deadline and rescuer.poll() is None, rescuer.communicate()[0]
        os.kill(worker.pid, signal.SIGCONT)
        out, _ = rescuer.communicate(timeout=30)
    finally:
        if rescuer.poll() is None:
            rescuer.kill()
            rescuer.wait()
    assert rescuer.returncode == 0, out.decode(errors="replace")
    # Whatever became of its result, the woken worker learns from its heartbeat that it was
    # declared dead, and goes on under a new identity.
    wait_for(lambda: b"continuing under a new identity" in log.read_bytes() or worker.poll() is not None, 10,
             "the woken worker to find itself declared dead")
    text = log.read_text(errors="replace")
    copies = _copies(a, job_id)
    assert len(copies) == 1 and copies[0].startswith("pending" + os.sep), (copies, text, out)
    shown = spool.find(job_id).to_dict()
    assert shown["attempts"] == 1 and "stopped during attempt 1" in (shown["last_error"] or ""), (shown, text)
    assert f"result of job {job_id} attempt 1 discarded" in text, text
