"""Faults: killed workers (chaos), full disks, power-cut leftovers, fsck, a dying watch."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import SPOOLQ, Workers, backdate, dead_pid, fill, wait_for
from spools import REPO
from spoolq import Spool, fsck
from spoolq.format import job as job_mod, layout as L
from spoolq.system import liveness, locks
from spoolq.moves.recovery import only_a_fence
from spoolq.running.worker import Worker



def settled(spool: Spool) -> bool:
    c = spool.counts()
    return c.pending + c.scheduled + c.processing == 0


def fake_owner(spool: Spool, *, alive: bool) -> str:
    """Register an owner on this host: our own (live) pid, or a dead one."""
    pid = os.getpid() if alive else dead_pid()
    owner = L.owner_token(L.host_name(), pid)
    record = {"owner": owner, "host": L.host_name(), "pid": pid, "role": "worker",
              "start": liveness.start_token(pid) if alive else "1", "started_at": job_mod.iso(time.time())}
    with open(spool.layout.worker_file(owner), "w") as f:
        json.dump(record, f)
    os.mkdir(spool.layout.owned(owner), 0o700)
    return owner


def quarantine_records(spool: Spool) -> dict[str, dict]:
    """source name -> reason record"""
    out = {}
    qdir = spool.layout.dir("quarantine")
    for name in os.listdir(qdir):
        with open(os.path.join(qdir, name)) as f:
            rec = json.load(f)
        out[rec["source"]] = rec
    return out


# ---- supervision and chaos -------------------------------------------------------------------


@pytest.mark.parametrize("how", ["enqueued", "dropped"])
@pytest.mark.slow
def test_chaos_sigkill_a_worker_every_150ms_loses_nothing(tmp_path, how):
    """Dropped: the review's case, where workers killed while adopting lost 27 jobs of 1,500."""
    spool_dir = str(tmp_path / "chaos")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "chaos.py"), "--spool", spool_dir,
                           "--jobs", "1500", "--workers", "3", "--kill-interval", "0.15", "--duration", "5",
                           "--timeout", "60", "--seed", "4", *(["--dropins"] if how == "dropped" else [])],
                          capture_output=True, text=True, timeout=150)
    summary = json.loads(proc.stdout)
    assert proc.returncode == 0 and summary["ok"], summary
    assert summary["kills"] >= 20, summary  # it really was chaos
    # Check again here, from the spool itself rather than the script's word.
    spool = Spool(spool_dir)
    c = spool.counts()
    assert (c.done, c.dead, c.pending, c.scheduled, c.processing) == (1500, 0, 0, 0, 0)
    runs: dict[str, int] = {}
    with open(os.path.join(spool_dir, "chaos-runs.log")) as f:
        for line in f:
            runs[line.strip()] = runs.get(line.strip(), 0) + 1
    assert set(runs) == {f"chaos-{n:06d}" for n in range(1500)}  # none lost, none invented
    assert sum(n - 1 for n in runs.values()) <= summary["kills"]
    # What is left in processing/ is emptied fences, kept a while with their marks (recovery.py).
    left = [spool.layout.owned(e) for e in os.listdir(spool.layout.processing)]
    assert all(L.RESCUE_SEP in os.path.basename(p) and only_a_fence(p) for p in left), left
    assert fsck.check(spool) == []


@pytest.mark.slow
def test_a_job_that_keeps_killing_its_worker_ends_dead_saying_so(spool, cli, workers):
    spool.set_config("backoff_base", 0)
    killer = cli("enqueue", "--id", "killer", "--max-retries", "2", "--cmd", "kill -9 $PPID; sleep 5").output.strip()
    assert killer == "killer"
    w = workers(2)
    wait_for(lambda: spool.find("killer").state == "dead", 30, "the killer job to end dead")
    view = spool.find("killer")
    assert view.job.attempts == 3
    assert "kills its worker" in view.job.last_error, view.job.last_error
    # The supervisor replaced every killed worker; the queue still works.
    wait_for(lambda: len(w.live()) == 2, 10, "two live workers again")
    ok = cli("enqueue", "echo still-here").output.strip()
    wait_for(lambda: spool.find(ok).state == "done", 10, "a job after the killer")
    log = w.stop()
    assert log.count("killed by SIGKILL") == 3, log
    assert "Traceback" not in log


