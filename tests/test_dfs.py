"""What spoolq knows of the file system under a spool (mounts.py), on a real GlusterFS
(tests/dfs.py): the configuration the README asks for is accepted, Gluster's defaults are named
and refused, and a worker starts there only when told to."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from conftest import SPOOLQ
from spoolq import Spool
from spoolq.system import mounts
from spoolq.format.errors import UnsafeFileSystem


@pytest.fixture
def stock_spool(gluster, tmp_path) -> str:
    name = gluster.new_dir("stock", os.path.basename(tmp_path))
    path = os.path.join(gluster.mount("stock", "A"), name)
    Spool(path)
    return path


def test_strict_gluster_is_safe(gluster, tmp_path):
    path = os.path.join(gluster.mount("strict", "A"), gluster.new_dir("strict", os.path.basename(tmp_path)))
    assert mounts.kind_of(path) == "fuse.glusterfs"
    assert mounts.unsafe_because(path) is None
    Spool(path).check_filesystem()  # does not raise


def test_stock_gluster_is_named_unsafe_with_every_reason(stock_spool):
    why = mounts.unsafe_because(stock_spool)
    assert why is not None
    for reason in ("--entry-timeout=0", "--attribute-timeout=0", "--negative-timeout=0", "features.ctime",
                   "performance.stat-prefetch", "performance.quick-read", "leases and fences are not safe"):
        assert reason in why, why
    with pytest.raises(UnsafeFileSystem):
        Spool(stock_spool).check_filesystem()


def test_local_disk_is_safe(tmp_path):
    assert mounts.unsafe_because(str(tmp_path)) is None


@pytest.mark.parametrize("kind, options, local", [
    ("nfs", "rw,vers=3,nolock,local_lock=all", "nolock"), ("nfs", "rw,vers=3,local_lock=flock", "local_lock=flock"),
    ("nfs", "rw,vers=3,local_lock=posix", None), ("nfs4", "rw,vers=4.2,local_lock=none", None),
    ("lustre", "rw,localflock", "localflock"), ("lustre", "rw", "not supported"), ("lustre", "rw,flock", None),
    ("fuse.bindfs", "rw,user_id=0", None), ("ext4", "rw", None)])
def test_a_mount_whose_flocks_stay_on_one_host_is_named(kind, options, local):
    """Where flock(2) never reaches the server, a spool lock excludes only one host's processes:
    the mount's own options say so (no NFS or Lustre server here: the options as mountinfo shows
    them), and unsafe_because, which workers refuse on, names it."""
    why = mounts.flock_stays_local(kind, frozenset(options.split(",")))
    assert (why is None) == (local is None) and (local is None or local in why), why


def test_worker_start_refuses_stock_gluster_in_one_line(stock_spool):
    env = {k: v for k, v in os.environ.items() if k != "SPOOLQ_ALLOW_UNSAFE_FS"}
    r = subprocess.run([*SPOOLQ, "--spool", stock_spool, "worker", "start", "--burst"], capture_output=True,
                       text=True, timeout=60, env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: GlusterFS mount "), r.stderr
    assert "--allow-unsafe-fs" in lines[0]
    assert Spool(stock_spool).workers() == [] and os.listdir(os.path.join(stock_spool, "processing")) == []


@pytest.mark.parametrize("how", ["flag", "env"])
def test_worker_starts_on_stock_gluster_when_told_and_says_so(stock_spool, how):
    spool = Spool(stock_spool)
    job = spool.enqueue({"command": "true"})
    env = {k: v for k, v in os.environ.items() if k != "SPOOLQ_ALLOW_UNSAFE_FS"}
    args = ["worker", "start", "--burst"]
    if how == "flag":
        args.append("--allow-unsafe-fs")
    else:
        env["SPOOLQ_ALLOW_UNSAFE_FS"] = "1"
    r = subprocess.run([*SPOOLQ, "--spool", stock_spool, *args], capture_output=True, text=True, timeout=60,
                       env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning: GlusterFS mount" in r.stderr and "allowed by --allow-unsafe-fs" in r.stderr, r.stderr
    assert spool.find(job.id).state == "done"


def test_the_api_worker_refuses_too(stock_spool):
    from spoolq.running.worker import CannotStart, Worker

    with pytest.raises(CannotStart, match="GlusterFS mount"):
        Worker(Spool(stock_spool), burst=True).run()
    assert Spool(stock_spool).workers() == []


@pytest.mark.parametrize("volume, stale", [("stock", True), ("strict", False)])
def test_another_hosts_replacement_is_seen_at_once_only_on_strict(gluster, tmp_path, volume, stale):
    """Why stock Gluster is refused, measured: host B reads a file, host A replaces it (write a
    temp file, rename over, as spoolq saves its config), and B reads it again at once."""
    name = gluster.new_dir(volume, os.path.basename(tmp_path))
    seen = []
    for round_ in range(5):  # a file each: one round's caching cannot spill into the next
        a, b = (os.path.join(gluster.mount(volume, h), name, f"config-{round_}.json") for h in ("A", "B"))
        for content in ("old", "new"):
            with open(a + ".tmp", "w") as f:
                f.write(content)
            os.rename(a + ".tmp", a)
            with open(b) as f:
                got = f.read()
        seen.append(got)
    assert seen == ["old" if stale else "new"] * 5


def test_a_batch_and_a_purge_outgrow_glusters_hundred_links(gluster, tmp_path):
    """GlusterFS allows a file 100 links and then says "no space left": the ids/ markers of a
    batch are links to one record, so the batch starts another record there, as on EMLINK."""
    path = os.path.join(gluster.mount("strict", "A"), gluster.new_dir("strict", os.path.basename(tmp_path)))
    spool = Spool(path)
    jobs = spool.enqueue_many([{"command": "true"} for _ in range(250)])
    assert spool.counts().pending == 250 and len(os.listdir(os.path.join(path, "ids"))) == 250
    for job in jobs:  # straight to done/: purge retags each marker (more links) before it deletes
        os.rename(os.path.join(path, "pending", next(n for n in os.listdir(os.path.join(path, "pending"))
                                                      if n.endswith(f"@{job.id}.json"))),
                  os.path.join(path, "done", f"{job.id}.json"))
    assert spool.purge("done") == 250
    assert os.listdir(os.path.join(path, "ids")) == []


@pytest.mark.parametrize("volume, ahead", [("stock", True), ("strict", False)])
def test_a_files_mtime_is_the_servers_clock_only_on_strict(gluster, tmp_path, volume, ahead):
    """Leases are judged by mtimes: they must come from the server, not from the writing host's
    clock. Host C's Gluster client runs an hour ahead; with features.ctime on (stock) the files
    it writes carry its clock, so it would judge every other host's heartbeat an hour old."""
    name = gluster.new_dir(volume, os.path.basename(tmp_path))
    try:
        c = os.path.join(gluster.mount(volume, "C", skew="+3600s"), name, "written-on-c")
        with open(c, "w") as f:
            f.write("x")
    finally:
        gluster.unmount(volume, "C")
    seen_on_a = os.stat(os.path.join(gluster.mount(volume, "A"), name, "written-on-c")).st_mtime
    assert abs(seen_on_a - time.time() - (3600 if ahead else 0)) < 60, seen_on_a - time.time()


