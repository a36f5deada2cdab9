"""Recovery of a dead worker's jobs: it kills the job's process group (not a daemon the job
started), and a planted fifo never hangs the rescuer."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from conftest import SPOOLQ, wait_for, Workers
from spoolq import Spool
from spoolq.format import layout as L
from spools import cli, dead_owner


# ---- hardening: 15, 16. a worker's own directory, and the processes of its jobs ------------------


@pytest.mark.review("hardening 15,16")
def test_recovery_kills_the_jobs_group_but_not_a_daemon_it_started(spool, tmp_path):
    daemon_pid = tmp_path / "daemon"
    child_pid = tmp_path / "child"
    job = spool.enqueue({"command": f"setsid sh -c 'echo $$ > {daemon_pid}; exec sleep 60' & "
                                    f"env -i sh -c 'echo $$ > {child_pid}; exec sleep 60' & wait",
                         "max_retries": 0}).id
    w = Workers(spool.root, 1).wait_ready()
    wait_for(lambda: daemon_pid.exists() and child_pid.exists() and child_pid.read_text(), 10, "both sleeps")
    daemon, child = int(daemon_pid.read_text()), int(child_pid.read_text())
    (owner,) = [wk.owner for wk in spool.workers(role="worker")]
    group = os.path.join(spool.layout.owned(owner), L.GROUP_FILE)
    # The worker notes the job's group just after the spawn: on a loaded machine the job's own
    # processes can be up before that (a worker killed in between leaves them to their timeout).
    wait_for(lambda: open(group, "rb").read().strip(), 10, "the worker to note the job's group")
    w.kill_all()  # the worker dies with its job running
    rescuer, recovery = L.owner_token("test", os.getpid()), Spool(spool.root).recovery

    def rescued() -> bool:
        # Swept until it works, as workers sweep: the killed worker may take a moment to be gone
        # (a loaded machine), and a sweep before that rightly leaves a live owner alone.
        recovery.run(rescuer)
        return not _alive(child)

    wait_for(rescued, 10, "the job's own process (env -i) to be killed")
    assert _alive(daemon)  # a daemon it started on purpose lives on
    os.kill(daemon, signal.SIGKILL)
    assert spool.find(job).state == "dead"


def _alive(pid: int) -> bool:
    from spoolq.system.liveness import alive

    return alive(pid)


# ---- hardening: 17. no tracebacks: deep JSON, closed stdin, ill-typed config, a BOM --------------


def run_burst(spool_dir: str, timeout: float, *extra: str) -> tuple[int | None, str]:
    """`worker start --burst` in its own process group, killed whole if it hangs."""
    proc = subprocess.Popen([*SPOOLQ, "--spool", spool_dir, "worker", "start", "--burst", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return None, proc.communicate()[0]
    return proc.returncode, out


@pytest.mark.review("hardening 17")
def test_a_fifo_as_a_dead_worker_s_group_record_hangs_no_rescuer(spool, spool_dir):
    """processing/<owner>/ is writable by the spool's group: its .pgroup may be a fifo."""
    owner = dead_owner(spool_dir)
    os.mkfifo(os.path.join(spool.layout.owned(owner), L.GROUP_FILE))
    spool.enqueue({"command": "true"})
    code, out = run_burst(spool_dir, 30)
    assert code == 0 and "1 job in 1 attempt, 1 ok" in out, out



# ---- a worker of one slot keeps house while its job runs -------------------------------------------


@pytest.mark.slow  # seconds of waiting: the full suite's
def test_a_worker_busy_with_a_long_job_recovers_a_dead_worker_s_job_meanwhile(spool, spool_dir):
    """A worker of one slot runs its job in its own thread: its sweeps for dead workers' jobs must
    go on meanwhile, or a long job holds up every job a dead worker left (until it ends)."""
    long = spool.enqueue({"command": "sleep 120"}).id
    w = Workers(spool_dir, 1).wait_ready()
    try:
        wait_for(lambda: spool.find(long).state == "processing", 15, "the long job to start")
        left = spool.enqueue({"command": "true", "max_retries": 3}).id
        entry = next(e for e in os.listdir(spool.layout.pending) if left in e)
        owner = dead_owner(spool_dir)
        assert Spool(spool_dir).transitions.claim(entry, owner) is not None  # the dead worker held it
        # (taken into the rescuer's own directory first, then put back)
        # A sweep every 2 s; the budget is for a loaded machine, far below the long job's 120 s.
        w.wait_for(lambda: spool.find(left).state in ("pending", "scheduled"), 30, "the dead worker's job back")
        assert spool.find(long).state == "processing"  # recovered while the long job still ran
    finally:
        cli(spool_dir, "worker", "stop", "--now", "--wait", "--timeout", "20")
        w.stop()


@pytest.mark.slow  # seconds of waiting: the full suite's
def test_a_duty_that_waits_for_a_lock_holds_up_no_running_job_s_timeout(spool, spool_dir):
    """The duties of a worker of one slot ran inside its job's abort check: a retention batch
    waits for the "dlq" lock (up to 30 s) while `purge`, `dlq retry` or `requeue` holds it, and
    meanwhile the job's timeout, `worker stop --now` and `cancel --kill` went unheeded and its
    output unread."""
    young = spool.enqueue({"command": "true"}).id  # done just now: retention looks again once it can expire
    finisher = spool.owners.register("worker")
    spool.transitions.finish(spool.transitions.claim(os.listdir(spool.layout.pending)[0], finisher),
                             ok=True, exit_code=0, error=None)
    spool.owners.unregister(finisher)  # else `worker stop --wait` below waits for this process to stop
    spool.set_config("keep_done", 3)
    long = spool.enqueue({"command": "sleep 60", "timeout": 5, "max_retries": 0}).id
    w = Workers(spool_dir, 1).wait_ready()
    try:
        wait_for(lambda: spool.find(long).state == "processing", 15, "the long job to start")
        assert spool.find(young).state == "done"
        with spool.store.locked("dlq"):  # held from before the done job can expire until the timeout is heeded
            wait_for(lambda: spool.find(long).state == "dead", 15, "the job's timeout while a duty waits for a lock")
        assert "timed out" in spool.find(long).job.last_error
    finally:
        cli(spool_dir, "worker", "stop", "--now", "--wait", "--timeout", "40")
        w.stop()


def test_a_rescuer_never_rescues_itself_whatever_its_registration_looks_like(spool):
    """A sweep by a live worker whose own registration cannot be read just now (a file system
    coming back from a partition: as if it were not there) took its own running job back, and
    then found itself 'declared dead elsewhere'. The rescuer is alive: it is the one looking."""
    owner = spool.owners.register("worker")
    job = spool.enqueue({"command": "true"}).id
    entry = next(e for e in os.listdir(spool.layout.pending) if job in e)
    assert spool.transitions.claim(entry, owner) is not None
    os.unlink(spool.layout.worker_file(owner))  # what a look that fails just now may amount to
    assert spool.recovery.run(owner) == []
    assert spool.find(job).state == "processing" and spool.find(job).owner == owner
    other = dead_owner(spool.root)  # a dead worker is still rescued by it
    second = spool.enqueue({"command": "true"}).id
    entry = next(e for e in os.listdir(spool.layout.pending) if second in e)
    assert spool.transitions.claim(entry, other) is not None
    assert [r.job_id for r in spool.recovery.run(owner)] == [second]
