"""A bad day for the machine: the spool's file system out of inodes, its directory moved or
deleted under running workers, a low `ulimit -n`, a reboot with jobs in processing/. Each test
makes the trouble for real (a small tmpfs mounted here and unmounted in a `finally`, a rename of
the spool, a hard limit on open files) and checks that spoolq loses nothing, runs nothing twice
and says what happened in one line that names the right cause."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import re
import subprocess
from typing import Callable, Iterator

import pytest

from conftest import SPOOLQ, spoolq, wait_for
from spoolq import Spool, StorageError, fsck
from spoolq.format.states import State


@contextlib.contextmanager
def tmpfs(where: str, **options: str) -> Iterator[str]:
    """A tmpfs mounted at `where` (made) with `options` (size, nr_inodes), unmounted at the end.
    These tests need root (CAP_SYS_ADMIN); .ci/run runs as root, so a refusal fails the test."""
    os.makedirs(where, exist_ok=True)
    opts = ",".join(f"{k}={v}" for k, v in options.items())
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", where], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0, f"cannot mount a tmpfs (these tests need root): {r.stderr.strip()}"
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", where], capture_output=True, timeout=10)


@contextlib.contextmanager
def ext4_image(where: str) -> Iterator[tuple[str, Callable[[], None]]]:
    """A small ext4 file system on a loop device at `where`, and a way to make it go read-only as
    the kernel does on an error (errors=remount-ro): with files open for writing, as a running
    worker holds them, `mount -o remount,ro` is refused (busy); only an unmount ends it."""
    os.makedirs(where)
    image = where + ".img"
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True, capture_output=True, timeout=30)
    r = subprocess.run(["mount", "-o", "loop,errors=remount-ro", image, where], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, f"cannot mount a loop device (these tests need root): {r.stderr.strip()}"
    device = subprocess.run(["findmnt", "-n", "-o", "SOURCE", where], capture_output=True, text=True,
                            check=True).stdout.strip()

    def read_only() -> None:
        with open(f"/sys/fs/ext4/{os.path.basename(device)}/trigger_fs_error", "w") as f:
            f.write("a bad day\n")
        wait_for(lambda: not os.access(where, os.W_OK) or _refuses_writes(where), 5, "the file system to go read-only")

    try:
        yield where, read_only
    finally:
        subprocess.run(["umount", "-l", where], capture_output=True, timeout=30)


def _refuses_writes(directory: str) -> bool:
    try:
        os.mkdir(os.path.join(directory, "probe"))
    except OSError as e:
        return e.errno == errno.EROFS
    os.rmdir(os.path.join(directory, "probe"))
    return False


def use_up_inodes(directory: str) -> list[str]:
    """Empty files in `directory` until its file system has no inode left (bytes to spare)."""
    made = []
    while True:
        path = os.path.join(directory, f"inode-{len(made)}")
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError:
            break
        made.append(path)
    assert os.statvfs(directory).f_ffree == 0 and os.statvfs(directory).f_bavail > 0
    return made


# ---- out of inodes -----------------------------------------------------------------------------


def test_out_of_inodes_is_said_so_not_a_full_disk(tmp_path):
    """ENOSPC is one errno for no free blocks and for no free inodes: a file system with most of
    its space free and every inode used was said to be 'full', which sends the operator to df, to
    find 2 % used. The line names inodes (df -i); everything works again once inodes are freed."""
    with tmpfs(str(tmp_path / "fs"), size="8m", nr_inodes="80") as fs:
        spool_dir = os.path.join(fs, "spool")
        spool = Spool(spool_dir)
        before = spool.enqueue({"command": "echo before"}).id
        fillers = use_up_inodes(fs)
        for args in (("enqueue", "echo x"), ("config", "set", "max_retries", "5"), ("pause",),
                     ("worker", "start", "--burst")):
            r = spoolq(spool_dir, *args)
            assert r.returncode == 1, (args, r)
            assert "out of inodes" in r.stderr and "is full" not in r.stderr, (args, r.stderr)
            assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
            assert os.listdir(spool.layout.tmp) == []
        for path in fillers:
            os.unlink(path)
        r = spoolq(spool_dir, "worker", "start", "--burst")
        assert r.returncode == 0, r.stderr
        assert spool.find(before).state == "done"
        assert fsck.check(spool) == []


def test_a_worker_out_of_inodes_says_so_and_records_the_job_once_they_are_back(tmp_path, workers):
    """A failed attempt is recorded by writing the job anew (an inode): out of inodes, the worker
    keeps the job in processing/ and tries again, saying why in a line that names inodes, not a
    full disk; freed, the attempt is recorded once and the retry runs."""
    with tmpfs(str(tmp_path / "fs"), size="8m", nr_inodes="120") as fs:
        spool_dir = os.path.join(fs, "spool")
        spool = Spool(spool_dir)
        spool.set_config("backoff_base", 0)
        ran = os.path.join(str(tmp_path), "ran")  # off the small file system: each run adds a line
        w = workers(1, spool_dir=spool_dir)
        job = spool.enqueue({"command": f"echo run >> {ran}; exit 3", "max_retries": 1, "delay": 0.5}).id
        fillers = use_up_inodes(fs)  # before the job is due
        line = w.wait_for(lambda: next((s for s in w.output.splitlines() if f"cannot record job {job}" in s), None),
                          15, "the worker to say it cannot record the job")
        assert "out of inodes" in line and "is full" not in line, line
        assert spool.find(job).state == "processing"
        for path in fillers:
            os.unlink(path)
        w.wait_for(lambda: spool.find(job).state == "dead", 20, "the job to end dead after its retry")
        assert spool.find(job).job.attempts == 2
        with open(ran) as f:
            assert f.read().split() == ["run", "run"]  # each attempt once
        assert "Traceback" not in w.stop()


# ---- the spool moved or deleted under its workers ----------------------------------------------


def test_a_spool_moved_away_and_made_anew_stops_its_workers_saying_so(tmp_path, workers):
    """`mv spool spool.old; spoolq init` under running workers: they went on in the new spool at
    the same path, said their registrations were 'taken over (declared dead elsewhere)' and the
    running job's result 'discarded: recovered elsewhere', while the job lay unrecorded in the
    moved spool under a live worker. Now each stops, saying the spool was moved; the job is taken
    back where the spool went, and the new spool's jobs wait for its own workers."""
    spool_dir, moved = str(tmp_path / "spool"), str(tmp_path / "spool.old")
    ran = str(tmp_path / "ran")
    spool = Spool(spool_dir)
    spool.set_config("backoff_base", 0)
    w = workers(2, spool_dir=spool_dir)
    job = spool.enqueue({"command": f"echo run >> {ran}; sleep 1"}).id
    w.wait_for(lambda: spool.find(job).state == "processing", 10, "the job to start")
    os.rename(spool_dir, moved)
    new = Spool(spool_dir)
    after = new.enqueue({"command": "echo new"}).id
    assert w.proc.wait(20) == 1  # the supervisor stops with its workers, which could not go on
    log = w.stop()
    assert log.count(f"the spool {spool_dir} was moved away or deleted under this worker, and another "
                     "directory is there now; stopping") >= 1, log  # the first to look: it stops the pool
    assert f"cannot record job {job} attempt 1: the spool {spool_dir} was moved away" in log, log
    assert "declared dead elsewhere" not in log and "recovered elsewhere" not in log and "Traceback" not in log
    assert new.find(after).state == "pending"  # never run by a worker of another spool
    old = Spool(moved)
    assert old.find(job).state == "processing"
    r = spoolq(moved, "worker", "start", "--burst")  # the job is taken back where the spool went
    assert r.returncode == 0, r.stderr
    assert old.find(job).state == "done"
    with open(ran) as f:
        assert f.read().split() == ["run", "run"]  # again only as after a crash: its first result was unrecordable
    assert fsck.check(old) == [] and fsck.check(new) == []


