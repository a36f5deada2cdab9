"""A worker's heartbeat and registration: it survives a garbage config, a short lease never
runs a job twice, and a registration that is odd or huge holds no one up."""

from __future__ import annotations

import os
import time

import pytest

from conftest import wait_for, Workers
from spoolq import Spool
from spoolq.format import layout as L
from spoolq.format.errors import SpoolError
from spoolq.system import fsio
from spools import cli


# ---- hardening: 10, 11. the heartbeat survives, and a lease never outruns it ---------------------


@pytest.mark.review("hardening 10,11")
@pytest.mark.slow
def test_a_garbage_config_for_a_while_does_not_stop_the_heartbeat(spool, workers):
    spool.set_config("lease_timeout", 2)
    job = spool.enqueue({"command": "sleep 4"}).id
    w = workers(1)
    wait_for(lambda: spool.find(job).state == "processing", 10, "the job to start")
    (owner,) = [x.owner for x in w.live()]
    saved = open(spool.layout.config, "rb").read()
    with open(spool.layout.config, "wb") as f:
        f.write(b"{garbage")
    beat = os.stat(spool.layout.worker_file(owner)).st_mtime
    time.sleep(1.6)
    fsio.publish(spool.store.temp_path(), saved, spool.layout.config, mode=0o600)
    wait_for(lambda: os.stat(spool.layout.worker_file(owner)).st_mtime > beat + 1, 5, "heartbeats to go on")
    wait_for(lambda: spool.find(job).state == "done", 15, "the job")
    assert spool.find(job).to_dict()["attempts"] == 1
    log = w.stop()
    assert "recovered" not in log and "Traceback" not in log


@pytest.mark.review("hardening 10,11")
@pytest.mark.slow
def test_a_short_lease_set_on_a_live_spool_runs_each_job_once(spool, workers):
    assert cli(spool.root, "config", "set", "lease_timeout", "1").returncode == 2  # cannot hold
    jobs = [spool.enqueue({"command": "sleep 3"}).id for _ in range(2)]
    w = workers(2)
    wait_for(lambda: spool.counts().processing == 2, 10, "both jobs to run")
    assert cli(spool.root, "config", "set", "lease_timeout", "2").returncode == 0
    owner = w.live()[0].owner
    beat = os.stat(spool.layout.worker_file(owner)).st_mtime
    wait_for(lambda: os.stat(spool.layout.worker_file(owner)).st_mtime > beat, 2, "a heartbeat at the new pace")
    wait_for(lambda: all(spool.find(j).state == "done" for j in jobs), 20, "the jobs")
    assert [spool.find(j).to_dict()["attempts"] for j in jobs] == [1, 1]
    assert "recovered" not in w.stop()


# ---- hardening: 17. no tracebacks: deep JSON, closed stdin, ill-typed config, a BOM --------------


@pytest.mark.review("hardening 17")
@pytest.mark.parametrize("make", [
    lambda p: os.mkfifo(p),  # open() would wait for a writer forever: every worker reads every registration
    lambda p: os.symlink("/dev/zero", p),
    lambda p: os.mkdir(p),
    lambda p: open(p, "wb").truncate(1 << 30),  # a sparse GiB: never read whole
], ids=["fifo", "symlink to /dev/zero", "directory", "huge file"])
def test_a_registration_that_is_no_file_holds_no_one_up(spool, make):
    make(os.path.join(spool.layout.dir("workers"), "vm-1-abcdef.json"))
    spool.enqueue({"command": "true"})
    r = cli(spool.root, "worker", "start", "--count", "2", "--burst", "-q", timeout=30)
    assert r.returncode == 0 and "1 job in 1 attempt, 1 ok" in r.stderr, r.stderr
    for args in (("worker", "list"), ("status",)):
        r = cli(spool.root, *args, timeout=30)
        assert r.returncode == 0 and "Traceback" not in r.stderr, (args, r.stderr)


WIDEST = [f"{i:04d}".ljust(64, "q") for i in range(1000)]  # shares.MAX_QUEUES names of the longest kind


@pytest.mark.review("hardening 17")
def test_a_worker_taking_the_most_queues_is_judged_by_its_heartbeat(spool, spool_dir):
    """Its registration names every queue: others must read it whole, not judge its owner gone
    (which would rescue its running job while it runs)."""
    owner = spool.owners.register("worker", queues=WIDEST)
    reg = spool.owners.registration(owner)
    assert reg.record.get("queues") == WIDEST and spool.owners.judge().why_gone(reg) is None
    job = spool.enqueue({"command": "sleep 30", "queue": WIDEST[0]}).id
    w = Workers(spool_dir, 1, extra=("--queue", ",".join(WIDEST)))
    try:
        wait_for(lambda: spool.find(job).state == "processing", 15, "the job to start")
        assert Spool(spool_dir).recovery.run(L.owner_token("test", os.getpid())) == []
    finally:
        w.kill_all()


@pytest.mark.review("hardening 17")
def test_more_queues_than_a_registration_holds_are_refused(spool, spool_dir):
    r = cli(spool_dir, "worker", "start", "--burst", "--queue", ",".join(WIDEST + ["one-more"]))
    assert r.returncode == 2 and "a worker takes at most 1000" in r.stderr, r.stderr
    with pytest.raises(SpoolError, match="over the limit"):
        spool.owners.register("worker", queues=[f"q{i}" for i in range(40_000)])

