"""Who may write into a spool: a spool another user could write into is refused, the spool is
private by default and opened to its group only on request, every file spoolq makes gets the
spool's mode, and spoolq changes the modes of nothing it did not make. (A member of the spool's
group, as a real process: tests/test_group.py.)"""

from __future__ import annotations

import json
import os
import stat

import pytest

from conftest import wait_for
from spoolq import Spool
from spoolq.system import locks
from spools import cli, ROOT_ONLY, STRANGER, _symlinked_done


def entries(root: str) -> set[str]:
    return {os.path.relpath(os.path.join(d, n), root) for d, ds, fs in os.walk(root) for n in ds + fs}


# ---- hardening: 1. nobody let in: a spool another user could write into is refused ---------------


def _world_writable_root(root: str) -> str:
    os.makedirs(root)
    os.chmod(root, 0o777)
    return root


def _world_writable_pending(root: str) -> str:
    os.makedirs(os.path.join(root, "pending"))
    os.chmod(root, 0o700)
    os.chmod(os.path.join(root, "pending"), 0o777)
    return os.path.join(root, "pending")


def _group_writable_pending(root: str) -> str:
    Spool(root)
    os.chmod(os.path.join(root, "pending"), 0o770)
    return os.path.join(root, "pending")


def _strangers_pending(root: str) -> str:
    Spool(root)
    os.chown(os.path.join(root, "pending"), STRANGER, STRANGER)
    return os.path.join(root, "pending")


def _strangers_root(root: str) -> str:
    os.makedirs(root, 0o700)
    os.chown(root, STRANGER, STRANGER)
    return root


UNSAFE = [
    ("world-writable-root", _world_writable_root, "anyone can write into it", False),
    ("world-writable-pending", _world_writable_pending, "anyone can write into it", False),
    ("group-writable-pending", _group_writable_pending, "its group can write into it", False),
    ("strangers-pending", _strangers_pending, f"belongs to uid {STRANGER}", True),
    ("strangers-root", _strangers_root, f"belongs to uid {STRANGER}", True),
    ("symlinked-done", _symlinked_done, "symbolic link", False),
]


@pytest.mark.review("hardening 1")
@pytest.mark.parametrize("case,make,why,needs_root", UNSAFE, ids=[c[0] for c in UNSAFE])
@pytest.mark.parametrize("command", [("enqueue", "--cmd", "true"), ("status",), ("worker", "start", "--burst"),
                                     ("init",), ("purge",)])
def test_a_spool_another_user_could_write_into_is_refused(tmp_path, case, make, why, needs_root, command):
    if needs_root and os.geteuid() != 0:
        pytest.skip("needs root to give a directory to another uid")
    root = str(tmp_path / "jobs")
    bad = make(root)
    before = entries(root)
    r = cli(root, *command)
    assert r.returncode == 1, r
    if case == "strangers-root" and command == ("status",):  # a reader judges it as its owner: no spool
        assert r.stderr.startswith(f"Error: no spool at {root} (") and entries(root) == before
        return
    message = r.stderr.strip()
    assert message.count("\n") == 0 and "Traceback" not in message, message
    assert f"refusing to use {bad}: " in message and why in message, message
    assert "owner uid" in message and "mode" in message, message
    assert entries(root) == before  # nothing created, nothing run


@pytest.mark.review("hardening 1")
def test_the_review_attack_a_pre_made_world_writable_spool_never_runs_a_strangers_job(tmp_path):
    """Another user makes jobs/ and jobs/pending/ mode 0777 and drops a job; root's worker must
    not run it (before, it ran as root)."""
    root = tmp_path / "jobs"
    _world_writable_pending(str(root))
    os.chmod(root, 0o777)
    proof = tmp_path / "ran"
    (root / "pending" / "evil.json").write_text(json.dumps({"command": f"touch {proof}"}))
    r = cli(str(root), "worker", "start", "--burst")
    assert r.returncode == 1 and "refusing to use" in r.stderr
    assert not proof.exists()


@pytest.mark.review("hardening 1")
def test_group_access_admits_a_group_writable_spool(tmp_path):
    root = str(tmp_path / "shared")
    Spool(root).set_config("group_access", True)
    assert cli(root, "enqueue", "--cmd", "true").returncode == 0
    os.chmod(os.path.join(root, "done"), 0o2770)  # only the inbox, pending/, may be open to the group
    r = cli(root, "enqueue", "--cmd", "true")
    assert r.returncode == 1 and "only pending/ may be open to the group" in r.stderr


# ---- hardening: 3. every file spoolq creates gets the spool's mode; strays in pending/ stay inert 