def test_a_spool_deleted_under_its_workers_stops_them_saying_so(tmp_path, workers):
    """`rm -rf spool` under running workers: the supervisor restarted a worker every few seconds
    for good, each saying 'cannot use the spool: No such file or directory (…/maildir)' and
    'recovery failed: … tmp/….tmp'. Now the workers say the spool was deleted, and the pool ends."""
    spool_dir = str(tmp_path / "spool")
    spool = Spool(spool_dir)
    w = workers(2, spool_dir=spool_dir)
    job = spool.enqueue({"command": "sleep 1"}).id
    w.wait_for(lambda: spool.find(job).state == "processing", 10, "the job to start")
    subprocess.run(["rm", "-rf", spool_dir], check=True)
    assert w.proc.wait(20) == 1
    log = w.stop()
    assert f"the spool {spool_dir} was moved away or deleted under this worker; stopping" in log, log
    assert "cannot start" not in log and "recovery failed" not in log and "Traceback" not in log, log
    assert not os.path.lexists(spool_dir)  # nothing made anew there (a lock once made locks/, mode 0755)


@pytest.mark.parametrize("act", ["set_config", "purge", "retention"])
def test_a_lock_on_a_deleted_spool_makes_nothing_anew(tmp_path, act):
    """A program (or a worker's retention and recovery) holding a spool that is then deleted
    took a lock in it: filelock made the missing directories, so the spool came back as a bare
    locks/ in a root of mode 0755 (the umask's), no longer private. Now the lock is refused in
    one line and nothing is made: a change through the Spool finds no spool first (NoSpool);
    retention, which takes its lock itself, finds the lock's directory gone."""
    from spoolq.format.errors import NoSpool
    from spoolq.store import config

    spool_dir = str(tmp_path / "spool")
    spool = Spool(spool_dir)
    subprocess.run(["rm", "-rf", spool_dir], check=True)
    expected = (StorageError, "its directory is gone") if act == "retention" else (NoSpool, "no spool at")
    with pytest.raises(expected[0], match=expected[1]):
        if act == "set_config":
            spool.set_config("max_retries", 5)
        elif act == "purge":
            spool.purge(state=State.DONE)
        else:
            with config.locked(spool.layout, "retention", mode=spool.store.modes.file, timeout=0):
                pass
    assert not os.path.lexists(spool_dir)


