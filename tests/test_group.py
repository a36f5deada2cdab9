"""A spool shared with its group (group_access), tried as a member of that group who is not in
trusted_uids: what a member can do (drop a job, read) and cannot (make the owner run, signal,
delete or believe anything). The member is a real process of another uid, in the spool's group."""

from __future__ import annotations

import json
import os
import shutil
import signal
import site
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import SPOOLQ, dead_pid, safecat_path, spoolq, wait_for
from spoolq import fsck
from spoolq.format import layout as L
from spoolq.system import liveness
from spoolq.running.schedules import Schedule, Schedules
from spoolq.spool import Spool
from spools import GROUP, MEMBER, as_member, shared_spool

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another uid")


@pytest.fixture
def shared():
    """A group_access spool the member can reach: under /tmp (sticky), its group GROUP."""
    base = tempfile.mkdtemp(prefix="spoolq-group-", dir="/tmp")
    yield shared_spool(base)
    shutil.rmtree(base, ignore_errors=True)


def pending_path(spool: Spool, job_id: str) -> str:
    (name,) = [n for n in os.listdir(spool.layout.pending) if n.endswith(f"@{job_id}.json")]
    return os.path.join(spool.layout.pending, name)


# ---- 1. a member cannot rewrite, move or delete what the owner's spool holds ------------------


def owners_files(spool: Spool) -> dict[str, str]:
    spool.enqueue({"id": "victim", "command": "true", "delay": 3600})
    Schedules(spool).add(Schedule("nightly", "0 3 * * *", {"command": "true"}))
    return {"config": spool.layout.config, "pending job": pending_path(spool, "victim"),
            "schedule": os.path.join(spool.layout.dir("schedules"), "nightly.json"),
            "id marker": spool.layout.id_marker("victim")}


def test_a_member_can_rewrite_none_of_the_owners_files(shared, tmp_path):
    proof = tmp_path / "ran"
    for what, path in owners_files(shared).items():
        before = open(path, "rb").read()
        r = as_member('printf \'{"command": "touch %s", "on_done": "touch %s"}\' "$2" "$2" >> "$1"', path, str(proof))
        assert r.returncode != 0 and "Permission denied" in r.stderr, what
        assert open(path, "rb").read() == before, what


def test_a_member_can_move_or_delete_none_of_the_owners_jobs(shared):
    path = owners_files(shared)["pending job"]
    elsewhere = os.path.join(shared.layout.pending, "mine.json")
    assert as_member('mv "$1" "$2"', path, elsewhere).returncode != 0
    assert as_member('rm -f "$1"', path).returncode != 0
    assert os.path.exists(path) and not os.path.exists(elsewhere)


@pytest.mark.parametrize("where", ["processing", "done", "dead", "workers", "control", "schedules", "config.json",
                                   "ids", "slots", "locks", "after", "tmp", "events"])
def test_a_member_can_create_nothing_outside_pending(shared, where):
    path = os.path.join(shared.root, where if where == "config.json" else os.path.join(where, "x.json"))
    if where == "config.json":
        os.unlink(path)
    r = as_member('printf "{}" > "$1"', path)
    assert r.returncode != 0 and not os.path.exists(path)


def test_a_member_cannot_open_a_lock_file_to_hold_the_lock(shared):
    """flock(2) needs only a descriptor: a lock file the group could read, a member could hold for good."""
    locks = os.path.join(shared.root, "locks")
    files = [os.path.join(locks, n) for n in os.listdir(locks)]
    assert files
    for path in files:
        r = as_member('exec 3<"$1"', path)
        assert r.returncode != 0 and "Permission denied" in r.stderr, path


def test_a_member_still_drops_jobs_and_reads_the_spool(shared, workers, tmp_path):
    shared.set_config("trusted_uids", [MEMBER])
    shared.set_config("drop_grace", 0.2)
    proof = tmp_path / "ran"
    job = json.dumps({"id": "dropped", "command": f"touch {proof}"})
    pending = shared.layout.pending
    r = as_member('umask 022 && printf "%s" "$1" > "$2/.stage" && mv "$2/.stage" "$2/dropped.json"', job, pending)
    assert r.returncode == 0, r.stderr
    assert as_member('ls "$1" >/dev/null && cat "$2" >/dev/null', shared.layout.done, shared.layout.config).returncode == 0
    w = workers(1, spool_dir=shared.root)
    wait_for(lambda: os.path.exists(os.path.join(shared.layout.done, "dropped.json")), 15, "the member's job")
    w.stop()
    assert proof.exists()


