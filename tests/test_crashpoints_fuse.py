"""Crash-point sweeps on a FUSE mount, where fsio.move_no_replace takes its fallbacks.

bindfs (FUSE) refuses renameat2(RENAME_NOREPLACE) with EINVAL, as NFS and GlusterFS do, so every
no-replace move there is done another way: a `shared_source` (pending/) by a look and a plain
rename, anything else by a hard link and then an unlink of the old name. On the test's tmp dir
(ext4, tmpfs) renameat2 works, so tests/test_crashpoints.py never reaches those paths: here a
worker on a bindfs view of each spool is SIGKILLed at its Nth call of one kind (strace's fault
injection, as there) while it claims and runs jobs, adopts drop-ins, and returns the drop-in a
dead adopter held; then a fresh worker (and its recovery) finishes, and the standards hold: every
job done exactly once (twice only when the kill cut its run), none lost, none quarantined.

Each sweep takes every kill point that is part of a fallback (found from a run without a kill:
the calls that follow a refused renameat2) and every STRIDE-th of the rest, each crash state once
(tests/crash_states.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Callable

import pytest

from conftest import dead_pid, required_tool, strace_path, wait_for
from spoolq import Spool, fsck
from spoolq.format import layout as L
from spoolq.store.ids import Reservations
from spoolq.system import fsio
from test_crashpoints import KINDS, LIMIT, WORKER, counted, job_that_records, killed_and_checked, runs, traced
from test_hosts import BINDFS_LOCKS, BINDFS_OPTIONS

pytestmark = [pytest.mark.sweep, pytest.mark.rig]  # a FUSE mount: one at a time, as the bindfs rig

STRIDE = 8  # of the kill points outside a fallback, every STRIDE-th is swept


@pytest.fixture
def view(tmp_path):
    """A directory on a bindfs view of one under tmp_path, where renameat2 NOREPLACE is refused."""
    exe = required_tool("bindfs", "SPOOLQ_REQUIRE_FUSE", "bindfs")
    if not os.path.exists("/dev/fuse"):
        if os.environ.get("SPOOLQ_REQUIRE_FUSE") == "1":
            pytest.fail("/dev/fuse is missing")
        pytest.skip("/dev/fuse is missing: FUSE is not available here")
    disk, seen = tmp_path / "disk", tmp_path / "view"
    disk.mkdir()
    seen.mkdir()
    proc = subprocess.Popen([exe, "-f", "--no-allow-other", *BINDFS_LOCKS, "-o", BINDFS_OPTIONS, str(disk), str(seen)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.path.ismount(seen) or proc.poll() is not None, 10, "bindfs to mount")
        assert proc.poll() is None, f"bindfs exited ({proc.returncode})"
        probe = seen / "probe"
        probe.touch()
        # The fallbacks are what this file sweeps: a mount where renameat2 works would sweep nothing new.
        assert fsio._rename_noreplace(str(probe), str(seen / "probed")) is None, \
            "renameat2 NOREPLACE works on this bindfs: the fallbacks swept here are never taken on it"
        probe.unlink()
        yield str(seen)
    finally:
        subprocess.run(["fusermount", "-u", str(seen)], capture_output=True)
        if os.path.ismount(seen):
            subprocess.run(["fusermount", "-uz", str(seen)], capture_output=True)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- the sweep ---------------------------------------------------------------------------------


def fallback_points(log_text: str, kind: str) -> tuple[set[int], int]:
    """From a run without a kill: the kill points (per thread, as strace counts) at a call of
    `kind` that a refused renameat2 led to (the plain rename, the link, the unlink after that
    link), and how many calls of `kind` the busiest thread made."""
    names = set(KINDS[kind].split(","))
    counts: dict[str, int] = {}
    after_refusal: dict[str, str] = {}  # tid -> the fallback's last step
    started: dict[str, str] = {}
    points = set()
    for line in log_text.splitlines():
        tid, _, call = line.partition(" ")
        call = call.lstrip()
        if call.endswith("<unfinished ...>"):
            started[tid] = call
            continue
        if call.startswith("<... "):
            call = started.pop(tid, "") + call.split("resumed>", 1)[-1]
        name = call[:call.find("(")] if "(" in call else ""
        if not name:
            continue
        step = after_refusal.pop(tid, None)
        if name in names:
            if step is not None:
                points.add(counts.get(tid, 0))
            counts[tid] = counts.get(tid, 0) + 1
        if name == "renameat2" and "EINVAL" in call:
            after_refusal[tid] = "refused"
        elif name in ("link", "linkat") and step == "refused" and call.rstrip().endswith("= 0"):
            after_refusal[tid] = "linked"  # its unlink is next
    return points, max(counts.values(), default=0)


def sweep(tmp_path, view: str, kind: str, setup: Callable[[str], object],
          check: Callable[[str, object, bool], None]) -> int:
    """A fresh spool on the view from `setup` for each kill point, a worker there killed at it,
    then `check(spool, what setup returned, killed)` once for each crash state. Ends at the
    first kill point the worker survives (it made fewer calls), which is always checked, and
    returns it."""
    strace = strace_path()
    dry = os.path.join(view, f"{kind}-dry")
    setup(dry)
    log = str(tmp_path / f"{kind}-dry.strace")
    r = traced(strace, kind, log, [*WORKER, dry], None)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    with open(log, errors="replace") as f:
        must, total = fallback_points(f.read(), kind)
    assert must, f"no {kind} call of a fallback: the sweep would prove nothing"
    points = sorted(must | set(range(0, total, STRIDE)))
    # Then on from the dry run's count until the worker survives (a run may make a few more calls).
    points.extend(range(total, LIMIT))
    checked: set[str] = set()
    for n in points:
        root = os.path.join(view, f"{kind}-{n}")
        made = setup(root)
        log = str(tmp_path / f"{kind}-{n}.strace")
        killed = killed_and_checked(traced(strace, kind, log, [*WORKER, root], n), log, root, made, check,
                                    checked, f"{kind} sweep on FUSE, killed after call {n}")
        if not killed:
            return n
    raise AssertionError(f"the worker still made {kind} calls after {LIMIT}")


def _each_ran_once_and_none_quarantined(root: str, tags: list[str], killed: bool) -> None:
    for _ in range(3):  # a fresh worker recovers what the killed one held, then runs what is ready
        r = subprocess.run([*WORKER, root], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        # A job its recovery put back is pending, due at once: a burst leaves it unless it was
        # due when its loop began (burst.py: it waits out only the retries of what it ran).
        if not counted(root).get("pending"):
            break
    ran = runs(root)
    for tag in tags:
        assert 1 <= ran.count(tag) <= (2 if killed else 1), (tag, ran)
    assert counted(root) == {"done": len(tags)}, counted(root)  # none lost, none quarantined
    fsck.check(Spool(root, create=False), repair=True)
    assert fsck.check(Spool(root, create=False)) == []


# ---- a worker claiming and running jobs --------------------------------------------------------


def _enqueued(root: str) -> list[str]:
    spool = Spool(root)
    spool.set_config("backoff_base", 0)  # a crashed attempt is due again at once
    tags = ["q1", "q2"]
    for tag in tags:
        spool.enqueue({"id": tag, **job_that_records(root, tag)})
    return tags


def test_a_worker_claiming_on_fuse_killed_in_its_fallbacks_loses_nothing(tmp_path, view):
    sweep(tmp_path, view, "rename", _enqueued, _each_ran_once_and_none_quarantined)


# ---- a worker adopting drop-ins ----------------------------------------------------------------


def _dropped(root: str) -> list[str]:
    """Drop-ins as a writer leaves them (written under a dot name, renamed into pending/): one
    names its id inside, the other takes its id from its name."""
    spool = Spool(root)
    spool.set_config("backoff_base", 0)
    for tag, name in DROPPED.items():
        spec = job_that_records(root, tag)
        if tag == "d1":
            spec["id"] = "named"
        with open(os.path.join(spool.layout.pending, "." + name), "w") as f:
            json.dump(spec, f)
        os.rename(os.path.join(spool.layout.pending, "." + name), os.path.join(spool.layout.pending, name))
    return list(DROPPED)


DROPPED = {"d1": "a.json", "d2": "d2.json"}  # tag -> the drop-in's name


def test_a_worker_adopting_drop_ins_on_fuse_killed_in_its_fallbacks_loses_none(tmp_path, view):
    sweep(tmp_path, view, "rename", _dropped, _each_ran_once_and_none_quarantined)


# ---- recovery returning the drop-ins a dead adopter held ----------------------------------------


def _held_by_a_dead_adopter(root: str) -> list[str]:
    """A worker died adopting drop-ins: each is in its processing/<owner>/ as ~<name>, one with
    its id reserved in ids/ under that owner; and a new drop-in took that one's name in pending/
    meanwhile (so it goes back under another name)."""
    tags = _dropped(root)
    spool = Spool(root, create=False)
    owner = spool.owners.register("worker")
    for name in DROPPED.values():
        os.rename(os.path.join(spool.layout.pending, name),
                  os.path.join(spool.layout.owned(owner), L.ADOPT_PREFIX + name))
    with Reservations(spool.store, owner) as ids:
        assert ids.reserve("named")
    with open(os.path.join(spool.layout.pending, DROPPED["d1"]), "w") as f:
        json.dump({"id": "newer", **job_that_records(root, "d3")}, f)
    record = json.loads(open(spool.layout.worker_file(owner)).read())
    record.update(pid=dead_pid(), start=None)  # its worker is gone
    with open(spool.layout.worker_file(owner), "w") as f:
        json.dump(record, f)
    return [*tags, "d3"]


@pytest.mark.parametrize("kind", ["link", "unlink"])
def test_recovery_returning_a_dead_adopters_drop_ins_on_fuse_killed_in_its_fallback_quarantines_none(
        tmp_path, view, kind):
    """The return is a link into pending/ and then an unlink here: killed between the two, the
    file has both names, and a second return must not leave it with two links in pending/ (no
    adopter takes such a file; it was quarantined after drop_grace)."""
    sweep(tmp_path, view, kind, _held_by_a_dead_adopter, _each_ran_once_and_none_quarantined)