# ---- a low `ulimit -n` -------------------------------------------------------------------------


def test_a_hard_limit_too_low_for_one_worker_blames_the_limit_not_slots(spool_dir):
    """Under `ulimit -n 30` a plain `worker start` (no --slots) was refused with "Invalid value
    for '--slots': 1 slots: … run fewer slots", an option not given and a way out that does not
    exist. The line names the limit and the way out; with --slots given, the option is blamed as
    before (exit 2)."""
    Spool(spool_dir)
    plain = subprocess.run(["sh", "-c", 'ulimit -n 30 && exec "$@"', "sh", *SPOOLQ, "--spool", spool_dir,
                            "worker", "start", "--burst"], capture_output=True, text=True, timeout=60)
    assert plain.returncode == 1, plain
    [line] = plain.stderr.strip().splitlines()
    assert "--slots" not in line and "fewer slots" not in line, line
    assert re.search(r"cannot start a worker: it needs about \d+ open files; this process may open at most 30 "
                     r"\(`ulimit -Hn`\): raise it", line), line
    many = subprocess.run(["sh", "-c", 'ulimit -n 100 && exec "$@"', "sh", *SPOOLQ, "--spool", spool_dir,
                           "worker", "start", "--burst", "--slots", "64"], capture_output=True, text=True, timeout=60)
    assert many.returncode == 2 and "Invalid value for '--slots': 64 slots" in many.stderr, many


# ---- read-only ---------------------------------------------------------------------------------


def test_workers_on_a_spool_gone_read_only_are_stopped_by_the_signal_worker_stop_names(tmp_path, workers):
    """The spool's file system went read-only under running workers (the kernel's answer to an
    I/O error): `worker stop` cannot write its request, and said only 'cannot ask the workers to
    stop: Read-only file system (…/tmp/….tmp)', leaving the operator, who must stop them to
    unmount, without a way. It names the signal to send now; the supervisor so stopped exits 0
    (it exited 1, 'Error: Read-only file system: …/processing/…', unable to unregister)."""
    with ext4_image(str(tmp_path / "disk")) as (fs, read_only):
        spool_dir = os.path.join(fs, "spool")
        Spool(spool_dir)
        w = workers(2, spool_dir=spool_dir)
        read_only()
        r = spoolq(spool_dir, "worker", "stop")
        assert r.returncode == 1, r
        [line] = r.stderr.strip().splitlines()
        assert "cannot ask the workers to stop" in line and "Read-only file system" in line, line
        assert f"kill -TERM {w.proc.pid}" in line, line
        os.kill(w.proc.pid, signal.SIGTERM)
        assert w.proc.wait(20) == 0
        log = w.stop()
        assert f"supervisor {w.proc.pid}: cannot unregister: Read-only file system" in log, log
        assert "\nError:" not in "\n" + log and "Traceback" not in log, log  # (click's last line when it failed)