def test_a_group_writable_drop_in_is_refused_even_from_a_trusted_uid(shared, workers, tmp_path):
    """Any member could rewrite it in place before it runs: it is quarantined, never run."""
    shared.set_config("trusted_uids", [MEMBER])
    shared.set_config("drop_grace", 0.2)
    proof = tmp_path / "ran"
    job = json.dumps({"id": "open", "command": f"touch {proof}"})
    r = as_member('umask 002 && printf "%s" "$1" > "$2/.stage" && mv "$2/.stage" "$2/open.json"', job,
                  shared.layout.pending)
    assert r.returncode == 0, r.stderr
    w = workers(1, spool_dir=shared.root)
    wait_for(lambda: any(n.startswith("+open") for n in os.listdir(shared.layout.dead)), 15, "the quarantine")
    w.stop()
    assert not proof.exists()
    (reason,) = [json.load(open(os.path.join(shared.layout.dir("quarantine"), n)))
                 for n in os.listdir(shared.layout.dir("quarantine"))]
    assert "writable by its group" in json.dumps(reason)


@pytest.mark.slow
def test_a_member_delivers_with_safecat_and_is_believed_only_if_trusted(shared, workers, tmp_path):
    """The Maildir's tmp/ and new/ are inboxes as pending/ is (sticky, 3770): a member's delivery
    runs if the member is trusted, and is quarantined, never run, if not."""
    shared.set_config("drop_grace", 0.2)
    maildir = shared.layout.dir("maildir")
    assert [stat.S_IMODE(os.stat(f"{maildir}/{d}").st_mode) for d in ("tmp", "new", "cur")] == [0o3770, 0o3770, 0o2750]
    deliver = 'umask 022 && printf "%s" "$1" | "$2" "$3/tmp" "$3/new"'
    proofs = {who: tmp_path / who for who in ("untrusted", "trusted")}
    r = as_member(deliver, json.dumps({"id": "untrusted", "command": f"touch {proofs['untrusted']}"}),
                  safecat_path(), maildir)
    assert r.returncode == 0, r.stderr
    untrusting = workers(1, spool_dir=shared.root)
    wait_for(lambda: any(n.startswith("+") for n in os.listdir(shared.layout.dead)), 15, "the quarantine")
    untrusting.stop()
    shared.set_config("trusted_uids", [MEMBER])
    r = as_member(deliver, json.dumps({"id": "trusted", "command": f"touch {proofs['trusted']}"}),
                  safecat_path(), maildir)
    assert r.returncode == 0, r.stderr
    workers(1, spool_dir=shared.root)
    wait_for(lambda: os.path.exists(os.path.join(shared.layout.done, "trusted.json")), 15, "the member's job")
    assert proofs["trusted"].exists() and not proofs["untrusted"].exists()
    (reason,) = [json.load(open(os.path.join(shared.layout.dir("quarantine"), n)))
                 for n in os.listdir(shared.layout.dir("quarantine"))]
    assert f"untrusted uid {MEMBER}" in reason["reason"]


def test_a_shard_a_member_made_is_never_written_into(shared):
    shared.set_config("pending_shards", 3600)
    shard = f"={int(time.time()) // 3600 * 3600:010d}"
    r = as_member('mkdir -m 777 "$1"', os.path.join(shared.layout.pending, shard))
    assert r.returncode == 0, r.stderr
    job = shared.enqueue({"command": "true"})
    assert os.listdir(os.path.join(shared.layout.pending, shard)) == []
    assert shared.find(job.id).state == "pending"
    kinds = {p.kind for p in fsck.check(shared)}
    assert "ownership" in kinds


# ---- reading: what anyone but the owner wrote, or could rewrite, is never acted on -------------


@pytest.mark.parametrize("how", ["member's file", "group-writable"])
def test_a_config_json_the_owner_did_not_write_alone_is_refused(shared, tmp_path, how):
    proof = tmp_path / "ran"
    data = json.dumps({"group_access": True, "on_done": f"touch {proof}"}).encode()
    path = shared.layout.config
    os.unlink(path)
    with open(path, "wb") as f:
        f.write(data)
    if how == "member's file":
        os.chown(path, MEMBER, GROUP)
        os.chmod(path, 0o640)
    else:
        os.chmod(path, 0o660)
    shared.enqueue({"command": "true"})
    r = spoolq(shared.root, "worker", "start", "--burst")
    assert r.returncode == 1 and "refusing" in r.stderr and "config.json" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not proof.exists()


