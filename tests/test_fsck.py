"""fsck: what it reports (owners and modes, leftovers of a killed batch) and what its repairs leave
alone. (The catalogue of every kind of problem: tests/test_faults.py.)"""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from conftest import backdate, SPOOLQ, wait_for
from spoolq import fsck, Spool
from spoolq.format import layout as L
from spoolq.store.ids import creator_of
from spools import _batch, cli, dead_owner, ROOT_ONLY, STRANGER, _symlinked_done


# ---- hardening: 1. nobody let in: a spool another user could write into is refused ---------------


@pytest.mark.review("hardening 1")
def test_fsck_reports_owners_and_modes_not_only_modes(tmp_path):
    root = str(tmp_path / "s")
    _symlinked_done(root)
    problems = fsck.check(Spool(root, create=False))
    assert [(p.kind, os.path.basename(p.path)) for p in problems] == [("unsafe-dir", "done")]
    assert "symbolic link" in problems[0].detail


@pytest.mark.review("hardening 1")
@ROOT_ONLY
def test_fsck_reports_a_file_of_another_user(spool):
    job = spool.enqueue({"command": "true"})
    path = os.path.join(spool.layout.pending, L.pending_name_of(job))
    os.chown(path, STRANGER, STRANGER)
    kinds = {(p.kind, os.path.basename(p.path)) for p in fsck.check(spool)}
    assert ("ownership", L.pending_name_of(job)) in kinds


# ---- hardening: 4. repairs and mode changes touch only what spoolq created -----------------------


@pytest.mark.review("hardening 4")
def test_fsck_repair_leaves_a_users_old_file_in_tmp_alone(spool):
    path = os.path.join(spool.layout.tmp, "users-notes")
    with open(path, "w") as f:
        f.write("mine")
    os.chmod(path, 0o644)
    backdate(path)
    problems = fsck.check(spool, repair=True)
    assert [(p.kind, p.repaired) for p in problems] == [("stray-entry", False)]
    assert os.path.exists(path) and stat.S_IMODE(os.stat(path).st_mode) == 0o644


# ---- hardening: 6. a killed enqueue leaves nothing behind that blocks a re-run -------------------


@pytest.mark.review("hardening 6")
@pytest.mark.slow
def test_fsck_sees_what_a_sigkilled_batch_left_at_once_and_repair_frees_it(spool, tmp_path):
    batch = _batch(tmp_path, 20_000)
    proc = subprocess.Popen([*SPOOLQ, "--spool", spool.root, "enqueue", "--batch", batch],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: len(os.listdir(spool.layout.dir("ids"))) > 1000 or proc.poll() is not None, 30,
             "the batch to be under way")
    proc.kill()
    proc.wait()
    if not os.listdir(spool.layout.dir("ids")) or os.listdir(spool.layout.pending):
        pytest.skip("the kill did not land between the reservations and the renames")
    marker = sorted(os.listdir(spool.layout.dir("ids")))[0]
    assert creator_of(spool.store, marker).pid == proc.pid  # the marker names its creator
    problems = fsck.check(spool)  # no waiting for an hour: the creator is gone
    kinds = {p.kind for p in problems}
    assert kinds <= {"orphan-marker", "stale-temp"} and "orphan-marker" in kinds
    fsck.check(spool, repair=True)
    assert fsck.check(spool) == []
    assert cli(spool.root, "enqueue", "--batch", batch).returncode == 0



# ---- the summary suggests --repair only for what it would try --------------------------------------


@pytest.mark.parametrize("dead_worker, advice", [
    (False, "1 problem found; --repair leaves it alone: it is its writer's or yours to fix"),
    (True, "; run with --repair to fix what is safe ("),
])
def test_fsck_suggests_repair_only_for_what_repair_would_try(spool, dead_worker, advice):
    with open(os.path.join(spool.layout.pending, "notes.txt"), "w") as f:
        f.write("not a job")  # never picked up: its writer's to rename
    if dead_worker:
        dead_owner(spool.root)  # what it left: repaired
    out = cli(spool.root, "fsck")
    assert out.returncode == 1 and advice in out.stdout.splitlines()[-1], out.stdout
    problems = fsck.check(spool)
    assert [p.repairable for p in problems if p.kind == "never-picked-up"] == [False]
    assert any(p.repairable for p in problems) == dead_worker