# ---- kill -9 -----------------------------------------------------------------------------------


def test_a_second_detached_start_after_the_supervisor_was_killed_says_it_is_gone(spool_dir, spool):
    """kill -9 of a detached pool's supervisor leaves its workers running on, unsupervised. A
    new `worker start --detach` refused, naming 'supervisor pid N' as if it ran, and `kill N` found
    nothing. It says the supervisor is gone and what that costs."""
    r = spoolq(spool_dir, "worker", "start", "--detach", "--count", "2")
    assert r.returncode == 0, r.stderr
    workers = [w.pid for w in spool.workers(role="worker")]
    try:
        [supervisor] = {w.extra["supervisor"] for w in spool.workers(role="worker")}
        os.kill(supervisor, signal.SIGKILL)
        wait_for(lambda: not os.path.exists(f"/proc/{supervisor}") or _zombie(supervisor), 10, "the supervisor to die")
        again = spoolq(spool_dir, "worker", "start", "--detach", "--count", "2")
        assert again.returncode == 1, again
        [line] = again.stderr.strip().splitlines()
        assert f"without their supervisor (it was pid {supervisor}, and is gone" in line, line
        assert "`spoolq worker stop` them first" in line, line
        assert sorted(w.pid for w in spool.workers(role="worker")) == sorted(workers)  # no second set
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_supervisor_pid_given_to_another_process_is_not_taken_for_the_supervisor(spool_dir, spool):
    """The pid of a killed supervisor can be given to another process; `alive(pid)` then said the
    pool had its supervisor, and invited a `kill` of that other process. A supervisor counts only
    while it is its workers' parent. Here a worker whose registration names pid 1, alive and
    not its parent, as a reused pid would be."""
    from spoolq.format import layout as L
    from spoolq.system import liveness

    orphan = subprocess.Popen(["sleep", "60"])  # the worker, as the registration names it
    try:
        token = L.owner_token(L.host_name(), orphan.pid)
        record = {"owner": token, "host": L.host_name(), "pid": orphan.pid, "role": "worker", "lease": 30,
                  "start": liveness.start_token(orphan.pid), "boot": liveness.boot_id(),
                  "pidns": liveness.pid_namespace(), "supervisor": 1}
        spool.store.publish(spool.layout.worker_file(token), json.dumps(record).encode(), durable=False)
        assert [w.pid for w in spool.workers(role="worker")] == [orphan.pid]
        again = spoolq(spool_dir, "worker", "start", "--detach")
        assert again.returncode == 1, again
        assert "without their supervisor (it was pid 1, and is gone" in again.stderr, again.stderr
    finally:
        orphan.kill()
        orphan.wait()


def _zombie(pid: int) -> bool:
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    return True


# ---- a reboot ----------------------------------------------------------------------------------