@pytest.mark.review("hardening 3")
def test_with_group_access_every_created_file_has_the_spools_mode(spool, workers):
    spool.set_config("group_access", True)
    old = os.umask(0o022)
    try:
        with spool.store.locked("dlq"):  # its file names who holds it
            assert locks.holder(spool.layout.lock("dlq")).pid == os.getpid()
        job = spool.enqueue({"id": "x", "command": "echo x"}).id  # output: it has a log
        w = workers(1)
        wait_for(lambda: spool.find(job).state == "done", 10, "the job")
        w.stop()
    finally:
        os.umask(old)
    made = [spool.layout.id_marker("x"), spool.output_path("x"), os.path.join(spool.layout.done, "x.json"),
            spool.layout.config] + \
        [os.path.join(spool.layout.dir("log"), n) for n in os.listdir(spool.layout.dir("log"))]
    assert {p: oct(stat.S_IMODE(os.stat(p).st_mode)) for p in made} == dict.fromkeys(made, oct(0o640))
    assert stat.S_IMODE(os.stat(spool.layout.lock("dlq")).st_mode) == 0o600  # the group could hold it


# ---- hardening: 4. repairs and mode changes touch only what spoolq created -----------------------


@pytest.mark.review("hardening 4")
def test_group_access_does_not_chmod_the_users_own_files(spool):
    mine = [os.path.join(spool.root, "NOTES.txt"), os.path.join(spool.layout.pending, "notes.txt"),
            os.path.join(spool.layout.tmp, "scratch")]
    for path in mine:
        with open(path, "w") as f:
            f.write("mine")
        os.chmod(path, 0o600)
    spool.set_config("group_access", True)
    assert [stat.S_IMODE(os.stat(p).st_mode) for p in mine] == [0o600] * 3
    assert stat.S_IMODE(os.stat(spool.layout.pending).st_mode) == 0o3770