def test_a_pending_job_others_could_rewrite_is_quarantined_not_run(shared, tmp_path):
    proof = tmp_path / "ran"
    job = shared.enqueue({"id": "opened", "command": f"touch {proof}"})
    os.chmod(pending_path(shared, job.id), 0o660)  # as an older spoolq left it: the group could rewrite it
    r = spoolq(shared.root, "worker", "start", "--burst")
    assert r.returncode == 0, r.stderr
    assert not proof.exists()
    (quarantined,) = [n for n in os.listdir(shared.layout.dead) if n.startswith(L.QUARANTINE_PREFIX)]
    assert "writable by its group" in shared.find(quarantined[:-len(".json")]).to_dict()["last_error"]


def test_a_schedule_others_could_rewrite_is_not_fired(shared, tmp_path):
    proof = tmp_path / "ran"
    schedules = Schedules(shared)
    schedules.add(Schedule("often", "* * * * *", {"command": f"touch {proof}"}))
    os.chmod(os.path.join(shared.layout.dir("schedules"), "often.json"), 0o660)
    with pytest.raises(Exception, match="writable by its group"):
        schedules.get("often")


# ---- 2. recovery never signals, and never judges a worker gone, from a record a member wrote ---


def daemon() -> subprocess.Popen:
    """A process group standing in for a root daemon that no job of the spool started."""
    return subprocess.Popen(["sleep", "300"], start_new_session=True)


def dead_local_worker(spool: Spool) -> str:
    """The directory of a worker of this host that died running a job; its registration is its own."""
    pid = dead_pid()
    owner = f"{L.host_name()}-{pid}-dead"
    os.mkdir(spool.layout.owned(owner), 0o2750)
    spool.store.write_file(spool.layout.worker_file(owner), json.dumps(
        {"owner": owner, "host": L.host_name(), "pid": pid, "boot": liveness.boot_id(),
         "pidns": liveness.pid_namespace(), "role": "worker"}).encode(), durable=False)
    return spool.layout.owned(owner)


def forged_group_record(proc: subprocess.Popen) -> bytes:
    tick = liveness.start_token(proc.pid)
    start = int(tick) if tick and tick.isdigit() else liveness.ticks_now()
    return liveness.group_record(proc.pid, (start, start))


@pytest.mark.parametrize("how", ["member's file", "group-writable"])
def test_recovery_never_kills_a_group_named_by_a_record_the_owner_did_not_write_alone(shared, how):
    victim = daemon()
    try:
        directory = dead_local_worker(shared)
        path = os.path.join(directory, L.GROUP_FILE)
        with open(path, "wb") as f:
            f.write(forged_group_record(victim))
        if how == "member's file":
            os.chown(path, MEMBER, GROUP)
        else:
            os.chmod(path, 0o660)
        shared.recovery.run("rescuer-1-x")
        assert victim.poll() is None, "recovery killed a process group that no job of its owner recorded"
        assert not os.path.exists(directory)  # the directory itself was still recovered
    finally:
        victim.kill()
        victim.wait()


def test_recovery_kills_the_group_its_owner_recorded(shared):
    """The same record, written by the owner: the check above is not a check that never kills."""
    victim = daemon()
    try:
        directory = dead_local_worker(shared)
        with open(os.path.join(directory, L.GROUP_FILE), "wb") as f:
            f.write(forged_group_record(victim))
        shared.recovery.run("rescuer-1-x")
        assert victim.wait(10) == -signal.SIGKILL
    finally:
        victim.kill()
        victim.wait()


def test_a_member_cannot_forge_a_live_workers_registration_or_group_record(shared, workers):
    w = workers(1, spool_dir=shared.root)
    (owner,) = [x.owner for x in shared.owners.workers(role="worker")]
    registration = shared.layout.worker_file(owner)
    r = as_member('printf \'{"host": "x", "pid": 1, "start": "0"}\' > "$1"', registration)
    assert r.returncode != 0
    r = as_member('printf "1 0 0" > "$1"', os.path.join(shared.layout.owned(owner), L.GROUP_FILE + ".x"))
    assert r.returncode != 0
    w.stop()