def test_status_after_a_reboot_names_the_jobs_held_by_gone_workers(spool_dir, spool):
    """Every process killed at once (a reboot, or kill -9 of the lot) with jobs in processing/:
    `status` said 'processing 2' and 'workers 0' and nothing of why, nor that nothing runs them
    (`fsck` had to be asked). It names them and what takes them back; the next start does, at once."""
    ids = [spool.enqueue({"command": 'if [ "$SPOOLQ_ATTEMPT" = 1 ]; then sleep 60; fi', "id": f"boot{n}"}).id
           for n in range(2)]
    pool = subprocess.Popen([*SPOOLQ, "--spool", spool_dir, "worker", "start", "--count", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: spool.counts().processing == 2, 15, "both jobs to run")
        live = spoolq(spool_dir, "show", "boot0")
        assert live.returncode == 0 and live.stderr == "", live.stderr  # its worker lives: no note
    finally:
        os.killpg(pool.pid, signal.SIGKILL)  # the supervisor, its workers and their jobs' groups...
        pool.wait()
    for job in ids:  # ... each job its own process group: as a reboot would, kill them too
        for pid in _pids_running(job):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    r = spoolq(spool_dir, "status")
    assert r.returncode == 0 and "processing   2" in r.stdout, r
    [note] = r.stderr.strip().splitlines()
    assert note == ("held by workers that are gone (killed, or a reboot): boot0, boot1; the next worker to "
                    "start takes them back (`spoolq fsck` names their workers)"), note
    js = spoolq(spool_dir, "status", "--json")
    assert json.loads(js.stdout)["held_by_gone_workers"] == 2 and js.stderr == "", js
    shown = spoolq(spool_dir, "show", "boot0")  # `show` said `processing` and named the worker, nothing more
    assert "state:        processing" in shown.stdout
    assert re.search(r"^Note: its worker \S+ is gone \(.+\): the next worker to start, or `spoolq fsck --repair`, "
                     r"takes the job back$", shown.stderr), shown.stderr
    spool.set_config("backoff_base", 0)
    r = spoolq(spool_dir, "worker", "start", "--burst")
    assert r.returncode == 0, r.stderr
    after = spoolq(spool_dir, "status")
    assert after.stderr == "" and "held_by_gone_workers" not in spoolq(spool_dir, "status", "--json").stdout, after


def _pids_running(job: str) -> list[int]:
    """The pids whose environment names this job (SPOOLQ_JOB_ID): its command and its children."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if f"SPOOLQ_JOB_ID={job}".encode() in f.read().split(b"\0"):
                        found.append(int(entry))
    return found


# ---- --if-absent where nothing can be written -------------------------------------------------------


def test_if_absent_of_jobs_that_exist_answers_on_a_read_only_spool(tmp_path):
    """`enqueue --id X --if-absent` is cron's "make sure X is queued": of an X that exists it
    writes nothing and prints X, exit 0. On a spool gone read-only (or full) it exited 1, as if
    the job were missing, because the write of its id's record came before the look."""
    with tmpfs(str(tmp_path / "fs"), size="8m") as fs:
        root = os.path.join(fs, "spool")
        Spool(root).enqueue({"id": "nightly", "command": "true"})
        subprocess.run(["mount", "-o", "remount,ro", fs], check=True)
        there = spoolq(root, "enqueue", "--id", "nightly", "--if-absent", "--cmd", "true")
        new = spoolq(root, "enqueue", "--id", "other", "--if-absent", "--cmd", "true")
    assert (there.returncode, there.stdout) == (0, "nightly\n"), there.stderr
    assert new.returncode == 1 and "Read-only file system" in new.stderr


def test_a_worker_start_on_a_read_only_spool_says_it_cannot_start(tmp_path):
    """`worker start` on a spool gone read-only said only `Error: Read-only file system: <a temp
    file>`, which reads as if something else had failed; it says what could not be done."""
    with tmpfs(str(tmp_path / "fs"), size="8m") as fs:
        root = os.path.join(fs, "spool")
        Spool(root).enqueue({"id": "a", "command": "true"})
        subprocess.run(["mount", "-o", "remount,ro", fs], check=True)
        result = spoolq(root, "worker", "start", "--burst")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: cannot start the workers: Read-only file system"), result.stderr


def test_a_quota_used_up_is_said_as_a_quota_not_a_full_disk():
    """EDQUOT counts as a full disk (nothing can be written), but it is the user's quota, not the
    disk: 'the file system is full' sent the operator to df, which showed room. (No quota can be
    set on this machine's file systems: the error itself is given.)"""
    from spoolq.store.store import io_message

    quota = OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), "/srv/spool/tmp/.x")
    assert io_message("cannot enqueue", quota) == ("cannot enqueue: the disk quota of this user is used up "
                                                   "(quota -s) (Disk quota exceeded); nothing was written")
