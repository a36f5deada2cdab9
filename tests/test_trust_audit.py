"""An audit of a shared spool (group_access) as those who can reach it: above all a member of its
group (a real process of another uid, not in trusted_uids), who may create files in pending/ and
the Maildir. Each hole the audit found is pinned here: what a member names or writes there cannot
make the owner run, delete, change or believe anything, nor reach the owner's terminal."""

from __future__ import annotations

import glob
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import SPOOLQ, spoolq, strace_path, wait_for
from spoolq.format.errors import JobNotFound
from spoolq.format.modes import SHARED
from spoolq.format.states import State
from spoolq.moves.transitions import Adopted
from spoolq.running.retention import Retention
from spoolq.spool import Spool
from spoolq.store import trust
from spools import GROUP, MEMBER, ROOT_ONLY, as_member, shared_spool

pytestmark = ROOT_ONLY

CANONICAL = "0000000000.0000000000000000001.0000000000000@{}.json"  # a pending name as a member can write one


@pytest.fixture
def shared():
    """A group_access spool the member can reach: under /var/tmp (sticky, and kept by no other
    test's change of /tmp), its group the member's."""
    base = tempfile.mkdtemp(prefix="spoolq-audit-", dir="/var/tmp")
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
    planted = CANONICAL.format("victim")
    plant(shared, planted, {"id": "victim", "command": "true"})
    assert shared.transitions.claim(planted, owner) is None
    assert os.stat(running.path).st_uid == os.geteuid()
    shared.transitions.finish(running, ok=True, exit_code=0, error=None)
    assert shared.find("victim").state == State.DONE
    (copy,) = [v for v in shared.list_jobs(State.DEAD)]
    assert "already running here" in copy.to_dict()["last_error"]


def quarantined_directory(spool: Spool) -> str:
    """A directory the member names as a job in pending/, with a file of theirs in it: the claim
    quarantines it into dead/, where the owner cannot empty it. Beside it, a dead job of the owner's."""
    name = CANONICAL.format("planted")
    path = os.path.join(spool.layout.pending, name)
    assert as_member('mkdir "$1" && echo kept > "$1/inside"', path).returncode == 0
    assert spool.transitions.claim(name, spool.owners.register("worker")) is None
    spool.enqueue({"id": "owners", "command": "false"})
    spool.cancel(["owners"])
    (qid,) = [n for n in os.listdir(spool.layout.dead) if n.startswith("+")]
    return os.path.join(spool.layout.dead, qid)


def test_a_directory_a_member_filled_stops_no_purge_of_dead(shared):
    """`purge --state dead` stopped at the first entry it could not unlink ("Is a directory"),
    purging nothing more: a member could keep every dead job of the owner's forever."""
    left = quarantined_directory(shared)
    r = spoolq(shared.root, "purge", "--state", "dead")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("purged 1 dead job; left 1 directory") and os.path.basename(left) in r.stdout
    assert os.listdir(shared.layout.dead) == [os.path.basename(left)]
    qid = os.path.basename(left)[:-len(".json")]
    r = spoolq(shared.root, "purge", qid)
    assert r.returncode == 1 and "a directory another user filled" in r.stderr and "Traceback" not in r.stderr, r


def test_a_directory_a_member_filled_stops_no_retention(shared):
    """Retention stopped there too, at every pass, and never got past dead/ to keep_output."""
    shared.set_config("keep_dead", 1)
    quarantined_directory(shared)
    purged = Retention(shared).run(time.time(), fs_now=time.time() + 3600)
    assert purged.dead == 1
    with pytest.raises(JobNotFound):
        shared.find("owners")



def test_a_copy_a_member_names_for_a_pending_job_is_not_the_job_cancel_and_show_act_on(shared):
    """`cancel ID` looked up the first pending file named for the id: a member's copy sorting
    first made every cancel of the owner's job answer "being taken by a worker" (it then ran
    anyway), and show gave the member's command as the job's; purge ID would have deleted the copy
    and the job's id marker, leaving the job to run."""
    shared.enqueue({"id": "victim", "command": "echo the owners"})
    owners = os.listdir(shared.layout.pending)
    for k in range(1, 100):  # copies until one is listed before the job (a directory's order is its own)
        plant(shared, f"0000000000.{k:019d}.0000000000000@victim.json", {"id": "victim", "command": "echo the members"})
        if os.listdir(shared.layout.pending)[0] not in owners:
            break
    r = spoolq(shared.root, "show", "victim")
    assert "echo the owners" in r.stdout and "the members" not in r.stdout, r.stdout
    r = spoolq(shared.root, "cancel", "victim")
    assert r.returncode == 0, r.stderr
    view = shared.find("victim")
    assert view.state == State.DEAD and view.job.command == "echo the owners" and view.job.last_error == "cancelled"