@pytest.mark.slow
def test_supervisor_stop_while_pacing_a_crash_loop_exits(spool_dir, spool):
    """Workers that keep crashing are restarted with a growing delay; a SIGTERM during that delay
    must not leave behind a freshly spawned worker that nobody told to stop."""
    proc = subprocess.Popen([*SPOOLQ, "--spool", spool_dir, "worker", "start", "--count", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)

    def worker_pid() -> int | None:
        return next((w.pid for w in spool.workers() if w.role == "worker" and liveness.alive(w.pid)), None)

    try:
        pid = wait_for(worker_pid, 15, "a worker")
        for n in range(5):  # five quick crashes: the fifth restart waits 1.6 s
            os.kill(pid, signal.SIGUSR1)  # a crash (no core dump), not a SIGKILL from outside
            if n < 4:
                pid = wait_for(lambda: (p := worker_pid()) != pid and p, 15, "a replacement worker")
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert worker_pid() is None


# ---- full disk -------------------------------------------------------------------------------





def test_enqueue_on_a_full_disk_fails_cleanly_and_recovers(small_fs):
    spool_dir = os.path.join(small_fs, "spool")
    spool = Spool(spool_dir)
    before = [spool.enqueue({"command": f"echo before {n}"}).id for n in range(3)]
    snapshot = {n: open(os.path.join(spool.layout.pending, n), "rb").read() for n in os.listdir(spool.layout.pending)}
    filler = fill(small_fs)

    def cli(*args, input=None):
        return subprocess.run([*SPOOLQ, "--spool", spool_dir, *args], capture_output=True, text=True,
                              input=input, timeout=30)

    for args, stdin in ((("enqueue", "echo " + "x" * 20000), None),
                        (("enqueue", "--batch", "-"), "".join(f'{{"command": "echo {n}{"y" * 5000}"}}\n'
                                                              for n in range(20)))):
        r = cli(*args, input=stdin)
        assert r.returncode == 1, r
        assert "file system is full" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert os.listdir(spool.layout.tmp) == []  # no temp file left behind
        assert sorted(os.listdir(spool.layout.dir("ids"))) == sorted(before)  # no id kept reserved
        assert {n: open(os.path.join(spool.layout.pending, n), "rb").read()
                for n in os.listdir(spool.layout.pending)} == snapshot  # no partial job; earlier ones intact
    for job_id in before:
        assert spool.find(job_id).job.command.startswith("echo before")
    # Other writers say so too, without a traceback, and leave nothing behind.
    for args in (("config", "set", "max_retries", "5"), ("worker", "start", "--burst")):
        r = cli(*args)
        assert r.returncode == 1 and "file system is full" in r.stderr, r
        assert "Traceback" not in r.stderr
        assert os.listdir(spool.layout.tmp) == [] and os.listdir(spool.layout.processing) == []
    # A stop request needs no room on the disk: it works even now.
    r = cli("worker", "stop")
    assert r.returncode == 0 and os.path.exists(spool.layout.stop_file), r
    assert spool.config.max_retries == 3
    os.unlink(filler)
    r = cli("enqueue", "echo after")
    assert r.returncode == 0, r.stderr
    assert spool.find(r.stdout.strip()).state == "pending"
    r = cli("worker", "start", "--burst")
    assert r.returncode == 0, r.stderr
    assert spool.counts().done == 4
    assert fsck.check(spool) == []


def test_a_job_filling_the_disk_ends_with_a_marked_log_and_the_worker_goes_on(small_fs, workers):
    spool_dir = os.path.join(small_fs, "spool")
    spool = Spool(spool_dir)
    spool.set_config("max_output_bytes", 0)  # no cap: the disk is the limit
    w = workers(1, spool_dir=spool_dir)
    # The job writes into a pipe that the worker empties: a full disk costs the log its output,
    # never the job its writes (it ends as it would anywhere).
    ok = spool.enqueue({"command": "head -c 20000000 /dev/zero; echo done", "max_retries": 0}).id
    fails = spool.enqueue({"command": "head -c 20000000 /dev/zero; exit 3", "max_retries": 0}).id
    wait_for(lambda: spool.find(ok).state in ("done", "dead") and spool.find(fails).state in ("done", "dead"),
             30, "both disk fillers to finish")
    assert spool.find(ok).state == "done"
    assert spool.find(fails).state == "dead" and spool.find(fails).job.exit_code == 3
    for job_id in (ok, fails):
        with open(spool.output_path(job_id), "rb") as f:
            tail = f.read()[-300:]
        assert b"output truncated: the disk is full" in tail, tail
        assert os.path.getsize(spool.output_path(job_id)) < 64 * 1024
    after = spool.enqueue({"command": "echo after"}).id
    wait_for(lambda: spool.find(after).state == "done", 10, "a job after the disk fillers")
    assert len(w.live()) == 1
    assert "Traceback" not in w.stop()


@pytest.mark.slow
def test_a_disk_full_before_a_job_starts_costs_its_output_not_its_run(small_fs, workers):
    """The log is made when the job first writes: on a full disk the job runs once all the same,
    keeps its own result, and its output is dropped, said in the worker's log in one line (as a
    disk that fills while it runs cuts it). The worker goes on once space returns."""
    spool_dir = os.path.join(small_fs, "spool")
    spool = Spool(spool_dir)
    ran = os.path.join(small_fs, "ran")  # an empty file made now: its mtime says the job ran, with no block needed
    job = spool.enqueue({"command": f"echo never; touch {ran}", "max_retries": 0, "delay": 1.0}).id
    open(ran, "w").close()
    before = os.stat(ran).st_mtime_ns
    w = workers(1, spool_dir=spool_dir)
    filler = fill(small_fs)
    wait_for(lambda: spool.find(job).state == "done", 15, "the job to run on the full disk")
    assert os.stat(ran).st_mtime_ns != before, "it ran"
    wait_for(lambda: "its output could not be kept" in w.output, 5, "the worker to say so")
    [said] = [line for line in w.output.splitlines() if "its output could not be kept" in line]
    assert f"job {job} attempt 1" in said and "No space left on device" in said, said
    os.unlink(filler)
    after = spool.enqueue({"command": "echo after"}).id
    wait_for(lambda: spool.find(after).state == "done", 10, "a job after the full disk")
    assert b"after" in open(spool.output_path(after), "rb").read()
    log = w.stop()
    assert "crashed" not in log and "exited with status" not in log and "Traceback" not in log, log


def test_a_worker_that_cannot_record_a_job_still_stops_when_killed(spool, spool_dir):
    """A job's outcome that cannot be recorded (here done/ immutable: EPERM, even for root) is
    tried again and again, the job kept in processing/: a `worker stop --now` must still end the
    worker, leaving the job for recovery, which counts the attempt (it retried for good before)."""
    job = spool.enqueue({"command": "true"}).id
    done = spool.layout.dir("done")
    subprocess.run(["chattr", "+i", done], check=True)
    w = Workers(spool_dir, 1)
    try:
        wait_for(lambda: "cannot record job" in w.output, 20, "the worker to fail to record the job")
        stop = subprocess.run([*SPOOLQ, "--spool", spool_dir, "worker", "stop", "--now", "--wait", "--timeout", "30"],
                              capture_output=True, text=True, timeout=60)
        assert stop.returncode == 0, (stop.stderr, w.output)
        assert "left unrecorded (killed: `worker stop --now`)" in w.stop(), w.output
    finally:
        subprocess.run(["chattr", "-i", done], check=True)
        w.kill_all()
    spool.recovery.run(L.owner_token("test", os.getpid()))
    view = spool.find(job)
    assert view.state in ("pending", "scheduled") and view.job.attempts == 1, view


def test_output_over_max_output_bytes_keeps_its_head_and_tail_and_marks_the_cut(spool, workers):
    spool.set_config("max_output_bytes", 1000)
    job = spool.enqueue({"command": "head -c 100000 /dev/zero | tr '\\0' a; echo; echo the last line"}).id
    workers(1)
    wait_for(lambda: spool.find(job).state == "done", 10, "the chatty job")
    lines = open(spool.output_path(job), "rb").read().split(b"\n")
    header, head, marker, tail, last, footer = lines[0], lines[1], lines[2], lines[3], lines[4], lines[5]
    assert header.startswith(b"==> ") and footer.startswith(b"==> attempt finished")
    assert marker == b"==> %d bytes of output cut here (max_output_bytes 1000) <==" % (100_000 + 15 - 1000)
    assert head == b"a" * 500  # the first half of the cap as written ...
    assert last == b"the last line" and tail == b"a" * (500 - len(b"\nthe last line\n"))  # ... the last half too


# ---- power cut -------------------------------------------------------------------------------


def test_enqueue_fsyncs_the_file_and_its_directory_before_returning(spool, monkeypatch):
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    job = spool.enqueue({"command": "true"})
    tmp_dir, pending = os.path.realpath(spool.layout.tmp), os.path.realpath(spool.layout.pending)
    tmp = [p for p in synced if p.startswith(tmp_dir + "/")]
    assert tmp, synced  # the job file's data, before the rename published it
    assert synced.index(tmp[0]) < synced.index(pending)  # then the directory entry
    assert spool.find(job.id).state == "pending"


def test_power_cut_leftovers_are_recovered_or_quarantined(spool, workers, tmp_path):
    spool.set_config("backoff_base", 0.1)
    runs = tmp_path / "runs"
    cmd = lambda tag: f"echo {tag} >> {runs}"  # noqa: E731
    lay = spool.layout
    first = spool.enqueue({"command": cmd("first")}).id

    # A job file whose data never reached the disk: zero bytes under its canonical name.
    zero_name = L.pending_name("zero", 0, 1, None)
    empty_marker(lay.id_marker("zero"))
    open(os.path.join(lay.pending, zero_name), "wb").close()
    # A torn one: half of its JSON.
    torn_job = spool.make_job({"id": "torn", "command": cmd("torn")})
    torn_bytes = torn_job.to_json()[: len(torn_job.to_json()) // 2]
    empty_marker(lay.id_marker("torn"))
    with open(os.path.join(lay.pending, L.pending_name("torn", 0, torn_job.seq, None)), "wb") as f:
        f.write(torn_bytes)
    # A temp file of an enqueue that never got to its rename.
    half = spool.make_job({"id": "half", "command": cmd("half")}).to_json()
    with open(os.path.join(lay.tmp, L.tmp_name()), "wb") as f:
        f.write(half[:20])
    # A job held by a worker that died, with a half-written rewrite beside it, and a torn one.
    owner = fake_owner(spool, alive=False)
    held = spool.make_job({"id": "held", "command": cmd("held")})
    empty_marker(lay.id_marker("held"))
    with open(os.path.join(lay.owned(owner), "held.json"), "wb") as f:
        f.write(held.to_json())
    with open(os.path.join(lay.owned(owner), L.tmp_name()), "wb") as f:
        f.write(held.to_json()[:10])
    empty_marker(lay.id_marker("heldtorn"))
    with open(os.path.join(lay.owned(owner), "heldtorn.json"), "wb") as f:
        f.write(b'{"id": "heldtorn", "comm')

    w = workers(2)
    last = spool.enqueue({"command": cmd("last")}).id
    wait_for(lambda: settled(spool) and spool.find(last).state == "done", 15, "the queue to drain")

    ran = runs.read_text().split()
    assert sorted(ran) == ["first", "held", "last"]  # each once; nothing half-written ran
    assert spool.find(first).state == "done"
    held_view = spool.find("held")
    assert held_view.state == "done" and held_view.to_dict()["attempts"] == 2
    assert "stopped during attempt 1" in held_view.job.last_error
    records = quarantine_records(spool)
    assert records[zero_name]["reason"].startswith("malformed job file")
    torn_rec = next(r for s, r in records.items() if s.endswith("@torn.json"))
    assert open(os.path.join(lay.dead, torn_rec["id"] + ".json"), "rb").read() == torn_bytes  # bytes kept
    assert "processing" in records["heldtorn.json"]["reason"]
    assert not os.listdir(lay.processing) or all(  # a live worker's own dot files aside
        not [n for n in os.listdir(lay.owned(d)) if not n.startswith(".")] for d in os.listdir(lay.processing))
    w.stop()

    # What is left for fsck: the temp file (once old enough to be a crash's, not an enqueue's).
    assert fsck.check(spool) == []
    (tmp_name,) = os.listdir(lay.tmp)
    backdate(os.path.join(lay.tmp, tmp_name))
    problems = fsck.check(spool)
    assert [(p.kind, os.path.basename(p.path)) for p in problems] == [("stale-temp", tmp_name)]
    problems = fsck.check(spool, repair=True)
    assert problems[0].repaired and os.listdir(lay.tmp) == []
    assert fsck.check(spool) == []


# ---- fsck ------------------------------------------------------------------------------------


def kinds(problems) -> list[tuple[str, str]]:
    return sorted((p.kind, os.path.basename(p.path)) for p in problems)


def test_fsck_clean_spool_exits_0(run, spool):
    spool.enqueue({"command": "true"})
    r = run("fsck")
    assert r.returncode == 0 and "clean" in r.stdout
    r = run("fsck", "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout)["problems"] == []


@pytest.fixture
def broken_spool(spool):
    """A spool with one of every problem fsck knows; yields it with {(kind, name): repairable}."""
    old_umask = os.umask(0o077)  # what the test writes by hand has the spool's modes, as spoolq's would
    try:
        broken = _break(spool)
    finally:
        os.umask(old_umask)
    with locks.locked(spool.layout.lock("config"), mode=0o600):  # held by us: a lock taken a moment ago is fine
        yield broken


def _break(spool):
    lay = spool.layout
    spool.set_config("max_retries", 3)
    spool.enqueue({"id": "done1", "command": "true"})
    # Move it to done/ as a worker would.
    owner = fake_owner(spool, alive=True)
    claimed = spool.transitions.claim(next(n for n in os.listdir(lay.pending) if n.endswith("@done1.json")), owner)
    spool.transitions.finish(claimed, ok=True, exit_code=0, error=None)

    # duplicate: a copy of the done job back in pending/
    dup_name = L.pending_name("done1", 0, 5, None)
    shutil.copy(os.path.join(lay.done, "done1.json"), os.path.join(lay.pending, dup_name))
    # missing marker
    spool.enqueue({"id": "nomark", "command": "true"})
    os.unlink(lay.id_marker("nomark"))
    # orphan marker (old) and a young one (an enqueue in flight: not a problem)
    empty_marker(lay.id_marker("orphan"))
    backdate(lay.id_marker("orphan"))
    empty_marker(lay.id_marker("inflight"))
    # unparseable done file
    _write(os.path.join(lay.done, "broken.json"), b"\x00\x01garbage")
    empty_marker(lay.id_marker("broken"))
    # a quarantined file with its reason (fine) and one without (a problem)
    spool.quarantine.put(_drop(lay, "fine.json", b"nope"), "fine.json", "malformed: test", time.time())
    qid = spool.quarantine.put(_drop(lay, "lost.json", b"nope"), "lost.json", "malformed: test", time.time())
    os.unlink(lay.reason_file(qid))
    # a reason record without its file
    with open(lay.reason_file("+gone.abcdef"), "w") as f:
        json.dump({"id": "+gone.abcdef", "reason": "x", "source": "gone.json"}, f)
    backdate(lay.reason_file("+gone.abcdef"))
    # stale temp files: tmp/, a live owner's directory, dead/
    for n, d in enumerate((lay.tmp, lay.owned(owner), lay.dead)):
        p = os.path.join(d, f".{n}.{'0' * 12}.tmp")
        open(p, "wb").close()
        backdate(p)
    # a live owner holding an unparseable job: reported, never touched
    with open(os.path.join(lay.owned(owner), "livebad.json"), "wb") as f:
        f.write(b"{")
    empty_marker(lay.id_marker("livebad"))
    # a dead owner holding a job
    dead = fake_owner(spool, alive=False)
    spool.enqueue({"id": "stuck", "command": "true"})
    stuck = spool.transitions.claim(next(n for n in os.listdir(lay.pending) if n.endswith("@stuck.json")), dead)
    assert stuck is not None
    # locks: an earlier spoolq's renamed token and its anchor (removed); config's is held (fixture)
    old_lock = f"{lay.dir('locks')}/dlq.lock.{dead_pid()}.0.0.0.00000000"
    for old in (old_lock, f"{lay.dir('locks')}/dlq.anchor"):
        _write(old, b"")
    # a registration whose process is gone and which holds no directory
    gone = fake_owner(spool, alive=False)
    os.rmdir(lay.owned(gone))
    # too open
    os.chmod(os.path.join(lay.done, "done1.json"), 0o644)
    os.chmod(lay.dir("output"), 0o755)

    expected = {
        ("bad-job-file", "broken.json"): True,
        ("bad-job-file", "livebad.json"): False,  # a live worker holds it
        ("dead-owner", dead): True,
        ("duplicate", dup_name): True,
        ("missing-marker", "nomark"): True,
        ("orphan-marker", "orphan"): True,
        ("orphan-reason", "+gone.abcdef.json"): True,
        ("permissions", "done1.json"): True,
        ("permissions", "output"): True,
        ("old-lock", os.path.basename(old_lock)): True,
        ("old-lock", "dlq.anchor"): True,
        ("stale-registration", f"{gone}.json"): True,
        ("stale-temp", ".0.000000000000.tmp"): True,
        ("stale-temp", ".1.000000000000.tmp"): True,
        ("stale-temp", ".2.000000000000.tmp"): True,
        ("unrecorded-quarantine", f"{qid}.json"): True,
    }
    return spool, expected, {"qid": qid, "dup_name": dup_name}


def _by_place(report: dict) -> dict:
    return {(p["kind"], os.path.basename(p["path"])): p for p in report["problems"]}


def test_fsck_finds_every_kind_of_problem(broken_spool, run):
    spool, expected, _ = broken_spool
    r = run("fsck", "--json")
    assert r.returncode == 1, r.stderr
    report = json.loads(r.stdout)
    assert sorted(_by_place(report)) == sorted(expected)
    assert not report["clean"] and report["repaired"] == 0
    assert {p["kind"] for p in report["problems"]} <= set(fsck.KINDS)


def test_fsck_and_status_name_every_file_no_worker_will_ever_take(spool, run):
    """A name without .json in pending/ (what a Maildir deliverer writes), a directory there, and
    in the Maildir a directory in new/, anything in cur/ and a tmp/ file abandoned by its writer:
    each is said, and left where it is, even by --repair."""
    lay = spool.layout
    strays = [os.path.join(lay.pending, "1765100000.M1P2.host"), os.path.join(lay.dir("maildir/cur"), "x:2,S"),
              os.path.join(lay.dir("maildir/tmp"), "1765000000.M3P4.host")]
    for path in strays:
        _write(path, b'{"command": "true"}')
    backdate(strays[2], 40 * 3600)
    _write(os.path.join(lay.dir("maildir/tmp"), "1765100001.M5P6.host"), b"{")  # a delivery in progress: fine
    os.mkdir(os.path.join(lay.pending, "folder"))
    os.mkdir(os.path.join(lay.dir("maildir/new"), "folder"))
    expected = {"1765100000.M1P2.host", "x:2,S", "1765000000.M3P4.host", "folder"}
    r = run("fsck", "--repair", "--json")
    assert r.returncode == 1, r.stderr
    found = json.loads(r.stdout)["problems"]
    assert sorted((p["kind"], os.path.basename(p["path"]), p["repaired"]) for p in found) == \
        sorted(("never-picked-up", name, False) for name in [*expected, "folder"])
    assert all(os.path.lexists(path) for path in strays)
    status = run("status", "--json")
    assert json.loads(status.stdout)["never_picked_up"] == 5
    said = run("status")
    assert re.search(r"^never_picked_up +5$", said.stdout, re.M) and "never picked up: " in said.stderr
    assert "pending/1765100000.M1P2.host" in said.stderr and "and 2 more" in said.stderr


def test_fsck_repair_fixes_what_is_safe_and_says_what_it_did(broken_spool, run):
    spool, expected, names = broken_spool
    lay = spool.layout
    r = run("fsck", "--repair", "--json")
    assert r.returncode == 1
    report = json.loads(r.stdout)
    found = _by_place(report)
    assert {place: p["repaired"] for place, p in found.items()} == expected
    assert report["repaired"] == sum(expected.values())
    dead_owner = next(p for (kind, _), p in found.items() if kind == "dead-owner")
    assert dead_owner["repair"] == "recovered: job stuck is now scheduled"  # waiting out its backoff, as show says
    assert found[("bad-job-file", "livebad.json")]["repair"] == "left alone: a live worker holds it"

    # Only what a live worker holds is left; everything else is consistent now.
    r = run("fsck", "--json")
    left = json.loads(r.stdout)["problems"]
    assert [(p["kind"], os.path.basename(p["path"])) for p in left] == [("bad-job-file", "livebad.json")]
    assert spool.find("stuck").state in ("pending", "scheduled")
    assert spool.find("done1").state == "done"
    assert os.path.exists(lay.id_marker("nomark")) and not os.path.exists(lay.id_marker("orphan"))
    assert os.path.exists(lay.id_marker("inflight"))  # young: left for its enqueue
    assert sorted(os.listdir(lay.dir("locks"))) == ["config.flock", "dlq.flock", "ids.flock", "retention.flock"]
    assert os.stat(os.path.join(lay.done, "done1.json")).st_mode & 0o777 == 0o600
    assert "lost" in spool.find(names["qid"]).reason
    # The duplicate's bytes were quarantined, not deleted.
    assert any(r["source"] == names["dup_name"] for r in quarantine_records(spool).values())


def test_fsck_names_the_holder_of_a_lock_held_for_long_and_leaves_it(spool):
    """Item 6: a lock held for over 10 minutes (retention stopped on every host, or every
    `dlq retry` waiting) is reported with its holder; a dead holder's is let go by the file
    system, so this one is alive and fsck never takes it from it."""
    lock = spool.layout.lock("retention")
    with locks.locked(lock, mode=0o600):
        assert fsck.check(spool) == []  # taken a moment ago: nothing to say
        backdate(lock, 700)  # the mtime its holder set when it took it
        (p,) = fsck.check(spool, repair=True)
        assert (p.kind, p.path, p.repaired) == ("long-held-lock", lock, False)
        assert f"lock retention held by pid {os.getpid()} on host " in p.detail and "for 12min" in p.detail
        assert locks.holder(lock).pid == os.getpid()  # still ours


def test_fsck_text_output_says_what_was_repaired(broken_spool, run):
    _, expected, _ = broken_spool
    r = run("fsck", "--repair")
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert sum(1 for line in lines if line.startswith("    repaired: ")) == sum(expected.values())
    assert sum(1 for line in lines if line.startswith("    not repaired: ")) == len(expected) - sum(expected.values())
    assert "    repaired: recovered: job stuck is now scheduled" in lines, r.stdout


def empty_marker(path: str) -> None:
    """An id marker as spoolq 0.1 made them: empty, its creator unknown."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _drop(lay: L.Layout, name: str, data: bytes) -> str:
    return _write(os.path.join(lay.pending, name), data)


def _write(path: str, data: bytes) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, data)
    os.close(fd)
    return path


def test_fsck_reports_missing_directories_and_a_bad_config(tmp_path):
    spool = Spool(str(tmp_path / "s"))
    os.rmdir(spool.layout.dir("log"))
    _write(spool.layout.config, b"{not json")
    fresh = Spool(spool.root, create=False)
    problems = fsck.check(fresh, repair=True)
    assert kinds(problems) == [("config", "config.json"), ("missing-dir", "log")]
    assert os.path.isdir(spool.layout.dir("log"))
    by_kind = {p.kind: p for p in problems}
    assert by_kind["missing-dir"].repaired and not by_kind["config"].repaired
    assert "left alone" in by_kind["config"].repair


# ---- the watch -------------------------------------------------------------------------------


def _thread_worker(spool_dir: str):
    spool = Spool(spool_dir)
    spool.set_config("poll_interval", 0.2)
    lines: list[str] = []
    worker = Worker(Spool(spool_dir), log=lines.append)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    wait_for(lambda: worker._wake is not None and worker._wake.mode == "events", 10, "the watch to start")
    return spool, worker, thread, lines


@pytest.mark.parametrize("how", ["descriptor fails", "watched directory moved away"])
def test_a_worker_that_loses_its_watch_polls_and_says_so(spool_dir, how):
    spool, worker, thread, lines = _thread_worker(spool_dir)
    try:
        wake = worker._wake
        if how == "descriptor fails":
            # The inotify descriptor now reads as /dev/null does: at once, nothing (end of file).
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, wake._inotify.fd)
            os.close(devnull)
        else:
            control = spool.layout.dir("control")
            os.rename(control, control + ".away")
            os.rename(control + ".away", control)  # back: its watch is gone all the same
        wait_for(lambda: any("falling back to polling" in m for m in lines), 10, "the fallback to be logged")
        assert wake.mode == "polling"
        job = spool.enqueue({"command": "true"}).id
        wait_for(lambda: spool.find(job).state == "done", 10, "a job to run by polling alone")
        assert thread.is_alive()
    finally:
        worker.request_stop()
        thread.join(10)
    msg = next(m for m in lines if "falling back to polling" in m)
    assert "lost file-system events" in msg