def test_a_registration_the_owner_did_not_write_alone_never_makes_its_worker_gone(shared, workers):
    """A live worker whose registration was rewritten (here by the owner's hand, as a member could
    have before the modes were narrowed) is judged by the file's lease, never by its content."""
    w = workers(1, spool_dir=shared.root)
    (owner,) = [x.owner for x in shared.owners.workers(role="worker")]
    path = shared.layout.worker_file(owner)
    st = os.stat(path)
    with open(path, "w") as f:
        json.dump({"host": L.host_name(), "pid": 1, "start": "0", "role": "worker"}, f)  # says: pid 1, long gone
    os.chmod(path, 0o660)
    assert shared.owners.judge().why_gone(shared.owners.registration(owner)) is None
    assert owner not in {o.name for o in shared.owners.gone_dirs()}
    assert "untrusted-record" in {p.kind for p in fsck.check(shared)}
    os.chmod(path, stat.S_IMODE(st.st_mode))
    w.stop()


# ---- a member reads the spool with spoolq, and changes it only by the drop-in protocol -----------


def spoolq_for_the_member() -> str:
    """spoolq as the member can run it: this interpreter, or where it lives in a directory the
    member cannot enter (a pyenv under /root), the system's python3 of the same version, with
    this checkout and the venv's packages on its path."""
    if as_member(f'test -x "{sys.executable}" && "{sys.executable}" -c ""').returncode == 0:
        return " ".join(SPOOLQ)
    system = "/usr/bin/python3"
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if as_member(f'{system} -c "import sys; assert sys.version.startswith(\'{version}.\')"').returncode != 0:
        pytest.skip("no python the member can run")
    paths = ":".join([os.path.dirname(os.path.dirname(os.path.abspath(__file__))), *site.getsitepackages()])
    return f"PYTHONPATH={paths} {system} -m spoolq"


def test_a_member_reads_the_shared_spool_and_hands_jobs_in_only_as_drop_ins(shared):
    from spools import tree

    # config.json written anew, now that tmp/ is setgid: files spoolq wrote before the spool was
    # opened to its group (config.json among them) keep the owner's group, which members cannot read.
    shared.set_config("group_access", True)
    shared.enqueue({"id": "queued", "command": "echo hi", "delay": 3600})
    before = tree(shared.root)
    program = spoolq_for_the_member()
    for args in ("status --json", "list", "show queued", "dlq list", "worker list", "config show"):
        r = as_member(f'{program} --spool "$1" {args}', shared.root)
        assert r.returncode == 0 and "Traceback" not in r.stderr, (args, r.stderr)
    assert json.loads(as_member(f'{program} --spool "$1" status --json', shared.root).stdout)["scheduled"] == 1
    r = as_member(f'{program} --spool "$1" enqueue true', shared.root)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "sudo -u root" in r.stderr and "dropped into pending/" in r.stderr, r.stderr
    assert tree(shared.root) == before


# ---- a spool shared by an older spoolq is narrowed by its owner before anything is read --------


def test_an_old_shared_spool_is_narrowed_at_its_owners_first_command(shared):
    job = shared.enqueue({"command": "true", "delay": 3600})
    for dirpath, dirnames, filenames in os.walk(shared.root):  # as spoolq 0.x left a shared spool
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o2770)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o660)
    config_inode = os.stat(shared.layout.config).st_ino
    r = spoolq(shared.root, "status")
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(shared.layout.pending).st_mode) == 0o3770
    assert stat.S_IMODE(os.stat(shared.layout.done).st_mode) == 0o2750
    assert stat.S_IMODE(os.stat(pending_path(shared, job.id)).st_mode) == 0o640
    assert os.stat(shared.layout.config).st_ino != config_inode  # a new file: an old open one writes nowhere
    assert stat.S_IMODE(os.stat(shared.layout.config).st_mode) == 0o640


@pytest.mark.parametrize("writable_by_group", [False, True])
def test_an_id_marker_names_its_creator_only_if_the_owner_wrote_it_alone(shared, writable_by_group):
    """A marker whose creator is dead is freed at once; one whose record others could have written
    says nothing of its creator, so it is not freed on its word."""
    marker = shared.layout.id_marker("claimed")
    shared.store.write_file(marker, json.dumps({"host": L.host_name(), "pid": dead_pid(), "boot": liveness.boot_id(),
                                                "pidns": liveness.pid_namespace()}).encode(), durable=False)
    if writable_by_group:
        os.chmod(marker, 0o660)
    fsck.check(shared, repair=True)
    assert os.path.exists(marker) == writable_by_group
