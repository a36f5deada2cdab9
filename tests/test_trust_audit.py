"""An audit of a shared spool (group_access) as the people who can reach it: a member of its group
(a real process of another uid, not in trusted_uids), another local user, a careless operator, a
clock that jumps. Each hole the audit found is pinned here: the member cannot make the owner run,
signal, delete or believe anything through it."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest

from spoolq.format.states import State
from spoolq.spool import Spool
from spools import ROOT_ONLY, as_member, shared_spool

pytestmark = ROOT_ONLY


@pytest.fixture
def shared():
    """A group_access spool the member can reach: under /tmp (sticky), its group the member's."""
    base = tempfile.mkdtemp(prefix="spoolq-audit-", dir="/tmp")
    yield shared_spool(base)
    shutil.rmtree(base, ignore_errors=True)


def plant(spool: Spool, name: str, spec: dict) -> None:
    """The member writes `spec` into pending/<name>, as anyone in the group may."""
    r = as_member('umask 027 && printf "%s" "$1" > "$2"', json.dumps(spec), os.path.join(spool.layout.pending, name))
    assert r.returncode == 0, r.stderr


# ---- deleting the owner's jobs -------------------------------------------------------------------


def test_a_planted_pending_name_never_replaces_a_job_its_claimer_is_running(shared):
    """A worker with several slots claims a canonical name into processing/<owner>/<id>.json: a
    member who names a file for the id of a job running there must not have the claim's rename drop
    the running job's file (the job would be lost: its finish finds nothing to move)."""
    shared.enqueue({"id": "victim", "command": "true"})
    owner = shared.owners.register("worker")
    (entry,) = os.listdir(shared.layout.pending)
    running = shared.transitions.claim(entry, owner)
    planted = "0000000000.0000000000000000001.0000000000000@victim.json"
    plant(shared, planted, {"id": "victim", "command": "true"})
    assert shared.transitions.claim(planted, owner) is None
    assert os.stat(running.path).st_uid == os.geteuid()
    shared.transitions.finish(running, ok=True, exit_code=0, error=None)
    assert shared.find("victim").state == State.DONE
    (copy,) = [v for v in shared.list_jobs(State.DEAD)]
    assert "already running here" in copy.to_dict()["last_error"]