def test_a_drop_in_a_member_names_after_one_left_in_the_workers_directory_never_replaces_it(shared):
    """An adoption cut short (a full disk) leaves the drop-in it took as processing/<owner>/~<name>,
    which the group can see: a member's drop-in of that name was taken in by a rename over it."""
    owner = shared.owners.register("worker")
    left = os.path.join(shared.layout.owned(owner), "~x.json")
    shared.store.write_file(left, json.dumps({"id": "trusted", "command": "true"}).encode(), durable=False)
    plant(shared, "x.json", {"id": "x", "command": "true"})
    assert shared.transitions.adopt("x.json", owner).outcome is Adopted.QUARANTINED
    assert json.loads(open(left).read())["id"] == "trusted"



def test_purging_pending_jobs_leaves_the_id_of_a_job_a_member_named_a_copy_for(shared):
    """purge --state pending deleted every canonical name in pending/ and each one's id marker: a
    member's copy named for a running job freed that job's id, and an enqueue of the id (which
    must find it taken) then made a second job of it, run beside the first."""
    shared.enqueue({"id": "victim", "command": "true"})
    (entry,) = os.listdir(shared.layout.pending)
    assert shared.transitions.claim(entry, shared.owners.register("worker")) is not None
    plant(shared, CANONICAL.format("victim"), {"id": "victim", "command": "true"})
    r = spoolq(shared.root, "purge", "--state", "pending")
    assert r.returncode == 0, r.stderr
    assert os.path.lexists(shared.layout.id_marker("victim"))
    r = spoolq(shared.root, "enqueue", "--id", "victim", "true")
    assert [n for n in os.listdir(shared.layout.pending) if "@victim" in n] == [CANONICAL.format("victim")], r


# ---- running what the owner did not enqueue -----------------------------------------------------


OTHER_MEMBER = 54322  # a second member of the group, not trusted
HOLD_US = 3_000_000  # how long strace holds the worker right after the system call it waits on