def test_chaos_across_two_gluster_hosts_loses_nothing(gluster, tmp_path):
    """scripts/chaos.py with a supervisor on each of two hosts (two clients of strict Gluster):
    a worker on either is SIGKILLed every 300 ms; every job is done, none lost, none run more
    often than there were kills, and fsck finds the spool clean."""
    import json

    name = gluster.new_dir("strict", os.path.basename(tmp_path))
    a, b = (os.path.join(gluster.mount("strict", h), name) for h in ("A", "B"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, os.path.join(root, "scripts", "chaos.py"), "--spool", a, "--view", b,
                        "--jobs", "300", "--workers", "2", "--kill-interval", "0.3", "--duration", "5",
                        "--timeout", "180", "--seed", "4"], capture_output=True, text=True, timeout=300)
    assert r.stdout, f"chaos.py printed no summary (exit {r.returncode}): {r.stderr[-3000:]}"
    summary = json.loads(r.stdout)
    assert summary["ok"] and summary["kills"] >= 10, (summary, r.stderr[-3000:])


def test_another_hosts_rescues_never_crash_a_reader_here(gluster, tmp_path):
    """A directory another host removes (a worker's processing/<owner>/, fenced by a rescuer and
    emptied) is, to this host's Gluster client, ENOENT or ESTALE: both mean it is gone. status,
    list, show and fsck here read on through it while host B churns owner directories."""
    import errno
    import threading

    from spoolq import fsck

    name = gluster.new_dir("strict", os.path.basename(tmp_path))
    a, b = (os.path.join(gluster.mount("strict", h), name) for h in ("A", "B"))
    spool = Spool(a)
    view = spool.enqueue({"command": "true"})
    with open(os.path.join(a, "pending", os.listdir(os.path.join(a, "pending"))[0]), "rb") as f:
        job_bytes = f.read()
    owners = [f"hostb-{n}-0000000{n}" for n in range(4)]
    stop = threading.Event()

    def churn() -> None:  # what workers and their rescuers on host B do to processing/
        while not stop.is_set():
            for owner in owners:
                owned, fence = os.path.join(b, "processing", owner), os.path.join(b, "processing", "r~" + owner)
                try:
                    os.mkdir(owned)
                    with open(os.path.join(owned, view.id + ".json"), "wb") as f:
                        f.write(job_bytes)
                    os.rename(owned, fence)
                    os.unlink(os.path.join(fence, view.id + ".json"))
                    os.rmdir(fence)
                except OSError:
                    pass

    churner = threading.Thread(target=churn, daemon=True)
    churner.start()
    stale = rounds = 0
    errors: list[str] = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and (stale < 2 or rounds < 60):
            for call in (spool.counts, lambda: spool.list_jobs("processing"), lambda: spool.find(view.id),
                         lambda: spool.views.census(), lambda: fsck.check(spool, stale_after=3600)):
                try:
                    call()
                except Exception as e:  # noqa: BLE001 - any exception here is the defect
                    errors.append(f"{type(e).__name__}: {e}")
            for owner in owners:  # the rig's own proof that the race happened
                try:
                    os.listdir(os.path.join(a, "processing", "r~" + owner))
                except OSError as e:
                    stale += e.errno == errno.ESTALE
            rounds += 1
    finally:
        stop.set()
        churner.join()
    assert stale, "this rig never answered ESTALE: the test proved nothing"
    assert not errors, (rounds, stale, sorted(set(errors))[:5])


