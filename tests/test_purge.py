"""purge: it never follows a symlinked state directory, --older-than counts from when a job
finished, and it works on a full disk."""

from __future__ import annotations

import json
import os
import time

import pytest

from conftest import backdate, fill, wait_for
from spoolq import fsck, Spool
from spoolq.format import layout as L
from spoolq.format.job import parse_time
from spools import cli


# ---- hardening: 2. symlinked state directories are never followed --------------------------------


@pytest.mark.review("hardening 2")
def test_purge_never_follows_a_symlinked_done(spool, tmp_path):
    elsewhere = tmp_path / "precious"
    elsewhere.mkdir()
    (elsewhere / "keep.json").write_text("{}")
    os.rmdir(spool.layout.done)
    os.symlink(elsewhere, spool.layout.done)
    assert cli(spool.root, "purge").returncode == 1
    with pytest.raises(Exception, match="refusing to use"):
        spool.purge("done")  # the API refuses too, even without the check at open
    assert (elsewhere / "keep.json").exists()


# ---- hardening: 7. "finished at" is when the job finished ----------------------------------------


@pytest.mark.review("hardening 7")
def test_purge_older_than_keeps_a_job_that_finished_a_moment_ago(spool, workers):
    job = spool.enqueue({"command": "true"})
    backdate(os.path.join(spool.layout.pending, L.pending_name_of(job)), 7200)  # enqueued long ago
    workers(1)
    wait_for(lambda: spool.find(job.id).state == "done", 10, "the job")
    assert cli(spool.root, "purge", "--older-than", "3600").stdout.strip() == "purged 0 done jobs"
    assert spool.find(job.id).state == "done"
    finished = json.loads(cli(spool.root, "show", job.id, "--json").stdout)["updated_at"]
    assert abs(parse_time(finished, "updated_at") - time.time()) < 60  # show says the same


# ---- hardening: 18. purge, worker stop work on a full disk ---------------------------------------


@pytest.mark.review("hardening 18")
def test_purge_and_worker_stop_work_on_a_full_disk(small_fs):
    spool = Spool(os.path.join(small_fs, "spool"))
    for i in range(20):
        job = spool.enqueue({"id": f"d{i}", "command": "true"})
        claimed = spool.transitions.claim(L.pending_name_of(job), spool.owners.register("worker"))
        spool.transitions.finish(claimed, ok=True, exit_code=0, error=None)
    fill(small_fs)
    assert cli(spool.root, "worker", "stop").returncode == 0
    r = cli(spool.root, "purge")
    assert r.returncode == 0 and r.stdout.strip() == "purged 20 done jobs", r


@pytest.mark.review("hardening 18")
def test_purge_clears_jobs_not_started_on_a_full_disk_where_cancel_cannot(small_fs):
    spool = Spool(os.path.join(small_fs, "spool"))
    for i in range(20):
        spool.enqueue({"id": f"p{i}", "command": "true", **({"delay": 3600} if i % 2 else {})})
    spool.enqueue({"id": "w", "command": "true", "after": ["p0"]})
    running = spool.enqueue({"id": "running", "command": "true"})
    spool.transitions.claim(L.pending_name_of(running), spool.owners.register("worker"))
    fill(small_fs)
    assert cli(spool.root, "cancel", "p1").returncode == 1  # a cancel writes the job's dead record
    r = cli(spool.root, "purge", "p1", "p2", "p0", "running")
    assert r.returncode == 1 and r.stdout.splitlines() == ["p1: purged", "p2: purged"], r
    assert "p0 is kept: w still wait for it" in r.stderr and "running is processing" in r.stderr, r.stderr
    r = cli(spool.root, "purge", "--state", "pending")
    assert r.returncode == 0 and r.stdout.strip() == "purged 17 pending jobs; kept 1 that other jobs still wait for", r
    assert [v.id for v in spool.list_jobs("pending") + spool.list_jobs("scheduled")] == ["p0"]
    assert sorted(os.listdir(spool.layout.dir("ids"))) == ["p0", "running", "w"]  # the ids are free again
    assert fsck.check(spool) == []