def held_after(path: str, calls: str, *command: str) -> subprocess.Popen:
    """`spoolq command` under strace, each process held HOLD_US after each of `calls` on `path`."""
    return subprocess.Popen([strace_path(), "-f", "-qq", "-e", "signal=none", "-o", "/dev/null", "-P", path,
                             "-e", f"trace={calls}", "-e", f"inject={calls}:delay_exit={HOLD_US}", *SPOOLQ, *command],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.mark.slow  # seconds of waiting: the full suite's
def test_a_trusted_drop_in_opened_to_the_group_after_it_was_judged_is_not_run(shared, tmp_path):
    """A trusted member's drop-in was judged in pending/, taken into the worker's directory, then
    read again and run without a second look: its writer can still chmod it (it is theirs), and
    any member then rewrite it, between the judging and the read."""
    shared.set_config("trusted_uids", [MEMBER])
    proof = tmp_path / "ran"
    dropped = os.path.join(shared.layout.pending, "x.json")
    r = as_member('umask 022 && printf "%s" "$1" > "$2/.x" && mv "$2/.x" "$2/x.json"',
                  json.dumps({"id": "x", "command": "true"}), shared.layout.pending)
    assert r.returncode == 0, r.stderr
    worker = held_after(dropped, "rename,renameat,renameat2", "--spool", shared.root, "worker", "start", "--burst")
    try:
        taken = wait_for(lambda: glob.glob(os.path.join(shared.layout.processing, "*", "~x.json")), 15,
                         "the worker to take the drop-in")[0]
        assert as_member('chmod 0664 "$1"', taken).returncode == 0
        r = as_member('printf "%s" "$1" > "$2"', json.dumps({"id": "x", "command": f"touch {proof}"}), taken,
                      uid=OTHER_MEMBER)
        assert r.returncode == 0, r.stderr
        out, _ = worker.communicate(timeout=60)
    finally:
        worker.kill()
        worker.wait()
    assert not proof.exists(), out
    (copy,) = shared.list_jobs(State.DEAD)
    assert "writable by its group" in copy.to_dict()["last_error"], out



# ---- changing a file outside the spool -----------------------------------------------------------


FLIPPER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
a, b = os.fsencode(sys.argv[1]), os.fsencode(sys.argv[2])
while True:
    libc.renameat2(-100, a, -100, b, 2)  # RENAME_EXCHANGE: the two names swap what they hold at once
"""


def test_narrowing_a_mode_never_changes_a_file_a_symlink_at_a_pending_name_points_to(shared, tmp_path):
    """A file of the owner's in pending/ with a mode to narrow (0644: made under umask 022) was looked
    at (lstat) and then chmodded by name: a symlink put at that name in between (the file claimed
    away, a member's link made there) had the owner chmod whatever it named. The name here holds
    the owner's file and a member's symlink in turn, swapped as fast as the kernel can."""
    secret = tmp_path / "id_ed25519"
    secret.write_text("the owner's key")
    secret.chmod(0o600)
    shared.enqueue({"id": "old", "command": "true", "delay": 3600})
    (name,) = os.listdir(shared.layout.pending)
    path = os.path.join(shared.layout.pending, name)
    link = os.path.join(shared.layout.pending, ".link")
    os.symlink(secret, link)
    os.lchown(link, MEMBER, GROUP)
    held = os.open(path, os.O_RDONLY)  # the owner's file, wherever its name is
    flipper = subprocess.Popen([sys.executable, "-c", FLIPPER, path, link])
    try:
        wait_for(lambda: os.path.islink(path), 10, "the flipper to start")
        for _ in range(2000):
            os.fchmod(held, 0o644)
            trust.give_modes(shared.layout, SHARED)  # fsck --repair's chmod is the same one
            assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    finally:
        flipper.kill()
        flipper.wait()
        os.close(held)


# ---- the owner's terminal ------------------------------------------------------------------------


def test_names_and_commands_a_member_wrote_never_reach_the_owners_terminal_raw(shared):
    """status, fsck, list and show printed the names of files a member left in pending/ and
    maildir/new/, and the command of a drop-in not yet taken in, as they were: escape sequences
    (clear the screen, retitle the window, recolour) and newlines that fake a line of output."""
    pending, new = shared.layout.pending, shared.layout.dir("maildir/new")
    evil = "\x1b[2J\x1b]0;owned\x07\nok: all clean"
    job = json.dumps({"id": "dropped", "command": f"echo {evil}"})
    r = as_member('mkdir "$1/a$3" && printf x > "$1/b$3.txt" && mkdir "$2/c$3" && printf "%s" "$4" > "$1/dropped.json"',
                  pending, new, evil, job)
    assert r.returncode == 0, r.stderr
    for command in (["status"], ["fsck"], ["list"], ["show", "dropped"]):
        r = spoolq(shared.root, *command)
        said = r.stdout + r.stderr
        assert "\x1b" not in said and "\x07" not in said and "\nok: all clean" not in said, (command, said)
        assert "\\x1b" in said, (command, said)  # shown, escaped



# ---- believing a time ----------------------------------------------------------------------------


def test_a_drop_in_dated_back_by_a_member_does_not_age_the_oldest_ready_job(shared):
    """The oldest ready job's age (stats, metrics: what alerts watch) counted a dropped file from
    its mtime, which its writer sets at will: a member's drop-in "ready since 2000"."""
    pending, new = shared.layout.pending, shared.layout.dir("maildir/new")
    job = json.dumps({"command": "true"})
    r = as_member('printf "%s" "$1" > "$2/x.json" && printf "%s" "$1" > "$3/y" && touch -d 2000-01-01 "$2/x.json" "$3/y"',
                  job, pending, new)
    assert r.returncode == 0, r.stderr
    r = spoolq(shared.root, "stats", "--json")
    assert json.loads(r.stdout)["total"]["oldest_ready_age"] < 3600, r.stdout



def test_a_pending_name_dated_back_by_a_member_does_not_age_the_oldest_ready_job(shared):
    """The same from a canonical name, whose enqueue time is in the name: a member's file named
    "enqueued in 1970" in a paused queue (no claim quarantines it) counts from its arrival, and the
    owner's job behind it from its own."""
    shared.pause("mail")
    shared.enqueue({"command": "true", "queue": "mail"})
    plant(shared, "1000000000.0000000000000000001.0000000000000@x%mail.json", {"id": "x", "command": "true"})
    ages = json.loads(spoolq(shared.root, "stats", "--json").stdout)
    assert ages["total"]["oldest_ready_age"] < 3600 and ages["queues"]["mail"]["oldest_ready_age"] < 3600, ages


def test_a_copy_a_member_names_is_no_job_to_wait_for(shared):
    """`enqueue --after ID` of an id no job has is refused: a member's file named for it (which its
    claim would quarantine) must not make it accepted, the waiting job to die later."""
    plant(shared, "0000000000.0000000000000000001.0000000000000@nojob.json", {"id": "nojob", "command": "true"})
    r = spoolq(shared.root, "enqueue", "--after", "nojob", "true")
    assert r.returncode == 2 and "after: no job 'nojob'" in r.stderr, r.stderr
    assert shared.counts().waiting == 0
    shared.enqueue({"id": "real", "command": "true"})
    assert spoolq(shared.root, "enqueue", "--after", "real", "true").returncode == 0  # a job of the owner's is


def test_a_drop_in_a_member_names_for_an_id_is_no_job_to_wait_for(shared):
    """The same through a drop-in: a member's `x.json` with the id in its `id` field (which its
    adoption quarantines: the member is not trusted) made `enqueue --after ID` accept an id no job
    of the owner's has, and the waiting job died once the drop-in was quarantined."""
    plant(shared, "x.json", {"id": "nojob", "command": "true"})
    r = spoolq(shared.root, "enqueue", "--after", "nojob", "true")
    assert r.returncode == 2 and "after: no job 'nojob'" in r.stderr, r.stderr
    assert shared.counts().waiting == 0