@pytest.mark.review("hardening 4")
def test_a_non_empty_directory_that_is_not_a_spool_is_never_filled(tmp_path):
    """`--spool /` would have scattered ten directories into /; a directory with anything in it
    (here: a home directory's worth) is refused the same way."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("")
    (home / "work").mkdir()
    for command in (("init",), ("enqueue", "--cmd", "true"), ("worker", "start", "--burst")):
        r = cli(str(home), *command)
        assert r.returncode == 1 and "is not empty and not a spool" in r.stderr, r
    assert sorted(os.listdir(home)) == [".bashrc", "work"]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".gitkeep").write_text("")  # the embedded spool/ of a checkout
    assert cli(str(tmp_path / "empty"), "init").returncode == 0


# ---- hardening: what the adversarial review of this work found -----------------------------------


@pytest.mark.review("hardening this work")
@ROOT_ONLY
@pytest.mark.parametrize("where", ["processing", "dead"])
def test_a_strangers_job_file_is_never_run_by_recovery_or_dlq_retry(spool, tmp_path, where):
    """A group member (or anyone who can write there) who plants a job in processing/<dir>/ or
    dead/ must not get it run: recovery and dlq retry rewrite a file as the worker's user, so
    they check its owner as the claim does."""
    proof = tmp_path / "pwned"
    job = {"id": "evil", "command": f"id > {proof}", "cwd": "/tmp", "attempts": 0, "max_retries": 3,
           "priority": 0, "seq": 1}
    if where == "processing":
        fake = os.path.join(spool.layout.processing, "fake")
        os.mkdir(fake)
        path = os.path.join(fake, "evil.json")
    else:
        path = os.path.join(spool.layout.dead, "evil.json")
    with open(path, "w") as f:
        json.dump(job, f)
    os.chown(path, STRANGER, STRANGER)
    if where == "processing":
        os.chown(os.path.dirname(path), STRANGER, STRANGER)
    cli(spool.root, "dlq", "retry", "--all")
    cli(spool.root, "worker", "start", "--burst")
    cli(spool.root, "worker", "start", "--burst")
    assert not proof.exists()


@pytest.mark.review("hardening this work")
def test_parents_made_for_a_new_spool_are_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        assert cli(str(tmp_path / "a" / "b" / "spool"), "init").returncode == 0
    finally:
        os.umask(old)
    assert [stat.S_IMODE(os.stat(tmp_path / p).st_mode) for p in ("a", "a/b")] == [0o700, 0o700]


@pytest.mark.review("hardening this work")
@pytest.mark.parametrize("mode", [0o777, 0o770])
def test_a_directory_above_the_spool_that_others_can_write_is_refused(tmp_path, mode):
    above = tmp_path / "open"
    above.mkdir()
    Spool(str(above / "spool"))
    os.chmod(above, mode)
    r = cli(str(above / "spool"), "status")
    assert r.returncode == 1 and f"{above} above it is writable" in r.stderr, r.stderr
    os.chmod(above, mode | stat.S_ISVTX)  # sticky, as /tmp is: others cannot move what is ours
    assert cli(str(above / "spool"), "status").returncode == 0


@pytest.mark.review("hardening this work")
@pytest.mark.slow
def test_a_worker_stops_when_its_spool_stops_being_safe(spool, workers):
    w = workers(1)
    os.chmod(spool.layout.pending, 0o777)
    wait_for(lambda: w.proc.poll() is not None, 15, "the worker to stop")
    assert w.proc.returncode == 1
    assert "refusing to use" in w.stop()


# ---- hostile: permissions ------------------------------------------------------------------------


def tree_modes(root: str) -> dict[str, int]:
    out = {os.path.relpath(root, root): stat.S_IMODE(os.lstat(root).st_mode)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            out[os.path.relpath(path, root) + ("/" if stat.S_ISDIR(st.st_mode) else "")] = stat.S_IMODE(st.st_mode)
    return out


def exercise(spool_dir: str, run, workers, tag: str) -> str:
    """Enough activity to create every kind of file: jobs, logs, config, locks, registrations."""
    assert run("config", "set", "max_retries", "0").returncode == 0
    ok = run("enqueue", f"echo {tag}").stdout.strip()
    bad = run("enqueue", "exit 3").stdout.strip()
    w = workers(1)
    spool = Spool(spool_dir)
    wait_for(lambda: spool.find(ok).state == "done" and spool.find(bad).state == "dead", 10, "the jobs")
    assert run("enqueue", "--cmd", "true", "--delay", "100").returncode == 0
    w.stop()
    return ok


def test_spool_is_private_by_default(spool_dir, run, workers):
    old = os.umask(0)  # even a permissive umask must not open it up
    try:
        exercise(spool_dir, run, workers, "private")
    finally:
        os.umask(old)
    modes = tree_modes(spool_dir)
    assert any(k.startswith("output/") for k in modes) and any(k.startswith("done/") for k in modes)
    too_open = {k: oct(m) for k, m in modes.items() if m & 0o077}
    assert too_open == {}
    assert modes["config.json"] == 0o600


@pytest.mark.slow
def test_group_access_opens_the_spool_to_its_group(spool_dir, run, workers):
    exercise(spool_dir, run, workers, "before")
    r = run("config", "set", "group_access", "true")
    assert r.returncode == 0, r.stderr
    ok = exercise(spool_dir, run, workers, "after")
    modes = tree_modes(spool_dir)
    for path, mode in modes.items():  # the group reads all, and creates files in the inboxes alone
        if path in ("pending/", "maildir/tmp/", "maildir/new/"):
            assert mode == 0o3770, oct(mode)
        elif path.endswith("/") or path == ".":
            assert mode == 0o2750, (path, oct(mode))
        elif path.startswith("locks/"):
            assert mode == 0o600, (path, oct(mode))  # whoever can open a lock file can hold the lock
        else:
            assert mode == 0o640, (path, oct(mode))
    assert modes[f"output/{ok}.log"] == 0o640



# ---- control/stop: only the owner's entry is a stop request, readable or not --------------------


def _stop_entry(spool: Spool, kind: str) -> None:
    path = spool.layout.stop_file
    if os.path.lexists(path):
        os.unlink(path)
    if kind == "fifo":
        os.mkfifo(path, 0o600)
    elif kind == "directory":
        os.mkdir(path, 0o700)
    elif kind == "symlink":
        os.symlink("/etc/hostname", path)
    else:
        with open(path, "w") as f:
            f.write("garbage with no time\n")
        os.chmod(path, 0o600)


@pytest.mark.parametrize("kind", ["fifo", "directory", "file"])
def test_the_owners_own_stop_entry_counts_from_its_mtime_even_when_unreadable(spool, kind):
    _stop_entry(spool, kind)
    request = spool.owners.stop_request()
    assert request is not None and request.at == os.lstat(spool.layout.stop_file).st_mtime


@ROOT_ONLY
@pytest.mark.parametrize("kind", ["fifo", "directory", "file"])
def test_a_stop_entry_another_uid_made_is_no_stop_request_even_when_unreadable(spool, kind):
    """Only the owner's entry is a request, whatever it is; control/ is the owner's alone today,
    and the check must not depend on that."""
    _stop_entry(spool, kind)
    os.chown(spool.layout.stop_file, STRANGER, STRANGER, follow_symlinks=False)
    assert spool.owners.stop_request() is None


def test_a_symlink_at_control_stop_is_never_followed_nor_a_stop_request(spool):
    _stop_entry(spool, "symlink")
    assert spool.owners.stop_request() is None
