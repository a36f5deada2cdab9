"""Review of the day's changes (queue filters, a spool moved or deleted under its workers, a
read-only spool's `worker stop`, a killed supervisor, ...): each test pins a hole found in them,
made for real (an ext4 image on a loop device, a FUSE mount remounted), as the operator who
would hit it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Iterator

import pytest

from conftest import spoolq, wait_for
from spoolq import Spool
from test_disaster_day import _zombie, ext4_image


def _kill_quietly(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# ---- 1. worker stop on a read-only spool names a killed supervisor's pid ----------------------


@pytest.mark.review("s7 1")
def test_worker_stop_on_a_read_only_spool_names_the_workers_whose_supervisor_was_killed(tmp_path):
    """kill -9 of a detached pool's supervisor, then the spool's file system goes read-only:
    `worker stop` cannot write its request and told the operator to `kill -TERM <the supervisor's
    pid>`, a pid nothing runs at (or, reused, another program's process), while the workers ran
    on. It names what stops them: the workers themselves, whose supervisor is gone."""
    with ext4_image(str(tmp_path / "disk")) as (fs, read_only):
        spool_dir = os.path.join(fs, "spool")
        spool = Spool(spool_dir)
        r = spoolq(spool_dir, "worker", "start", "--detach", "--count", "2")
        assert r.returncode == 0, r.stderr
        workers = sorted(w.pid for w in spool.workers(role="worker"))
        try:
            [supervisor] = {w.extra["supervisor"] for w in spool.workers(role="worker")}
            os.kill(supervisor, signal.SIGKILL)
            wait_for(lambda: not os.path.exists(f"/proc/{supervisor}") or _zombie(supervisor), 10,
                     "the supervisor to die")
            read_only()
            r = spoolq(spool_dir, "worker", "stop")
            assert r.returncode == 1, r
            [line] = r.stderr.strip().splitlines()
            assert "Read-only file system" in line, line
            assert f"kill -TERM {' '.join(map(str, workers))}" in line, line
            assert str(supervisor) not in line.split("kill -TERM", 1)[1], line
        finally:
            _kill_quietly(workers)


# ---- 2. a spool remounted under its workers is not "moved" ------------------------------------


@contextlib.contextmanager
def bindfs(source: str, where: str) -> Iterator[str]:
    """A FUSE view of `source` at `where` (each mount has a device number of its own, as an NFS
    or GlusterFS mount has), lazily unmounted at the end."""
    os.makedirs(where, exist_ok=True)
    r = subprocess.run(["bindfs", source, where], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"cannot mount bindfs (this test needs root and /dev/fuse): {r.stderr.strip()}"
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", where], capture_output=True, timeout=30)


@pytest.mark.rig
@pytest.mark.review("s7 2")
def test_a_spool_remounted_under_its_worker_is_not_said_moved(tmp_path):
    """`umount -l /mnt/spool; mount /mnt/spool` (a network mount's remount, or its client
    restarted by an automounter) gives the same spool a new device number: root_moved compared
    st_dev too, said 'moved away or deleted … another directory is there now', and the workers
    stopped for good, exit 1, with their spool right there. The same directory (its inode, the
    held one not deleted) on a new mount is the same spool."""
    source, mnt = str(tmp_path / "export"), str(tmp_path / "mnt")
    Spool(os.path.join(source, "spool"))
    with bindfs(source, mnt):
        spool = Spool(os.path.join(mnt, "spool"), create=False)
        spool.store.hold_root()
        dev = os.stat(spool.root).st_dev
        held = os.open(os.path.join(spool.root, "pending"), os.O_RDONLY)  # as a worker's open files hold it
        try:
            subprocess.run(["umount", "-l", mnt], check=True, timeout=30)
            with bindfs(source, mnt):
                assert os.stat(spool.root).st_dev != dev  # (the premise: a new mount, a new device number)
                assert spool.store.root_moved() is None
                assert spool.enqueue({"command": "true"}).id  # the spool is right there
        finally:
            os.close(held)


# ---- 3. a spool out of reach is not "no spool" ------------------------------------------------


@pytest.mark.rig
@pytest.mark.review("s7 3")
def test_a_spool_out_of_reach_is_not_said_to_be_no_spool(tmp_path):
    """A spool on a network or FUSE mount whose client died (ENOTCONN: a GlusterFS outage) is
    there, out of reach. Since Spool(path, create=False)'s NoSpool checks, every failing method
    said 'no spool at …' (the answer to a mistyped path, which sends one to `init`), and
    paused(), workers() raised it too, where the file system's own error names the trouble. The
    check says NoSpool only where pending/ is not there."""
    from spoolq.format.errors import NoSpool, StorageError

    source, mnt = str(tmp_path / "export"), str(tmp_path / "mnt")
    Spool(os.path.join(source, "spool"))
    with bindfs(source, mnt):
        spool = Spool(os.path.join(mnt, "spool"), create=False)
        [daemon] = [int(p) for p in subprocess.run(["pgrep", "-f", f"bindfs {source} {mnt}"], capture_output=True,
                                                   text=True).stdout.split()]
        os.kill(daemon, signal.SIGKILL)
        wait_for(lambda: not os.path.exists(f"/proc/{daemon}"), 10, "the FUSE client to die")
        with pytest.raises(StorageError, match="not connected") as e:
            spool.stats(60)
        assert not isinstance(e.value, NoSpool)
        for call in (spool.paused, spool.workers, spool.concurrency):
            with contextlib.suppress(StorageError, OSError):  # (each may say the file system's error)
                call()
    spool = Spool(str(tmp_path / "nowhere"), create=False)  # a wrong path is still NoSpool
    with pytest.raises(NoSpool):
        spool.stats(60)


# ---- 4. the dashboard's cached order of done/ and a finished file given a freed inode --------


@pytest.mark.review("s7 4")
def test_a_job_finished_again_in_a_reused_inode_is_not_shown_at_its_old_place(tmp_path, monkeypatch):
    """FinishedOrder keeps each done file's finish time by its name and inode. A job requeued
    and done twice while no one looked (a dashboard tab closed for the night) is back under its
    name, and on ext4 in the inode it first had (each requeue's rewrite takes the inode the last
    one freed): its old finish time was kept, and the done list (newest first) showed it where it
    had finished first, pages down, though it finished last. A listing that comes long after the
    last one (FinishedOrder.FRESH_FOR) reads every time again."""
    from spoolq.reading import places

    now = [1000.0]
    monkeypatch.setattr(places, "monotonic", lambda: now[0], raising=False)
    with ext4_image(str(tmp_path / "disk")) as (fs, _):
        spool = Spool(os.path.join(fs, "spool"))
        owner = spool.owners.register("worker")

        def run(job_id: str) -> int:
            claim = spool.transitions.claim(os.path.basename(spool.find(job_id).path), owner)
            spool.transitions.finish(claim, ok=True, exit_code=0, error=None)
            return os.stat(spool.find(job_id).path).st_ino

        spool.enqueue({"command": "true", "id": "x"})
        first = run("x")
        spool.enqueue({"command": "true", "id": "y"})
        run("y")
        assert [p.job_id for p in spool.views.places("done")] == ["x", "y"]
        now[0] += 3600  # the night
        spool.requeue(["x"])
        run("x")
        spool.requeue(["x"])
        assert run("x") == first  # (ext4's way: the premise of this test)
        assert [p.job_id for p in spool.views.places("done")] == ["y", "x"]


# ---- 5. a lock in a spool out of reach is not "moved or deleted" ------------------------------


@pytest.mark.rig
@pytest.mark.review("s7 5")
def test_a_lock_in_a_spool_out_of_reach_names_the_file_systems_error(tmp_path):
    """A lock's directory that cannot be looked at (a mount whose client died: ENOTCONN) was
    said gone, 'the spool was moved or deleted', errno ENOENT: a worker's retention and recovery
    said so in every line of a GlusterFS outage, and a caller that tells an outage from a loss by
    the errno could not. Only a directory not there is gone."""
    import errno

    from spoolq.format.errors import StorageError
    from spoolq.store import config

    source, mnt = str(tmp_path / "export"), str(tmp_path / "mnt")
    Spool(os.path.join(source, "spool"))
    with bindfs(source, mnt):
        spool = Spool(os.path.join(mnt, "spool"), create=False)
        mode = spool.store.modes.file
        [daemon] = [int(p) for p in subprocess.run(["pgrep", "-f", f"bindfs {source} {mnt}"], capture_output=True,
                                                   text=True).stdout.split()]
        os.kill(daemon, signal.SIGKILL)
        wait_for(lambda: not os.path.exists(f"/proc/{daemon}"), 10, "the FUSE client to die")
        with pytest.raises(StorageError) as e:
            with config.locked(spool.layout, "retention", mode=mode, timeout=0):
                pass
        assert e.value.errno == errno.ENOTCONN and "moved or deleted" not in str(e.value), e.value
