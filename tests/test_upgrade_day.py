"""Upgrade day: a spool that an earlier spoolq wrote, opened by this one, and workers of two
versions on one spool. The spools here are built from the very bytes the earlier versions wrote
(file names, JSON, logs, registrations), copied from spools they made, so no test needs the
history or an old checkout. Each builder says which version it stands for."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time

import pytest

from conftest import dead_pid, spoolq, wait_for
from spoolq import Spool, State
from spoolq.format import layout as L
from spools import ROOT_ONLY, shared_spool


# ---- spoolq 0.1 (the first release: ids/ markers empty, no config.json, no group record) --------


def _job_0_1(job_id: str, command: str, *, seq: int, run_at: str | None = None, attempts: int = 0,
             exit_code: int | None = None, last_error: str | None = None, max_retries: int = 3,
             priority: int = 0) -> bytes:
    """A job file as spoolq 0.1 wrote it: compact JSON, every field, seq last, no newline."""
    record = {"id": job_id, "command": command, "priority": priority, "max_retries": max_retries, "timeout": None,
              "run_at": run_at, "cwd": "/tmp", "env": {}, "created_at": "2026-11-23T01:40:00.000Z",
              "updated_at": "2026-11-23T01:40:01.000Z", "attempts": attempts, "exit_code": exit_code,
              "last_error": last_error, "seq": seq}
    return json.dumps(record, separators=(",", ":")).encode()


def _write(root: str, rel: str, data: bytes, mode: int = 0o600) -> str:
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    return path


def _registration_0_1(owner: str, pid: int, role: str, **extra: object) -> bytes:
    """workers/<owner>.json as spoolq 0.1 wrote it: no boot, pid namespace or lease."""
    return json.dumps({"owner": owner, "host": L.host_name(), "pid": pid, "role": role, "start": "5250629",
                       "started_at": "2026-11-23T01:40:00.500Z", **extra}).encode()


def spool_of_0_1(root: str, marks: str) -> dict[str, int]:
    """A spool as spoolq 0.1 left it after a day: a job done, one dead, one silent one done, one
    pending, one scheduled (due), one waiting out its retry, a drop-in no worker has taken yet,
    and a job in the directory of a worker killed while it ran (its supervisor dead too). Each
    command leaves a mark per run in `marks`. Returns how many runs each job still has to make."""
    for d in ("pending", "processing", "done", "dead", "quarantine", "ids", "output", "workers", "control",
              "tmp", "log", "locks"):
        os.makedirs(os.path.join(root, d), mode=0o700, exist_ok=True)
    os.chmod(root, 0o700)

    def mark(job_id: str) -> str:
        return f"touch {marks}/{job_id}.$$"

    due = int(time.time() * 1000) - 1000  # scheduled for a moment ago: due now
    seq = 1796688737873813611
    done = {"done1": "2026-11-23T01:40:02.197Z attempt 1 of 4 on vm (worker vm-20150-f10a0e)",
            "quiet1": "2026-11-23T01:40:02.204Z attempt 1 of 4 on vm (worker vm-20150-f10a0e)"}
    for k, (job_id, header) in enumerate(done.items()):
        _write(root, f"done/{job_id}.json", _job_0_1(job_id, mark(job_id), seq=seq + k))
        body = b"ok-done\n" if job_id == "done1" else b""
        _write(root, f"output/{job_id}.log", f"==> {header} <==\n".encode() + body
               + b"==> attempt finished in 0.003s: ok <==\n")
    _write(root, "dead/dead1.json", _job_0_1("dead1", f"{mark('dead1')}; exit 3", seq=seq + 2, max_retries=0,
                                             attempts=1, exit_code=3, last_error="exit status 3"))
    _write(root, "output/dead1.log", b"==> 2026-11-23T01:40:02.200Z attempt 1 of 1 on vm (worker vm-20150-f10a0e) <==\n"
                                     b"failing\n==> attempt finished in 0.003s: exit status 3 <==\n")
    _write(root, f"pending/1000000000.{seq + 3:019d}.0000000000000@pend1.json", _job_0_1("pend1", mark("pend1"),
                                                                                        seq=seq + 3))
    _write(root, f"pending/0999999995.{seq + 4:019d}.{due:013d}@later1.json",
           _job_0_1("later1", mark("later1"), seq=seq + 4, priority=5, run_at="2026-11-23T01:40:05.000Z"))
    _write(root, f"pending/1000000000.{seq + 5:019d}.{due:013d}@retry1.json",
           _job_0_1("retry1", mark("retry1"), seq=seq + 5, max_retries=2, attempts=1, exit_code=1,
                    last_error="exit status 1", run_at="2026-11-23T01:40:05.000Z"))
    _write(root, "output/retry1.log", b"==> 2026-11-23T01:40:02.604Z attempt 1 of 3 on vm (worker vm-20202-495cc3) <==\n"
                                      b"==> attempt finished in 0.005s: exit status 1 <==\n")
    _write(root, "pending/drop1.json", f'{{"command": "{mark("drop1")}", "id": "drop1"}}'.encode(), 0o644)
    supervisor, worker = dead_pid(), dead_pid()
    sup_owner, owner = f"{L.host_name()}-{supervisor}-1815c2", f"{L.host_name()}-{worker}-495cc3"
    _write(root, f"workers/{sup_owner}.json", _registration_0_1(sup_owner, supervisor, "supervisor", workers=1))
    _write(root, f"workers/{owner}.json", _registration_0_1(owner, worker, "worker", supervisor=supervisor))
    os.makedirs(os.path.join(root, "processing", sup_owner), mode=0o700)
    _write(root, f"processing/{owner}/killed1.json", _job_0_1("killed1", mark("killed1"), seq=seq + 6))
    _write(root, "output/killed1.log",
           b"==> 2026-11-23T01:40:02.611Z attempt 1 of 4 on vm (worker vm-20202-495cc3) <==\n")
    ids = ("done1", "quiet1", "dead1", "pend1", "later1", "retry1", "killed1")
    for job_id in ids:
        _write(root, f"ids/{job_id}", b"")  # 0.1's markers: empty, their creator unknown
    return {"done1": 0, "quiet1": 0, "dead1": 0, "pend1": 1, "later1": 1, "retry1": 1, "killed1": 1, "drop1": 1}


def _runs(marks: str, job_id: str) -> int:
    return sum(1 for name in os.listdir(marks) if name.rsplit(".", 1)[0] == job_id)


def _clean(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def test_a_spool_of_spoolq_0_1_is_read_whole_and_each_job_runs_once(tmp_path):
    root, marks = str(tmp_path / "spool"), str(tmp_path / "marks")
    os.makedirs(marks)
    owed = spool_of_0_1(root, marks)
    counts = json.loads(_clean(spoolq(root, "status", "--json")))
    assert [counts[s] for s in (State.PENDING, State.PROCESSING, State.DONE, State.DEAD)] == [4, 1, 2, 1]
    listed = {j["id"]: j["state"] for j in json.loads(_clean(spoolq(root, "list", "--json")))}
    assert set(listed) == set(owed) and listed["killed1"] == State.PROCESSING
    for job_id in owed:
        shown = spoolq(root, "show", job_id, "--json")
        assert shown.returncode == 0 and json.loads(_clean(shown))["id"] == job_id
        assert spoolq(root, "logs", job_id).returncode == 0
    assert "ok-done" in spoolq(root, "logs", "done1").stdout
    fsck = json.loads(_clean(spoolq(root, "fsck", "--json")))
    assert {p["kind"] for p in fsck["problems"]} <= {"dead-owner"}  # the killed worker: recovered by the next one

    def all_run() -> bool:  # a burst leaves the recovered job to wait out its backoff: one more then
        burst = spoolq(root, "worker", "start", "--burst", timeout=120)
        assert burst.returncode == 0, burst.stderr
        counts = Spool(root).counts()
        return counts.pending + counts.scheduled == 0

    wait_for(all_run, 60, "every job run")
    assert {job_id: _runs(marks, job_id) for job_id in owed} == owed
    assert sorted(os.listdir(os.path.join(root, "dead"))) == ["dead1.json"]  # nothing quarantined
    assert _clean(spoolq(root, "fsck")).strip().endswith("clean")


def _a_0_1_job_running_on(tmp_path) -> tuple[str, str, subprocess.Popen]:
    """A spool as 0.1 left it, and a process of the job its killed worker held, still running
    (found by the worker's token in its environment, as 0.1 found it): (root, owner, process)."""
    root, marks = str(tmp_path / "spool"), str(tmp_path / "marks")
    os.makedirs(marks)
    spool_of_0_1(root, marks)
    (owner,) = [name for name in os.listdir(os.path.join(root, "processing")) if os.listdir(
        os.path.join(root, "processing", name))]
    job = subprocess.Popen(["sleep", "60"], env={**os.environ, "SPOOLQ_OWNER": owner}, start_new_session=True)
    return root, owner, job


def test_recovery_kills_what_a_dead_worker_of_spoolq_0_1_still_runs(tmp_path):
    """0.1 recorded no process group: it found a dead worker's jobs by SPOOLQ_OWNER in their
    environment. A 0.1 worker killed while its job ran, recovered by this version: the job's
    process ran on beside its second attempt."""
    root, owner, job = _a_0_1_job_running_on(tmp_path)
    try:
        Spool(root).recovery.run(L.owner_token("test", os.getpid()))
        assert Spool(root).find("killed1").state in (State.PENDING, State.SCHEDULED)
        wait_for(lambda: job.poll() is not None, 10, "the 0.1 job's process to be killed")
    finally:
        job.kill()
        job.wait()


def test_recovery_never_signals_another_users_process_that_names_the_dead_worker(tmp_path):
    """The environment of a process is its user's to write: another local user's process that
    carries SPOOLQ_OWNER=<a dead 0.1 worker's token> (the tokens are in processing/'s names) is
    never signalled by the spool owner's recovery, root's included; the owner's own is."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root (to start another user's process); .ci/run runs as root")
    root, owner, ours = _a_0_1_job_running_on(tmp_path)
    theirs = subprocess.Popen(["sleep", "60"], env={**os.environ, "SPOOLQ_OWNER": owner}, start_new_session=True,
                              user=65534, group=65534)
    try:
        Spool(root).recovery.run(L.owner_token("test", os.getpid()))
        wait_for(lambda: ours.poll() is not None, 10, "the owner's own job process to be killed")
        assert theirs.poll() is None, "another user's process was signalled"
    finally:
        for process in (ours, theirs):
            process.kill()
            process.wait()


def test_recovery_kills_what_a_dead_worker_recorded_in_an_earlier_group_record_still_runs(tmp_path):
    """For 40 minutes of 2026-11-28 a worker recorded its job's group as "<pgid> <start ticks>" in
    40 bytes, which this version's reader (three fields, 56 bytes) takes for no record at all: its
    job's process ran on beside the job's next attempt."""
    root, owner, job = _a_0_1_job_running_on(tmp_path)
    _write(root, f"processing/{owner}/.pgroup", f"{job.pid} 5250640".ljust(39).encode() + b"\n")
    try:
        Spool(root).recovery.run(L.owner_token("test", os.getpid()))
        wait_for(lambda: job.poll() is not None, 10, "the job's process to be killed")
    finally:
        job.kill()
        job.wait()


# ---- the spoolq of 2026-12-05 (token locks, a schedule's .last, queues, shards, --after) ----------


def _job_12_05(job_id: str, command: str, *, seq: int, **fields: object) -> bytes:
    """A job file as that spoolq wrote it: 0.1's fields, then queue and after when set."""
    record = json.loads(_job_0_1(job_id, command, seq=seq))
    record.update(fields)
    return json.dumps(record, separators=(",", ":")).encode()


def _id_record_12_05(pid: int) -> bytes:
    return json.dumps({"host": L.host_name(), "pid": pid, "start": "5287631",
                       "boot": "62664119-ba3a-40e6-a884-b5e424786e50", "pidns": 4026531836},
                      separators=(",", ":")).encode()


def spool_of_12_05(root: str, marks: str) -> dict[str, int]:
    """A spool as the spoolq of 2026-12-05 left it: renamed-token lock files, pending_shards on,
    a job of queue `mail` in a shard (limited to 2 slots), a job waiting for it (after/), a daily
    schedule whose last slot (an hour ago) was fired and recorded in <name>.last alone (its job
    since purged): a worker catching up would fire it. And a stop request older than any worker. Returns the runs each job still has to make."""
    for d in ("pending", "processing", "done", "dead", "quarantine", "ids", "output", "workers", "control", "tmp",
              "log", "locks", "slots", "after/q1", "waiting", "schedules", "events"):
        os.makedirs(os.path.join(root, d), mode=0o700, exist_ok=True)
    os.chmod(root, 0o700)
    _write(root, "config.json", b'{\n  "pending_shards": 60\n}')
    for name in ("config", "dlq", "ids"):
        _write(root, f"locks/{name}.lock", b"")
        _write(root, f"locks/{name}.anchor", b"")
    _write(root, "control/limits", b"mail 2\n")
    _write(root, "slots/mail%0", b"")
    _write(root, "slots/mail%1", b"")
    stopped = time.time() - 3600
    _write(root, "control/stop", f"stop {stopped:.6f} f6a45b66cc2fac36 0bbfd16a {stopped:.6f}\n".encode())
    seq = 1796689108311341681
    shard = f"={int(time.time()) // 60 * 60 - 60}"
    _write(root, f"pending/{shard}/1000000000.{seq:019d}.0000000000000@q1%mail.json",
           _job_12_05("q1", f"touch {marks}/q1.$$", seq=seq, queue="mail"))
    _write(root, "waiting/dep1.json", _job_12_05("dep1", f"touch {marks}/dep1.$$", seq=seq + 1, after=["q1"]))
    _write(root, "after/q1/dep1", b"")
    for job_id in ("q1", "dep1"):
        _write(root, f"ids/{job_id}", _id_record_12_05(dead_pid()))
    slot = int(time.time()) // 60 * 60 - 3600
    at = time.gmtime(slot)
    _write(root, "schedules/tick.json", json.dumps(
        {"name": "tick", "cron": f"{at.tm_min} {at.tm_hour} * * *", "job": {"command": f"touch {marks}/tick.$$"}, "tz": "UTC",
         "catch_up": "last", "created_at": slot - 600.5, "paused": False, "active_from": slot - 600.5},
        indent=1).encode())
    stamp = time.strftime("%Y%m%dT%H%MZ", at)
    _write(root, "schedules/tick.last", f"{slot} tick.{stamp}\n".encode())
    for d, _, _ in os.walk(root):
        os.chmod(d, 0o700)  # as that spoolq made them (makedirs gives parents the umask's mode)
    return {"q1": 1, "dep1": 1}


def test_a_spool_of_the_spoolq_of_12_05_is_read_and_run_once(tmp_path):
    root, marks = str(tmp_path / "spool"), str(tmp_path / "marks")
    os.makedirs(marks)
    owed = spool_of_12_05(root, marks)
    counts = json.loads(_clean(spoolq(root, "status", "--json")))
    assert [counts[s] for s in (State.PENDING, State.WAITING)] == [1, 1]
    assert json.loads(_clean(spoolq(root, "schedule", "list", "--json")))[0]["last_job"].startswith("tick.")
    fsck = json.loads(_clean(spoolq(root, "fsck", "--json")))
    assert {p["kind"] for p in fsck["problems"]} == {"old-lock"}
    burst = spoolq(root, "worker", "start", "--burst", timeout=120)
    assert burst.returncode == 0, burst.stderr
    assert {job_id: _runs(marks, job_id) for job_id in owed} == owed
    assert _runs(marks, "tick") == 0  # the slot .last records fired once, under the older spoolq
    assert os.listdir(os.path.join(root, "dead")) == []
    assert spoolq(root, "fsck", "--repair").returncode == 0
    assert _clean(spoolq(root, "fsck")).strip().endswith("clean")


# ---- two versions at once ------------------------------------------------------------------------


@ROOT_ONLY
def test_a_job_an_older_host_wrote_group_writable_is_quarantined_and_said_in_the_workers_log(tmp_path):
    """A spoolq before the shared spool's narrowing wrote its files group-writable (0660), and
    keeps doing so on a host not yet upgraded: a worker of this version quarantines such a job
    (a member could have rewritten it), and said nothing of it in its log; its tally counted the
    job a claim lost to another worker."""
    spool = shared_spool(str(tmp_path))
    root = spool.root
    job_id = spool.enqueue({"command": "true"}).id
    (name,) = os.listdir(spool.layout.pending)
    os.chmod(os.path.join(spool.layout.pending, name), 0o660)  # as that host's enqueue left it
    burst = spoolq(root, "worker", "start", "--burst")
    assert burst.returncode == 0, burst.stderr
    assert Spool(root).counts().quarantined == 1
    said = [line for line in burst.stderr.splitlines() if "quarantined job file" in line]
    assert len(said) == 1 and name in said[0] and "writable by its group" in said[0], burst.stderr
    assert job_id in said[0]


@ROOT_ONLY
def test_fsck_repair_leaves_a_shared_spool_shared_when_an_older_host_rewrote_its_config_group_writable(tmp_path):
    """An older host's `config set` on a shared spool writes config.json 0660, which this version
    refuses; fsck then judged every mode as a private spool's, and --repair made the spool private
    (pending/ 0700: no member could drop a job any more) and config.json 0600, trusted again
    though a member could have rewritten it."""
    spool = shared_spool(str(tmp_path))
    spool.enqueue({"command": "true"})
    before = {p: os.stat(os.path.join(spool.root, p)).st_mode for p in ("pending", "done", "ids")}
    os.chmod(spool.layout.config, 0o660)  # as that host's config set left it
    fsck = spoolq(spool.root, "fsck", "--repair", "--json")
    assert fsck.returncode == 1, fsck.stderr
    kinds = [p["kind"] for p in json.loads(_clean(fsck))["problems"]]
    assert kinds == ["config"], kinds
    assert {p: os.stat(os.path.join(spool.root, p)).st_mode for p in before} == before
    assert stat.S_IMODE(os.stat(spool.layout.config).st_mode) == 0o660


def test_schedule_add_overlap_forbid_names_the_hosts_whose_older_workers_would_ignore_it(tmp_path):
    """A worker before --overlap fires every slot of a schedule that forbids overlap (it keeps the
    field it does not know, and ignores it); `schedule add` said nothing of the workers running
    such a version on hosts not yet upgraded."""
    root = str(tmp_path / "spool")
    spool = Spool(root)
    spool.owners.register("worker")  # live (this process), registered as an older worker is: honouring nothing
    forbid = spoolq(root, "schedule", "add", "nightly", "0 3 * * *", "--cmd", "true", "--overlap", "forbid")
    assert forbid.returncode == 0, forbid.stderr
    said = [line for line in forbid.stderr.splitlines() if "predate --overlap" in line]
    assert len(said) == 1 and L.host_name() in said[0], forbid.stderr
    allow = spoolq(root, "schedule", "add", "hourly", "0 * * * *", "--cmd", "true")
    assert "predate" not in allow.stderr  # a schedule every worker fires alike says nothing


def test_a_worker_registers_what_an_older_one_would_ignore_and_is_not_named(spool_dir, workers):
    workers(1)
    forbid = spoolq(spool_dir, "schedule", "add", "nightly", "0 3 * * *", "--cmd", "true", "--overlap", "forbid")
    assert forbid.returncode == 0 and "predate" not in forbid.stderr, forbid.stderr