@pytest.mark.parametrize("volume", ["strict", "stock"])
def test_a_lock_held_through_a_client_that_dies_is_let_go_at_once(gluster, tmp_path, volume):
    """A spool lock taken through host D's client excludes host A; SIGKILL D's glusterfs client
    (the host dies, its connection to the brick closes) and the brick's locks translator lets go
    of D's flock: A takes the lock within a second, its holder still alive on a dead mount."""
    from spoolq.format import layout
    from spoolq.store import config
    from spoolq.format.errors import LockBusy

    name = gluster.new_dir(volume, os.path.basename(tmp_path))
    Spool(os.path.join(gluster.mount(volume, "A"), name))
    hold = ("import sys, time\nfrom spoolq.format import layout; from spoolq.store import config\n"
            "with config.locked(layout.Layout(sys.argv[1]), 'dlq', mode=0o600):\n"
            "    print('held', flush=True)\n    time.sleep(120)\n")
    d = subprocess.Popen([sys.executable, "-c", hold, os.path.join(gluster.mount(volume, "D"), name)],
                         env={**os.environ, "SPOOLQ_HOST": "D"}, stdout=subprocess.PIPE, text=True)
    try:
        assert d.stdout.readline() == "held\n"
        lay = layout.Layout(os.path.join(gluster.mount(volume, "A"), name))
        with pytest.raises(LockBusy, match=f"held by pid {d.pid} on host D"):
            with config.locked(lay, "dlq", mode=0o600, timeout=0.5):
                pass
        killed = time.monotonic()
        gluster.kill_client(volume, "D")
        with config.locked(lay, "dlq", mode=0o600, timeout=30):
            took = time.monotonic() - killed
        print(f"{volume}: host A took the lock {took:.3f}s after host D's client was killed")
        assert took < 1, f"{took:.2f}s"
    finally:
        d.kill()
        d.wait()
