"""Crash-point sweeps: every mutating command is SIGKILLed at its Nth call of one kind of mutating
system call, for every N and one kind at a time, then the spool is put to use again and every
invariant checked: no acknowledged job lost, no job run twice but for the one crash, nothing left
that blocks a later command, fsck clean after --repair. Kill points that leave the same spool
(tests/crash_states.py: no file changed between them) are put to use once.

The kill comes from strace's fault injection (`-e inject=SET:signal=SIGKILL:when=N+1`): the
process dies on entering its (N+1)th call of that kind, after its Nth completed and everything
in between. strace counts each process (each thread) on its own, so a command that forks is
swept through its one process that does the work. These sweeps take a few minutes: `-m "not
sweep"` skips them while developing; CI always runs them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from typing import Callable

import pytest

import crash_states
from conftest import SPOOLQ, dead_pid, strace_path
from spoolq import Spool, fsck
from spoolq.format import layout as L
from spoolq.store.ids import Reservations

pytestmark = pytest.mark.sweep

KINDS = {
    "rename": "rename,renameat,renameat2",
    "unlink": "unlink,unlinkat",
    "link": "link,linkat",
    "symlink": "symlink,symlinkat",
    "write": "write,pwrite64,writev",
    "fsync": "fsync,fdatasync",
    "mkdir": "mkdir,mkdirat",
    "utime": "utimensat",
    "chmod": "chmod,fchmod,fchmodat",
}
LIMIT = 400  # a sweep that needs more calls than this has lost its way

# One worker process, no supervisor: strace counts per process, and a supervisor's own calls
# would kill it (and so its worker) before the worker's Nth.
WORKER = [sys.executable, "-c",
          "import sys; from spoolq.spool import Spool; from spoolq.running.worker import Worker; "
          "sys.exit(Worker(Spool(sys.argv[1]), burst=True).run())"]


def sweep(tmp_path, kind: str, setup: Callable[[str], object], argv: Callable[[str], list[str]],
          check: Callable[[str, object, bool], None]) -> int:
    """For N = 0, 1, ...: a fresh spool from `setup`, the command killed after N calls of `kind`,
    then `check(spool, what setup returned, killed)`, once for each crash state (tests/
    crash_states.py: the kill points after a mkdir that found its directory there, or a write to a
    pipe, leave the spool as the kill point before them did). Ends with the first N the command
    survives (it made fewer calls than that), which is always checked. Returns how many kill points
    were swept."""
    strace = strace_path()
    checked: set[str] = set()
    for n in range(LIMIT):
        root = str(tmp_path / f"{kind}-{n}")
        made = setup(root)
        log = root + ".strace"
        killed = killed_and_checked(traced(strace, kind, log, argv(root), n), log, root, made, check, checked,
                                    f"{kind} sweep, killed after call {n}")
        shutil.rmtree(root, ignore_errors=True)
        os.unlink(log)
        if not killed:
            return n
    raise AssertionError(f"the command still made {kind} calls after {LIMIT}")


def traced(strace: str, kind: str, log: str, argv: list[str], kill_at: int | None) -> subprocess.CompletedProcess:
    """`argv` under strace, which logs to `log` what it changed (and every call of `kind`: strace
    kills only what it traces) and, unless `kill_at` is None, kills it after that many of them."""
    inject = [] if kill_at is None else ["-e", f"inject={KINDS[kind]}:signal=SIGKILL:when={kill_at + 1}"]
    return subprocess.run([strace, "-f", "-qq", "-y", "-s", str(crash_states.WHOLE), "-o", log,
                           "-e", f"trace={crash_states.STATE_CALLS},{KINDS[kind]}", *inject, *argv],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)


def killed_and_checked(r: subprocess.CompletedProcess, log: str, root: str, made: object,
                       check: Callable[[str, object, bool], None], checked: set[str], where: str) -> bool:
    """Whether the traced run `r` was killed; `check` is run on its spool unless a run before it
    left the same crash state (`checked`, which it adds to), or it was not killed (always checked)."""
    killed = r.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL)
    assert killed or b"Traceback" not in r.stderr, r.stderr.decode(errors="replace")
    with open(log, errors="replace") as f:
        state = crash_states.crash_state(f.read(), root)
    if not killed or state not in checked:
        checked.add(state)
        try:
            check(root, made, killed)
        except AssertionError as e:
            raise AssertionError(f"{where}: {e}") from None
    return killed


def cli(root: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SPOOLQ, "--spool", root, *args], capture_output=True, text=True, timeout=120)


def burst(root: str) -> None:
    """The spool put to use again: a worker recovers what the killed one held and runs what is left."""
    r = cli(root, "worker", "start", "--burst")
    assert r.returncode == 0, r.stderr


def repaired_clean(root: str) -> None:
    cli(root, "fsck", "--repair")
    problems = fsck.check(Spool(root, create=False))
    assert problems == [], problems


def runs(root: str) -> list[str]:
    path = os.path.join(os.path.dirname(root), os.path.basename(root) + ".runs")
    return open(path).read().split() if os.path.exists(path) else []


def job_that_records(root: str, tag: str) -> dict:
    return {"command": f"echo {tag} >> {root}.runs", "max_retries": 5}


def counted(root: str) -> dict[str, int]:
    c = Spool(root, create=False).counts()
    return {k: v for k, v in c.to_dict().items() if v and k != "workers"}


# ---- a worker adopting drop-ins ----------------------------------------------------------------


def _dropped(root: str) -> list[str]:
    spool = Spool(root)
    spool.set_config("backoff_base", 0)  # a crashed attempt is due again at once
    tags = ["a", "b", "c"]
    for i, tag in enumerate(tags):
        spec = job_that_records(root, tag)
        if i == 0:
            spec["id"] = "named"  # an id inside; the others get theirs from the name, or a fresh one
        name = "has-no-id-!.json" if i == 2 else f"{tag}.json"
        with open(os.path.join(spool.layout.pending, "." + name), "w") as f:
            json.dump(spec, f)
        os.rename(os.path.join(spool.layout.pending, "." + name), os.path.join(spool.layout.pending, name))
    return tags


def _every_dropped_job_ran(root: str, tags: list[str], killed: bool) -> None:
    burst(root)
    ran = runs(root)
    for tag in tags:
        assert 1 <= ran.count(tag) <= (2 if killed else 1), (tag, ran)
    assert counted(root) == {"done": 3}, counted(root)  # none lost, none quarantined
    repaired_clean(root)


def _dropped_with_a_bad_file_and_an_abandoned_id(root: str) -> list[str]:
    """Besides good drop-ins: one that is garbage (quarantined), and one whose id an enqueue
    killed long ago left reserved (the worker takes that marker over)."""
    tags = _dropped(root)
    spool = Spool(root, create=False)
    with open(os.path.join(spool.layout.pending, "garbage.json"), "wb") as f:
        f.write(b"\x00 not json")
    os.utime(os.path.join(spool.layout.pending, "garbage.json"), (0, 0))  # past drop_grace
    with Reservations(spool.store) as ids:
        ids.creator = ids.creator._replace(pid=dead_pid(), start=None)
        assert ids.reserve("orphaned")
    with open(os.path.join(spool.layout.pending, "orphaned.json"), "w") as f:
        json.dump(job_that_records(root, "orphaned"), f)
    return [*tags, "orphaned"]


def _every_good_job_ran_and_the_bad_one_was_kept_once(root: str, tags: list[str], killed: bool) -> None:
    burst(root)
    ran = runs(root)
    for tag in tags:
        assert 1 <= ran.count(tag) <= (2 if killed else 1), (tag, ran)
    assert counted(root) == {"done": 4, "quarantined": 1}, counted(root)
    (quarantined,) = [n for n in os.listdir(os.path.join(root, "dead")) if n.startswith("+")]
    assert open(os.path.join(root, "dead", quarantined), "rb").read() == b"\x00 not json"
    repaired_clean(root)


@pytest.mark.parametrize("kind", ["rename", "unlink", "link", "write"])
def test_a_worker_killed_while_quarantining_or_taking_over_an_id_loses_nothing(tmp_path, kind):
    sweep(tmp_path, kind, _dropped_with_a_bad_file_and_an_abandoned_id, lambda root: [*WORKER, root],
          _every_good_job_ran_and_the_bad_one_was_kept_once)


@pytest.mark.parametrize("kind", ["rename", "unlink", "link", "symlink", "write", "fsync", "utime"])
def test_a_worker_killed_while_adopting_drop_ins_loses_none(tmp_path, kind):
    sweep(tmp_path, kind, _dropped, lambda root: [*WORKER, root], _every_dropped_job_ran)


def _delivered(root: str) -> list[str]:
    """Jobs in the Maildir as a deliverer leaves them (written in tmp/, then moved into new/),
    under names without .json; one names its id inside."""
    spool = Spool(root)
    spool.set_config("backoff_base", 0)
    tags = ["m1", "m2", "m3"]
    for i, tag in enumerate(tags):
        spec = job_that_records(root, tag)
        if i == 0:
            spec["id"] = "mailed"
        name = f"1765100000.M{i}P42.host"
        with open(os.path.join(spool.layout.dir("maildir/tmp"), name), "w") as f:
            json.dump(spec, f)
        os.rename(os.path.join(spool.layout.dir("maildir/tmp"), name), os.path.join(spool.layout.dir("maildir/new"), name))
    return tags


@pytest.mark.parametrize("kind", ["rename", "fsync", "mkdir"])
def test_a_worker_killed_while_collecting_maildir_deliveries_loses_none(tmp_path, kind):
    sweep(tmp_path, kind, _delivered, lambda root: [*WORKER, root], _every_dropped_job_ran)


# ---- a worker recording failed attempts ---------------------------------------------------------


def _failing_once(root: str) -> list[str]:
    """Jobs whose first attempt fails: their worker writes each one's next state (.next.), takes
    the job file (.taken.) and moves the new state out (transitions._replace_then_move)."""
    spool = Spool(root)
    spool.set_config("backoff_base", 0)
    tags = ["f1", "f2", "f3"]
    for tag in tags:
        spool.enqueue({"id": tag, "command": f"echo {tag} >> {root}.runs; test -e {root}.{tag} || "
                                             f"{{ touch {root}.{tag}; exit 1; }}", "max_retries": 5})
    return tags


def _every_failed_job_retried_once(root: str, tags: list[str], killed: bool) -> None:
    burst(root)
    ran = runs(root)
    assert counted(root) == {"done": 3}, counted(root)
    for tag in tags:
        # Twice (the failure, the success); a third time only if the kill came between a run
        # and its record.
        assert ran.count(tag) in ((2, 3) if killed else (2,)), (tag, ran)
        attempts = Spool(root, create=False).find(tag).to_dict()["attempts"]
        assert attempts == ran.count(tag) or (killed and attempts == ran.count(tag) + 1), (tag, attempts, ran)
    repaired_clean(root)


@pytest.mark.parametrize("kind", ["rename", "unlink", "write", "fsync"])
def test_a_worker_killed_while_recording_a_failure_loses_nothing(tmp_path, kind):
    sweep(tmp_path, kind, _failing_once, lambda root: [*WORKER, root], _every_failed_job_retried_once)


# A worker of three slots: the jobs run at once, each recorded by its slot's thread, and one
# `.pgroup` line a slot (attempt.py); a kill anywhere costs each running job one attempt at most.
SLOTTED_WORKER = [*WORKER[:2], WORKER[2].replace("burst=True", "burst=True, slots=3")]


@pytest.mark.parametrize("kind", ["rename", "unlink", "write", "fsync"])
def test_a_worker_of_many_slots_killed_at_any_point_loses_nothing(tmp_path, kind):
    swept = sweep(tmp_path, kind, _failing_once, lambda root: [*SLOTTED_WORKER, root], _every_failed_job_retried_once)
    assert swept > 0, swept  # the worker made calls of this kind: kill points were reached


# ---- recovery of a dead worker's jobs ----------------------------------------------------------


def _held_by_a_dead_worker(root: str) -> list[str]:
    spool = Spool(root)
    spool.set_config("backoff_base", 0)
    tags = ["r1", "r2", "r3"]
    for tag in tags:
        spool.enqueue({"id": tag, **job_that_records(root, tag)})
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = spool.owners.register("worker")
        for name in sorted(os.listdir(spool.layout.pending)):
            assert spool.transitions.claim(name, owner) is not None
    finally:
        proc.kill()
        proc.wait()
    record = json.loads(open(spool.layout.worker_file(owner)).read())
    record.update(pid=proc.pid, start=None)  # its worker is gone
    with open(spool.layout.worker_file(owner), "w") as f:
        json.dump(record, f)
    return tags


def _every_held_job_ran_once(root: str, tags: list[str], killed: bool) -> None:
    burst(root)
    ran = runs(root)
    assert sorted(ran) == sorted(tags), ran  # the dead worker's attempts never ran; each job once
    assert counted(root) == {"done": 3}, counted(root)
    for tag in tags:
        attempts = Spool(root, create=False).find(tag).to_dict()["attempts"]
        assert attempts in (2, 3) if killed else attempts == 2, (tag, attempts)
    repaired_clean(root)


@pytest.mark.parametrize("kind", ["rename", "unlink", "write", "fsync"])
def test_recovery_killed_at_any_point_loses_nothing(tmp_path, kind):
    sweep(tmp_path, kind, _held_by_a_dead_worker, lambda root: [*WORKER, root], _every_held_job_ran_once)


# ---- enqueue --batch ---------------------------------------------------------------------------


def _a_batch(root: str) -> str:
    Spool(root)
    path = root + ".jsonl"
    with open(path, "w") as f:
        for i in range(5):
            f.write(json.dumps({"id": f"b{i}", **job_that_records(root, f"b{i}")}) + "\n")
    return path


def _batch_all_or_nothing_and_never_blocked(root: str, batch: str, killed: bool) -> None:
    expected = [f"b{i}" for i in range(5)]
    # Killed before the renames: none; after: all. Killed between two renames, the batch's plan
    # is left, and the repair (as a worker's recovery sweep would) publishes the rest.
    repaired_clean(root)
    published = sorted(e.split("@")[1][:-5] for e in Spool(root, create=False).views.pending_entries())
    assert published in ([], expected), published
    if published != expected:  # what the killed batch reserved and never published is free again
        for job_id in expected[len(published):]:
            assert not os.path.exists(L.Layout(root).id_marker(job_id)), job_id
        rest = "".join(json.dumps({"id": j, "command": "true"}) + "\n" for j in expected[len(published):])
        r = subprocess.run([*SPOOLQ, "--spool", root, "enqueue", "--batch", "-"], input=rest, text=True,
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("kind", ["rename", "link", "write", "fsync", "unlink"])
def test_a_batch_killed_at_any_point_blocks_nothing(tmp_path, kind):
    sweep(tmp_path, kind, _a_batch, lambda root: [*SPOOLQ, "--spool", root, "enqueue", "--batch", root + ".jsonl"],
          _batch_all_or_nothing_and_never_blocked)


# ---- purge, dlq retry, fsck --repair -----------------------------------------------------------


def _finished(root: str) -> list[str]:
    spool = Spool(root)
    spool.set_config("max_retries", 0)
    ids = [f"f{i}" for i in range(4)]
    owner = spool.owners.register("worker")
    for i, job_id in enumerate(ids):
        job = spool.enqueue({"id": job_id, "command": "true", "max_retries": 0})
        claimed = spool.transitions.claim(L.pending_name_of(job), owner)
        spool.transitions.finish(claimed, ok=i % 2 == 0, exit_code=0 if i % 2 == 0 else 1, error=None)
        with open(spool.layout.output(job_id), "w") as f:
            f.write("output\n")
    spool.owners.unregister(owner)
    return ids


def _purged_whole_or_not_at_all(root: str, ids: list[str], killed: bool) -> None:
    lay = L.Layout(root)
    repaired_clean(root)
    for job_id in ids:
        present = [os.path.exists(os.path.join(lay.dir(s), f"{job_id}.json")) for s in ("done", "dead")]
        if not any(present):  # purged: its id is free again
            assert not os.path.exists(lay.id_marker(job_id)), job_id
    assert cli(root, "purge", "--state", "done").returncode == 0  # nothing left blocks it


@pytest.mark.parametrize("kind", ["unlink", "write", "link"])
def test_purge_killed_at_any_point_leaves_nothing_half_done(tmp_path, kind):
    sweep(tmp_path, kind, _finished, lambda root: [*SPOOLQ, "--spool", root, "purge", "--state", "done"],
          _purged_whole_or_not_at_all)


def _retried_or_still_dead(root: str, ids: list[str], killed: bool) -> None:
    spool = Spool(root, create=False)
    dead = ids[1::2]
    states = {job_id: spool.find(job_id).state for job_id in dead}
    assert set(states.values()) <= {"dead", "pending"}, states  # one place each, never lost
    repaired_clean(root)
    r = cli(root, "dlq", "retry", "--all")  # what the killed retry did not get to
    assert r.returncode == 0, r.stderr
    assert {job_id: Spool(root, create=False).find(job_id).state for job_id in dead} == dict.fromkeys(dead, "pending")
    assert all(Spool(root, create=False).find(j).job.attempts == 0 for j in dead)


@pytest.mark.parametrize("kind", ["rename", "write", "fsync", "unlink"])
def test_dlq_retry_killed_at_any_point_loses_nothing(tmp_path, kind):
    sweep(tmp_path, kind, _finished, lambda root: [*SPOOLQ, "--spool", root, "dlq", "retry", "--all"],
          _retried_or_still_dead)


def _broken(root: str) -> list[str]:
    tags = _held_by_a_dead_worker(root)
    lay = L.Layout(root)
    with open(lay.id_marker("orphan"), "w"):
        pass
    os.utime(lay.id_marker("orphan"), (0, 0))
    with open(os.path.join(lay.tmp, ".1.000000000000.tmp"), "w"):
        pass
    os.utime(os.path.join(lay.tmp, ".1.000000000000.tmp"), (0, 0))
    return tags


def _repair_finishes_on_the_next_run(root: str, tags: list[str], killed: bool) -> None:
    repaired_clean(root)
    burst(root)
    assert sorted(runs(root)) == sorted(tags) and counted(root) == {"done": 3}, (runs(root), counted(root))


@pytest.mark.parametrize("kind", ["rename", "unlink", "write", "fsync"])
def test_fsck_repair_killed_at_any_point_finishes_on_the_next_run(tmp_path, kind):
    sweep(tmp_path, kind, _broken, lambda root: [*SPOOLQ, "--spool", root, "fsck", "--repair"],
          _repair_finishes_on_the_next_run)


def _a_cut_batch(root: str) -> list[str]:
    """A batch of five whose enqueuer was killed after publishing two: its plan is left."""
    batch = _a_batch(root)
    r = subprocess.run([strace_path(), "-f", "-qq", "-o", "/dev/null", "-e", f"trace={KINDS['rename']}",
                        "-e", f"inject={KINDS['rename']}:signal=SIGKILL:when=3",
                        *SPOOLQ, "--spool", root, "enqueue", "--batch", batch], capture_output=True, timeout=60)
    assert r.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), r.stderr
    assert len(os.listdir(os.path.join(root, "pending"))) == 2
    return [f"b{i}" for i in range(5)]


def _the_batch_is_whole_after_the_next_repair(root: str, tags: list[str], killed: bool) -> None:
    repaired_clean(root)
    published = sorted(e.split("@")[1][:-5] for e in os.listdir(os.path.join(root, "pending")))
    assert published == tags, published


@pytest.mark.parametrize("kind", ["rename", "unlink", "fsync"])
def test_the_roll_forward_of_a_cut_batch_killed_at_any_point_finishes_on_the_next_repair(tmp_path, kind):
    sweep(tmp_path, kind, _a_cut_batch, lambda root: [*SPOOLQ, "--spool", root, "fsck", "--repair"],
          _the_batch_is_whole_after_the_next_repair)


# ---- config set, worker stop -------------------------------------------------------------------


def _a_spool(root: str) -> None:
    Spool(root).set_config("max_retries", 4)


def _setting_whole_and_never_blocked(root: str, _: None, killed: bool) -> None:
    assert Spool(root, create=False).config.max_retries in (4, 7)  # the old value or the new one
    repaired_clean(root)
    for command in (("config", "set", "max_retries", "5"), ("worker", "stop")):
        assert cli(root, *command).returncode == 0  # no lock or file left that blocks the next


@pytest.mark.parametrize("kind", ["rename", "write", "symlink", "unlink", "fsync"])
@pytest.mark.parametrize("command", [("config", "set", "max_retries", "7"), ("worker", "stop")])
def test_config_set_and_worker_stop_killed_at_any_point_block_nothing(tmp_path, kind, command):
    sweep(tmp_path, kind, _a_spool, lambda root: [*SPOOLQ, "--spool", root, *command], _setting_whole_and_never_blocked)


def _a_big_batch(root: str) -> str:
    Spool(root)
    path = root + ".jsonl"
    with open(path, "w") as f:
        for i in range(40):  # enough for the fsyncs to run many at once (fsio.FSYNC_THREADS)
            f.write(json.dumps({"id": f"b{i}", "command": "true"}) + "\n")
    return path


def _big_batch_whole_or_nothing(root: str, batch: str, killed: bool) -> None:
    published = os.listdir(os.path.join(root, "pending"))
    assert len(published) in (0, 40), len(published)  # every fsync comes before the first rename
    repaired_clean(root)


def test_a_big_batch_killed_in_its_parallel_fsyncs_publishes_nothing(tmp_path):
    """Each fsync thread is counted on its own by strace: every N kills whichever thread reaches
    its Nth fsync first, the process with it."""
    sweep(tmp_path, "fsync", _a_big_batch, lambda root: [*SPOOLQ, "--spool", root, "enqueue", "--batch", root + ".jsonl"],
          _big_batch_whole_or_nothing)


def test_a_batch_fsyncs_every_file_and_never_calls_syncfs(tmp_path):
    """Durability rests on fsync: syncfs persists nothing on FUSE file systems (GlusterFS, LazyFS)."""
    strace = strace_path()
    root = str(tmp_path / "s")
    batch = _a_big_batch(root)
    log = tmp_path / "trace"
    r = subprocess.run([strace, "-f", "-qq", "-o", str(log), "-e", "trace=fsync,fdatasync,syncfs,sync",
                        *SPOOLQ, "--spool", root, "enqueue", "--batch", batch], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    calls = [line.split("(")[0].split()[-1] for line in log.read_text().splitlines() if "(" in line]
    assert "syncfs" not in calls and "sync" not in calls, calls
    assert calls.count("fsync") >= 40 + 1 + 2, calls  # each job, the markers' record, pending/ and ids/


def test_a_batch_cut_between_renames_is_finished_by_a_workers_recovery_sweep(tmp_path):
    """Not only fsck: the sweep every worker makes publishes the rest of a cut batch, and runs it."""
    root = str(tmp_path / "cut")
    batch = _a_batch(root)
    r = subprocess.run([strace_path(), "-f", "-qq", "-o", "/dev/null", "-e", f"trace={KINDS['rename']}",
                        "-e", f"inject={KINDS['rename']}:signal=SIGKILL:when=3",
                        *SPOOLQ, "--spool", root, "enqueue", "--batch", batch], capture_output=True, timeout=60)
    assert r.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), r.stderr
    assert len(os.listdir(os.path.join(root, "pending"))) == 2  # cut after two of five
    burst(root)
    assert sorted(runs(root)) == [f"b{i}" for i in range(5)] and counted(root) == {"done": 5}, counted(root)
    # What is left is what any killed enqueue leaves, its id record in tmp/ (fsck's to remove).
    assert [p.kind for p in fsck.check(Spool(root, create=False))] == ["stale-temp"]
    repaired_clean(root)


def test_a_plan_cut_while_it_was_written_publishes_nothing(tmp_path):
    """A power cut before the plan's fsync can leave it short: it names no job then (no rename
    was made before it was whole), and what the batch staged is left for fsck as stale temps."""
    root = str(tmp_path / "short")
    spool = Spool(root)
    jobs = [spool.make_job({"id": f"s{i}", "command": "true"}) for i in range(3)]
    creator = L.Creator(L.host_name(), dead_pid(), "1")
    lines = []
    for job in jobs:
        tmp = L.tmp_name(creator)
        with open(os.path.join(spool.layout.tmp, tmp), "wb") as f:
            f.write(job.to_json())
        with open(spool.layout.id_marker(job.id), "w") as f:  # the marker names the batch's creator
            json.dump({"host": creator.host, "pid": creator.pid, "start": creator.start}, f)
        lines.append(f"{tmp} {L.pending_name_of(job)}\n")
    plan = os.path.join(spool.layout.tmp, L.tmp_name(creator, "plan"))
    with open(plan, "w") as f:
        f.write("".join(lines[:2]))  # cut: the third line and the "end 3" trailer never reached the disk
    assert spool.publisher.finish_batches(lambda c: "gone") == 0
    assert os.listdir(spool.layout.pending) == [] and not os.path.exists(plan)
    whole = os.path.join(spool.layout.tmp, L.tmp_name(creator, "plan"))
    with open(whole, "w") as f:
        f.write("".join(lines) + "end 3\n")
    assert spool.publisher.finish_batches(lambda c: "gone") == 3  # a whole plan: all of it
    assert sorted(os.listdir(spool.layout.pending)) == sorted(L.pending_name_of(j) for j in jobs)


# ---- cancel --------------------------------------------------------------------------------------


def _to_cancel(root: str) -> list[str]:
    spool = Spool(root)
    tags = ["c1", "c2", "c3"]
    for tag in tags:
        spool.enqueue({"id": tag, **job_that_records(root, tag)})
    spool.enqueue({"id": "later", **job_that_records(root, "later"), "delay": 3600})
    return tags + ["later"]


def _cancelled_whole_or_not_at_all(root: str, ids: list[str], killed: bool) -> None:
    """Each job is cancelled (dead, never run) or not (it runs once); nothing half-way is left."""
    burst(root)  # recovery finishes or voids a cancel cut half-way, then what was not cancelled runs
    spool = Spool(root, create=False)
    for job_id in ids:
        view = spool.find(job_id)
        cancelled = view.state == "dead"
        if cancelled:
            assert view.job.last_error == "cancelled" and job_id not in runs(root), job_id
        elif job_id != "later":
            assert view.state == "done" and runs(root).count(job_id) == 1, (job_id, view.state)
        else:
            assert view.state == "scheduled", view.state
        if not killed:
            assert cancelled, job_id
    repaired_clean(root)


@pytest.mark.parametrize("kind", ["rename", "write", "fsync", "unlink", "mkdir"])
def test_cancel_killed_at_any_point_cancels_each_job_whole_or_not_at_all(tmp_path, kind):
    sweep(tmp_path, kind, _to_cancel, lambda root: [*SPOOLQ, "--spool", root, "cancel", "c1", "c2", "c3", "later"],
          _cancelled_whole_or_not_at_all)


# ---- requeue, purge by id ----------------------------------------------------------------------


def _requeued_or_still_finished(root: str, ids: list[str], killed: bool) -> None:
    spool = Spool(root, create=False)
    states = {job_id: spool.find(job_id).state for job_id in ids}  # one place each, never lost
    assert all(states[j] in ("pending", "done" if i % 2 == 0 else "dead") for i, j in enumerate(ids)), states
    repaired_clean(root)
    left = [j for j in ids if states[j] != "pending"]
    if left:
        r = cli(root, "requeue", *left)  # what the killed requeue did not get to
        assert r.returncode == 0, r.stderr
    assert {j: Spool(root, create=False).find(j).state for j in ids} == dict.fromkeys(ids, "pending")


@pytest.mark.parametrize("kind", ["rename", "write", "fsync", "unlink"])
def test_requeue_killed_at_any_point_loses_nothing(tmp_path, kind):
    sweep(tmp_path, kind, _finished, lambda root: [*SPOOLQ, "--spool", root, "requeue", "f0", "f1", "f2", "f3"],
          _requeued_or_still_finished)


@pytest.mark.parametrize("kind", ["unlink", "write", "link"])
def test_purge_by_id_killed_at_any_point_leaves_nothing_half_done(tmp_path, kind):
    sweep(tmp_path, kind, _finished, lambda root: [*SPOOLQ, "--spool", root, "purge", "f0", "f1", "f2", "f3"],
          _purged_whole_or_not_at_all)


# ---- a worker with a concurrency slot -----------------------------------------------------------


def _limited(root: str) -> list[str]:
    spool = Spool(root)
    spool.set_config("backoff_base", 0)
    spool.slots.set_limit("enc", 1)
    tags = ["s1", "s2", "s3"]
    for tag in tags:
        spool.enqueue({"id": tag, "queue": "enc", **job_that_records(root, tag)})
    return tags


def _every_limited_job_ran_and_no_slot_leaked(root: str, tags: list[str], killed: bool) -> None:
    burst(root)  # the next worker's recovery gives back the slot the killed one held
    spool = Spool(root, create=False)
    assert {t: spool.find(t).state for t in tags} == dict.fromkeys(tags, "done")
    assert all(1 <= runs(root).count(t) <= (2 if killed else 1) for t in tags), runs(root)
    assert spool.slots.in_use() == {} and sorted(os.listdir(spool.layout.dir("slots"))) == ["enc%0"]
    repaired_clean(root)


@pytest.mark.parametrize("kind", ["rename", "unlink"])
def test_a_worker_killed_holding_a_slot_leaks_none(tmp_path, kind):
    sweep(tmp_path, kind, _limited, lambda root: [*WORKER, root], _every_limited_job_ran_and_no_slot_leaked)


# ---- dependencies ----------------------------------------------------------------------------------


def _a_dependency(root: str) -> str:
    spool = Spool(root)
    spool.enqueue({"id": "a", **job_that_records(root, "a")})
    return "pending"


def _a_done_dependency(root: str) -> str:
    """a has run: the enqueue makes b's edge under the purge lock, publishes b to waiting/, then
    judges it once more and releases it (its edges removed)."""
    _a_dependency(root)
    burst(root)
    return "done"


def _waiter_whole_or_never_enqueued(root: str, dep_state: str, killed: bool) -> None:
    """b is waiting with a live edge, released, or absent with its id free: never waiting unwoken."""
    spool = Spool(root, create=False)
    try:
        state = spool.find("b").state
    except Exception:
        state = None  # never acknowledged: nothing of it may block a later enqueue
    assert state in (None, "waiting", "pending"), state
    if not killed:
        assert state == ("waiting" if dep_state == "pending" else "pending"), state
    if state == "waiting":
        assert os.path.lexists(os.path.join(root, "after", "a", "b")), "b waits with no edge"
    repaired_clean(root)
    burst(root)
    if state is None:
        r = cli(root, "enqueue", "--id", "b", "--after", "a", f"echo b >> {root}.runs")
        assert r.returncode == 0, r.stderr
        burst(root)
    assert runs(root) == ["a", "b"], runs(root)
    assert os.listdir(os.path.join(root, "after")) == [] and os.listdir(os.path.join(root, "waiting")) == []


@pytest.mark.parametrize("kind", ["rename", "write", "fsync", "mkdir", "link", "unlink"])
@pytest.mark.parametrize("setup", [_a_dependency, _a_done_dependency])
def test_enqueue_after_killed_at_any_point_is_whole_or_never_was(tmp_path, kind, setup):
    sweep(tmp_path, kind, setup, lambda root: [*SPOOLQ, "--spool", root, "enqueue", "--id", "b", "--after",
                                               "a", f"echo b >> {root}.runs"],
          _waiter_whole_or_never_enqueued)


def _waiters(root: str) -> list[str]:
    spool = Spool(root)
    spool.set_config("backoff_base", 0)
    spool.enqueue({"id": "a", **job_that_records(root, "a")})
    spool.enqueue({"id": "f", "command": "exit 1", "max_retries": 0})
    spool.enqueue({"id": "b", **job_that_records(root, "b"), "after": ["a"]})
    spool.enqueue({"id": "c", **job_that_records(root, "c"), "after": ["a", "b"]})
    spool.enqueue({"id": "g", **job_that_records(root, "g"), "after": ["f"]})
    return ["a", "b", "c"]


def _every_waiter_released_or_killed_once(root: str, tags: list[str], killed: bool) -> None:
    burst(root)  # recovery, its sweep through after/, then the rest
    spool = Spool(root, create=False)
    assert {t: spool.find(t).state for t in tags} == dict.fromkeys(tags, "done")
    assert all(1 <= runs(root).count(t) <= (2 if killed else 1) for t in tags), runs(root)
    assert runs(root).index("b") > runs(root).index("a") and runs(root).index("c") > runs(root).index("b")
    g = spool.find("g")
    assert (g.state, g.job.last_error) == ("dead", "dependency f is dead") and "g" not in runs(root)
    assert os.listdir(spool.layout.dir("waiting")) == []
    repaired_clean(root)


@pytest.mark.parametrize("kind", ["rename", "unlink"])
def test_a_worker_killed_while_waking_waiters_loses_none(tmp_path, kind):
    sweep(tmp_path, kind, _waiters, lambda root: [*WORKER, root], _every_waiter_released_or_killed_once)


# ---- pause, queue limits, a drop-in that waits ------------------------------------------------------


def _paused_and_limited(root: str) -> None:
    spool = Spool(root)
    spool.pause("mail")
    spool.slots.set_limit("enc", 2)


def _steering_whole_and_never_blocked(root: str, _: None, killed: bool) -> None:
    spool = Spool(root, create=False)
    assert spool.paused() in (frozenset({"mail"}), frozenset({"mail", "video"}), frozenset())
    assert spool.slots.limits().get("enc") in (2, 3)
    repaired_clean(root)
    for command in (("pause", "--queue", "x"), ("resume",), ("queue", "set", "enc", "--concurrency", "1")):
        assert cli(root, *command).returncode == 0  # no lock or file left that blocks the next
    assert sorted(os.listdir(Spool(root, create=False).layout.dir("slots"))) == ["enc%0"]


@pytest.mark.parametrize("kind", ["rename", "write", "unlink", "fsync"])
@pytest.mark.parametrize("command", [("pause", "--queue", "video"), ("resume",),
                                     ("queue", "set", "enc", "--concurrency", "3")])
def test_pause_resume_and_queue_set_killed_at_any_point_block_nothing(tmp_path, kind, command):
    sweep(tmp_path, kind, _paused_and_limited, lambda root: [*SPOOLQ, "--spool", root, *command],
          _steering_whole_and_never_blocked)


def _a_dropped_waiter(root: str) -> list[str]:
    spool = Spool(root)
    spool.set_config("backoff_base", 0)
    spool.enqueue({"id": "a", "queue": "slow", **job_that_records(root, "a")})
    with open(os.path.join(spool.layout.pending, "d.json"), "w") as f:
        json.dump({"id": "d", "after": ["a"], **job_that_records(root, "d")}, f)
        f.flush()
        os.fsync(f.fileno())
    return ["a", "d"]


def _the_dropped_waiter_runs_once_after(root: str, tags: list[str], killed: bool) -> None:
    burst(root)  # every queue: recovery gives back or completes the adoption, then a, then d
    spool = Spool(root, create=False)
    assert {t: spool.find(t).state for t in tags} == dict.fromkeys(tags, "done")
    assert runs(root).count("a") == 1 and 1 <= runs(root).count("d") <= 2 and runs(root)[0] == "a", runs(root)
    repaired_clean(root)


@pytest.mark.parametrize("kind", ["rename", "write", "fsync", "link", "mkdir"])
def test_a_worker_killed_adopting_a_drop_in_that_waits_loses_nothing(tmp_path, kind):
    worker_default_only = [sys.executable, "-c",
                           "import sys; from spoolq.spool import Spool; from spoolq.running.worker import Worker; "
                           "sys.exit(Worker(Spool(sys.argv[1]), burst=True, queues=frozenset({'default'})).run())"]
    sweep(tmp_path, kind, _a_dropped_waiter, lambda root: [*worker_default_only, root],
          _the_dropped_waiter_runs_once_after)


# ---- a sharded pending/ (config pending_shards): the shard made, the job renamed in, the bump -----

SHARD_KINDS = ["mkdir", "rename", "fsync", "utime"]


def sharded(setup: Callable[[str], object]) -> Callable[[str], object]:
    def with_shards(root: str) -> object:
        made = setup(root)
        Spool(root, create=False).set_config("pending_shards", 60)
        return made
    return with_shards


def _one_job(root: str) -> None:
    Spool(root).set_config("pending_shards", 60)


def _whole_or_never_and_runs_once(root: str, _made: None, killed: bool) -> None:
    repaired_clean(root)
    assert counted(root) in ({}, {"pending": 1}) if killed else counted(root) == {"pending": 1}, counted(root)
    burst(root)
    assert runs(root) in ([], ["one"]) if killed else runs(root) == ["one"], runs(root)
    repaired_clean(root)


@pytest.mark.parametrize("kind", SHARD_KINDS + ["write"])
def test_an_enqueue_into_a_sharded_spool_killed_at_any_point_is_whole_or_never_was(tmp_path, kind):
    swept = sweep(tmp_path, kind, _one_job,
                  lambda root: [*SPOOLQ, "--spool", root, "enqueue", f"echo one >> {root}.runs"],
                  _whole_or_never_and_runs_once)
    assert swept >= 1  # the shard made, the rename into it, its fsync, the bump: each was a kill point


@pytest.mark.parametrize("kind", SHARD_KINDS)
def test_a_batch_into_a_sharded_spool_killed_at_any_point_blocks_nothing(tmp_path, kind):
    swept = sweep(tmp_path, kind, sharded(_a_batch),
                  lambda root: [*SPOOLQ, "--spool", root, "enqueue", "--batch", root + ".jsonl"],
                  _batch_all_or_nothing_and_never_blocked)
    assert swept >= 1


@pytest.mark.parametrize("kind", SHARD_KINDS)
def test_a_worker_of_a_sharded_spool_killed_adopting_or_retrying_loses_nothing(tmp_path, kind):
    assert sweep(tmp_path, kind, sharded(_dropped), lambda root: [*WORKER, root], _every_dropped_job_ran) >= 1
    assert sweep(tmp_path / "failing", kind, sharded(_failing_once), lambda root: [*WORKER, root],
                 _every_failed_job_retried_once) >= 1


# ---- retention and schedules -------------------------------------------------------------------

RETAIN = [sys.executable, "-c",
          "import sys, time; from spoolq.spool import Spool; from spoolq.running.retention import Retention; "
          "Retention(Spool(sys.argv[1])).run(time.time(), fs_now=time.time() + 86400)"]


def _finished_and_expired(root: str) -> list[str]:
    ids = _finished(root)
    spool = Spool(root)
    spool.set_config("keep_done", 60)
    spool.set_config("keep_dead", 60)
    return ids


def _retained_whole_and_unblocked(root: str, ids: list[str], killed: bool) -> None:
    _purged_whole_or_not_at_all(root, ids, killed)
    from spoolq.running.retention import Retention

    # The lock a killed worker held was let go with it: retention goes on at once.
    assert Retention(Spool(root, create=False)).run(0.0) is not None


@pytest.mark.parametrize("kind", ["unlink", "rename", "link", "write"])
def test_retention_killed_at_any_point_leaves_nothing_half_done_and_no_lock_behind(tmp_path, kind):
    sweep(tmp_path, kind, _finished_and_expired, lambda root: [*RETAIN, root], _retained_whole_and_unblocked)


FIRE = [sys.executable, "-c",
        "import sys; from spoolq.spool import Spool; from spoolq.running.schedules import Schedules; "
        "Schedules(Spool(sys.argv[1])).fire_due(float(sys.argv[2]))"]
SLOT = 1767225900.0  # 2026-01-01T00:05Z


def _a_due_schedule(root: str) -> str:
    from spoolq.running.schedules import Schedule, Schedules, slot_id

    spool = Spool(root)
    Schedules(spool).add(Schedule("rep", "*/5 * * * *", {"command": "true"}, created_at=SLOT - 60,
                                  active_from=SLOT - 60))
    return slot_id("rep", SLOT)


def _fired_once(root: str, job_id: str, killed: bool) -> None:
    from spoolq.running.schedules import Schedules

    repaired_clean(root)
    spool = Spool(root, create=False)
    again = Schedules(spool).fire_due(SLOT + 1)  # a worker that comes after: the slot fires once in all
    ids = [v.id for v in spool.list_jobs()]
    assert ids == [job_id], (ids, again)
    assert spool.find(job_id).job.command == "true"


@pytest.mark.parametrize("kind", ["rename", "link", "write", "fsync", "unlink"])
def test_a_schedule_fired_by_a_worker_killed_at_any_point_fires_once(tmp_path, kind):
    sweep(tmp_path, kind, _a_due_schedule, lambda root: [*FIRE, root, str(SLOT + 0.5)], _fired_once)


def _schedule_whole_or_absent(root: str, _made: None, killed: bool) -> None:
    repaired_clean(root)
    r = cli(root, "schedule", "list", "--json")
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    assert len(listed) <= 1 and all(s["cron"] == "@hourly" for s in listed)
    if not killed:
        assert [s["name"] for s in listed] == ["nightly"]


@pytest.mark.parametrize("kind", ["rename", "write", "fsync", "unlink"])
def test_schedule_add_killed_at_any_point_is_whole_or_absent(tmp_path, kind):
    sweep(tmp_path, kind, _a_spool, lambda root: [*SPOOLQ, "--spool", root, "schedule", "add", "nightly", "@hourly",
                                                  "--cmd", "true"], _schedule_whole_or_absent)


# ---- narrowing a spool that an older spoolq shared with its group -------------------------------


def _an_old_shared_spool(root: str) -> None:
    spool = Spool(root)
    spool.set_config("group_access", True)
    spool.set_config("max_retries", 4)
    spool.enqueue({"id": "kept", "command": "true", "delay": 3600})
    for dirpath, dirnames, filenames in os.walk(root):  # as spoolq 0.x left a shared spool
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o2770)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o660)


def _narrowed_whole(root: str, _made: None, killed: bool) -> None:
    r = cli(root, "status")  # the next command finishes what a killed one began
    assert r.returncode == 0, r.stderr
    spool = Spool(root, create=False)
    assert (spool.config.group_access, spool.config.max_retries) == (True, 4)
    modes = {os.path.relpath(os.path.join(d, n), root): stat.S_IMODE(os.lstat(os.path.join(d, n)).st_mode)
             for d, dirs, files in os.walk(root) for n in dirs + files}
    open_to_the_group = {p: oct(m) for p, m in modes.items() if m & 0o020 and p not in ("pending", "maildir/tmp",
                                                                                          "maildir/new")}
    assert open_to_the_group == {}
    assert modes["pending"] == 0o3770 and spool.find("kept").state == "scheduled"


@pytest.mark.sweep
def test_narrowing_an_old_shared_spool_killed_at_any_chmod_is_finished_by_the_next_command(tmp_path):
    sweep(tmp_path, "chmod", _an_old_shared_spool, lambda root: [*SPOOLQ, "--spool", root, "status"],
          _narrowed_whole)
