"""Real worker processes end to end: exactly-once, priority, delay, timeouts, retries, crashes,
graceful stop, detach, wait, drop-ins and pickup latency."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from datetime import datetime

import pytest

from conftest import safecat_path, strace_path, wait_for
from spoolq import Spool
from conftest import SPOOLQ, Workers, fill
from spools import cli, pid_gone

# ---- helpers ---------------------------------------------------------------------------------


def kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rfind(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def state(spool: Spool, job_id: str) -> str | None:
    try:
        return spool.find(job_id).state
    except Exception:
        return None


def wait_state(spool: Spool, job_id: str, want: str, timeout: float = 15):
    wait_for(lambda: state(spool, job_id) == want, timeout, f"job {job_id} to be {want} "
             f"(it is {state(spool, job_id)})")
    return spool.find(job_id).to_dict()


def parse_iso(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def drop(spool: Spool, name: str, data: bytes) -> str:
    """Publish a file by the documented drop-in protocol: write under a '.' name, then rename."""
    stage = os.path.join(spool.layout.pending, f".stage-{name}")
    with open(stage, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    final = os.path.join(spool.layout.pending, name)
    os.rename(stage, final)
    return final


def quarantined(spool: Spool, prefix: str) -> list[str]:
    return sorted(e[:-5] for e in os.listdir(spool.layout.dead) if e.startswith("+" + prefix))


def run_marker(spool: Spool, job_id: str, timeout: float = 10) -> None:
    """Enqueue a no-op job and wait for it: proof that a worker has gone round its loop."""
    spool.enqueue({"command": "true", "id": job_id})
    wait_state(spool, job_id, "done", timeout)


def lines(path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# ---- exactly once, at scale ------------------------------------------------------------------------


@pytest.mark.slow
def test_three_workers_run_900_jobs_exactly_once(spool, workers, tmp_path):
    spool.set_config("max_retries", 0)  # a failure shows up as dead, never as a second run
    ran = tmp_path / "ran"
    workers(3)
    expected = []
    for batch in range(3):  # enqueued while the workers run: claims race with arrivals
        jobs = spool.enqueue_many([{"command": f'echo "$SPOOLQ_JOB_ID $SPOOLQ_ATTEMPT $SPOOLQ_OWNER" >> {ran}',
                                    "id": f"m{batch}-{i}"} for i in range(300)])
        expected += [j.id for j in jobs]
    wait_for(lambda: spool.counts().done + spool.counts().dead == len(expected), 120, "900 jobs to finish")
    counts = spool.counts()
    assert (counts.done, counts.dead, counts.pending, counts.processing) == (900, 0, 0, 0)
    records = [line.split() for line in lines(ran)]
    assert len(records) == 900, "each job ran exactly once"
    per_id = Counter(r[0] for r in records)
    assert set(per_id) == set(expected) and set(per_id.values()) == {1}
    assert {r[1] for r in records} == {"1"}, "no job needed a second attempt"
    assert len({r[2] for r in records}) >= 2, "the work was shared between worker processes"


# ---- order and time --------------------------------------------------------------------------------


def test_priority_order_with_one_worker(spool, workers, tmp_path):
    order = tmp_path / "order"
    for job_id, prio in (("a", 0), ("b", 5), ("c", -3), ("d", 5), ("e", 10), ("f", 0), ("g", -3)):
        spool.enqueue({"command": f"echo $SPOOLQ_JOB_ID >> {order}", "id": job_id, "priority": prio})
    workers(1)
    wait_for(lambda: spool.counts().done == 7, 15, "7 jobs")
    assert lines(order) == ["e", "b", "d", "a", "f", "c", "g"], "higher first; equal priority in enqueue order"


def test_dropins_queue_in_order_of_arrival(spool, workers, tmp_path):
    order = tmp_path / "order"
    last_ctime = 0
    for name in ("zzz", "aaa", "mmm"):
        # Arrival order is the file's ctime: make sure the clock has moved on between drops.
        wait_for(lambda: time.time_ns() > last_ctime + 30_000_000, 5, "the clock to move")
        path = drop(spool, f"{name}.json", json.dumps({"command": f"echo $SPOOLQ_JOB_ID >> {order}"}).encode())
        last_ctime = os.stat(path).st_ctime_ns
    workers(1)
    wait_for(lambda: spool.counts().done == 3, 15, "3 dropped jobs")
    assert lines(order) == ["zzz", "aaa", "mmm"]


@pytest.mark.slow
def test_delay_and_run_at_wait_as_scheduled_then_run_on_time(cli, spool, workers, tmp_path):
    w = workers(1)
    run_marker(spool, "warm")
    [worker] = w.live()
    cpu_before = cpu_seconds(worker.pid)
    stamp1, stamp2 = tmp_path / "s1", tmp_path / "s2"
    r = cli("enqueue", "--cmd", f"date +%s.%N > {stamp1}", "--id", "later", "--delay", "1.5")
    assert r.exit_code == 0, r.output
    due = time.time() + 1.2
    r = cli("enqueue", json.dumps({"command": f"date +%s.%N > {stamp2}", "id": "at", "run_at": due}))
    assert r.exit_code == 0, r.output
    d1, d2 = cli.json("show", "later"), cli.json("show", "at")
    assert d1["state"] == d2["state"] == "scheduled"
    assert cli.json("status")["scheduled"] == 2
    wait_state(spool, "later", "done", 10)
    wait_state(spool, "at", "done", 10)
    for d, stamp in ((d1, stamp1), (d2, stamp2)):
        run_at, started = parse_iso(d["run_at"]), float(stamp.read_text())
        assert started >= run_at - 0.002, "a scheduled job never runs before its time"
        assert started < run_at + 0.6, "the worker wakes for the due time, not a later poll"
    assert cpu_seconds(worker.pid) - cpu_before < 0.6, "an idle worker sleeps; it does not spin"


# ---- failure handling --------------------------------------------------------------------------------


@pytest.mark.slow
def test_timeout_kills_the_whole_process_group(spool, workers, tmp_path):
    spool.set_config("max_retries", 0)
    pids = []
    for job_id, spec in (("t-job", {"timeout": 0.5}), ("t-config", {})):
        gc = tmp_path / f"{job_id}.pid"
        # The grandchild ignores SIGTERM: only the group SIGKILL that follows can end it.
        command = (f"sh -c 'trap \"\" TERM; exec sleep 30' & echo $! > {gc}.tmp && mv {gc}.tmp {gc}; "
                   f"sleep 30")
        if job_id == "t-config":
            spool.set_config("job_timeout", 0.5)
        spool.enqueue({"command": command, "id": job_id, **spec})
    w = workers(1)
    try:
        for job_id in ("t-job", "t-config"):
            started = time.monotonic()
            d = wait_state(spool, job_id, "dead", 15)
            assert time.monotonic() - started < 10
            assert "timed out" in d["last_error"], d
            assert d["attempts"] == 1
            pid = int((tmp_path / f"{job_id}.pid").read_text())
            pids.append(pid)
            wait_for(lambda: pid_gone(pid), 5, "the background grandchild to be killed")
    finally:
        for pid in pids:
            kill_quietly(pid)
    assert len(w.live()) == 1


@pytest.mark.slow
def test_retries_back_off_then_dead(cli, spool, workers, tmp_path):
    for key, value in (("backoff_base", "100"), ("backoff_max", "0.4")):  # every wait is min(100**n, 0.4)
        assert cli("config", "set", key, value).exit_code == 0
    times = tmp_path / "times"
    cli("enqueue", "--cmd", f"date +%s.%N >> {times}; echo try-$SPOOLQ_ATTEMPT; exit 3", "--id", "r",
        "--max-retries", "2")
    workers(1)
    seen = set()

    def finished() -> bool:
        seen.add(state(spool, "r"))
        return state(spool, "r") == "dead"

    wait_for(finished, 15, "the job to be dead")
    assert "scheduled" in seen, "between attempts the job waits as scheduled"
    d = cli.json("show", "r")
    assert (d["attempts"], d["exit_code"], d["last_error"]) == (3, 3, "exit status 3")
    starts = [float(x) for x in lines(times)]
    assert len(starts) == 3, "1 + max_retries attempts, no more"
    for a, b in zip(starts, starts[1:]):
        assert b - a >= 0.39, f"attempts {starts} did not back off"
    text = cli("logs", "r").output
    assert all(f"try-{n}" in text for n in (1, 2, 3))
    assert [d["id"] for d in cli.json("dlq", "list")] == ["r"]


@pytest.mark.slow
def test_a_burst_runs_the_retries_of_the_jobs_it_ran_backoff_included(run, spool):
    spool.set_config("backoff_base", 1.5)  # the retry is due 1.5 s after the first attempt
    spool.enqueue({"command": '[ "$SPOOLQ_ATTEMPT" -ge 2 ]', "id": "flaky", "max_retries": 2})
    spool.enqueue({"command": "exit 4", "id": "hopeless", "max_retries": 1})
    spool.enqueue({"command": "true", "id": "later", "delay": 3600})  # not the burst's: left scheduled
    began = time.monotonic()
    result = run("worker", "start", "--burst", "--count", "2")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - began >= 1.4, "the retry ran before its backoff"
    assert (state(spool, "flaky"), state(spool, "hopeless"), state(spool, "later")) == ("done", "dead", "scheduled")
    assert "burst finished: 2 jobs in 4 attempts, 1 ok, 3 failed" in result.stderr


def test_environment_cwd_and_a_command_that_cannot_start(run, spool, workers, tmp_path):
    spool.set_config("backoff_base", 0)
    wd = tmp_path / "wd"
    wd.mkdir()
    out = tmp_path / "env.out"
    job = {"command": f'echo "$SPOOLQ_JOB_ID|$SPOOLQ_ATTEMPT|$(pwd -P)|$FOO" >> {out}; [ "$SPOOLQ_ATTEMPT" -ge 2 ]',
           "id": "envjob", "env": {"FOO": "bar baz"}, "max_retries": 1}
    proc = run("enqueue", json.dumps(job), cwd=str(wd))  # the CLI records the caller's directory
    assert proc.returncode == 0, proc.stderr
    spool.enqueue({"command": "true", "id": "nowhere", "cwd": str(tmp_path / "missing"), "max_retries": 0})
    workers(1)
    wait_state(spool, "envjob", "done")
    real = os.path.realpath(wd)
    assert lines(out) == [f"envjob|1|{real}|bar baz", f"envjob|2|{real}|bar baz"]
    d = wait_state(spool, "nowhere", "dead")
    assert "cannot start" in d["last_error"] and d["attempts"] == 1


# ---- crashes ----------------------------------------------------------------------------------------


def test_sigkilled_worker_job_is_recovered(spool, workers, tmp_path):
    spool.set_config("backoff_base", 0)
    gc, sh = tmp_path / "gc.pid", tmp_path / "sh.pid"
    command = (f'if [ "$SPOOLQ_ATTEMPT" = 1 ]; then echo first-run; sleep 30 & echo $! > {gc}.tmp; mv {gc}.tmp {gc}; '
               f'echo $$ > {sh}.tmp; mv {sh}.tmp {sh}; wait; fi; echo second-run')  # output: a log from the start
    w = workers(1)
    spool.enqueue({"command": command, "id": "victim", "max_retries": 2})
    wait_for(lambda: gc.exists() and sh.exists(), 10, "the job to start")
    leftovers = [int(gc.read_text()), int(sh.read_text())]
    try:
        [worker] = w.live()
        assert worker.job == "victim"
        killed_at = time.monotonic()
        os.kill(worker.pid, signal.SIGKILL)
        d = wait_state(spool, "victim", "done", 10)
        assert time.monotonic() - killed_at < 6, "recovered within seconds"
        for pid in leftovers:
            wait_for(lambda: pid_gone(pid), 5, "the dead worker's job processes to be killed")
        assert d["attempts"] == 2, "the interrupted attempt counts"
        assert "stopped during attempt 1" in d["last_error"]
        text = open(spool.output_path("victim")).read()
        assert "attempt 1 of 3" in text and "attempt 2 of 3" in text and "second-run" in text
        # The killed attempt's log says why it ended, before the next attempt begins.
        closed = re.search(r"^==> attempt 1 ended without a result: worker \S+ on \S+ stopped during attempt 1 "
                           r"\(killed, crashed or lost its lease\); the job is (pending|scheduled) now <==$", text, re.M)
        assert closed and closed.start() < text.index("attempt 2 of 3"), text
        wait_for(lambda: [x.pid for x in w.live()] not in ([], [worker.pid]), 10, "a replacement worker")
    finally:
        for pid in leftovers:
            kill_quietly(pid)


def test_job_that_kills_its_worker_ends_dead(spool, workers, tmp_path):
    spool.set_config("backoff_base", 0)
    spool.enqueue({"command": "kill -9 $PPID", "id": "assassin", "max_retries": 1})
    w = workers(1)
    d = wait_state(spool, "assassin", "dead", 20)
    assert d["attempts"] == 2
    assert "stopped during attempt 2" in d["last_error"] and "kills its worker" in d["last_error"], d
    # The pool survives it.
    wait_for(lambda: len(w.live()) == 1, 10, "a replacement worker")
    run_marker(spool, "after")


# ---- stopping ----------------------------------------------------------------------------------------


def test_sigterm_lets_the_running_job_finish(spool, workers, tmp_path):
    started, go, finished = tmp_path / "started", tmp_path / "go", tmp_path / "finished"
    w = workers(1)
    spool.enqueue({"command": f"touch {started}; i=0; while [ ! -e {go} ] && [ $i -lt 400 ]; "
                              f"do sleep 0.05; i=$((i+1)); done; echo fin > {finished}", "id": "g"})
    try:
        wait_for(started.exists, 10, "the job to start")
        w.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "SIGTERM" in w.output, 10, "the supervisor to say it got SIGTERM")
        assert w.proc.poll() is None, "the worker waits for its job"
        assert state(spool, "g") == "processing"
    finally:
        go.touch()
    assert w.proc.wait(15) == 0
    assert state(spool, "g") == "done" and finished.read_text() == "fin\n"
    assert w.live() == []


def test_detach_list_and_stop(run, spool, tmp_path):
    try:
        proc = run("worker", "start", "--detach", "--count", "2", timeout=30)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "started 2 workers" in proc.stdout
        listed = run("worker", "list", "--json")
        rows = json.loads(listed.stdout)
        assert len(rows) == 2
        for row in rows:
            assert isinstance(row["pid"], int) and not pid_gone(row["pid"])
            assert row["host"] and row["job"] is None
        human = run("worker", "list").stdout
        assert all(str(row["pid"]) in human for row in rows)
        assert run("enqueue", "--cmd", "true", "--id", "d1").returncode == 0
        assert run("wait", "d1", "--timeout", "10").returncode == 0, "detached workers run jobs"
        assert json.loads(run("status", "--json").stdout)["workers"] == 2
        supervisors = [w.pid for w in spool.workers() if w.role == "supervisor"]
        assert len(supervisors) == 1
        again = run("worker", "start", "--detach", timeout=30)  # a second set was started silently
        assert again.returncode == 1 and again.stderr.count("\n") == 1, again.stderr
        assert f"already run on this host (supervisor pid {supervisors[0]})" in again.stderr
        assert len([w for w in spool.workers() if w.role == "supervisor"]) == 1
        other = run("worker", "start", "--detach", "--queue", "mail", timeout=30)  # other queues: another set
        assert other.returncode == 0, other.stderr
        supervisors = [w.pid for w in spool.workers() if w.role == "supervisor"]
        assert len(supervisors) == 2
        stop = run("worker", "stop", "--wait", "--timeout", "10")
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert json.loads(run("worker", "list", "--json").stdout) == []
        for pid in [row["pid"] for row in rows] + supervisors:
            wait_for(lambda: pid_gone(pid), 10, f"pid {pid} to exit")
    finally:
        for w in spool.workers():
            kill_quietly(w.pid)


@pytest.mark.slow
def test_wait_exit_codes_with_workers(run, spool, workers, tmp_path):
    go = tmp_path / "go"
    workers(1)
    run("enqueue", "--cmd", "echo fine", "--id", "w-ok")
    run("enqueue", "--cmd", "exit 1", "--id", "w-bad", "--max-retries", "0")
    run("enqueue", "--cmd", f"i=0; while [ ! -e {go} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done",
        "--id", "w-slow")
    try:
        assert run("wait", "w-ok", "--timeout", "10").returncode == 0
        bad = run("wait", "w-bad", "--timeout", "10")
        assert bad.returncode == 1 and "w-bad" in bad.stderr
        assert run("wait", "w-ok", "w-bad", "--timeout", "10").returncode == 1
        assert run("wait", "w-slow", "--timeout", "0.3").returncode == 124
        assert run("wait", "--timeout", "0.3").returncode == 124
    finally:
        go.touch()
    assert run("wait", "--timeout", "10").returncode == 0
    assert state(spool, "w-slow") == "done"


@pytest.mark.slow
def test_wait_says_when_nothing_can_finish_its_jobs(run, spool, workers):
    spool.enqueue({"command": "true", "id": "orphan", "queue": "video"})
    alone = run("wait", "orphan", "--timeout", "4")
    assert alone.returncode == 124
    assert "1 job not finished, and nothing will run it: no worker is running" in alone.stderr
    assert run("pause", "--queue", "video").returncode == 0
    workers(1)
    held = run("wait", "--timeout", "4")
    assert held.returncode == 124 and "nothing will run them" not in held.stderr  # the whole spool is not paused
    held = run("wait", "orphan", "--timeout", "4")
    assert "nothing will run it: queue video paused" in held.stderr and held.stderr.count("nothing will run") == 1
    assert run("resume", "--queue", "video").returncode == 0
    done = run("wait", "orphan", "--timeout", "10")
    assert done.returncode == 0 and done.stderr == ""


# ---- drop-ins ------------------------------------------------------------------------------------------


def test_dropin_by_rename(spool, workers, tmp_path):
    ran = tmp_path / "ran"
    workers(1)
    job = json.dumps({"command": f"echo $SPOOLQ_JOB_ID >> {ran}"}).encode()
    hidden = os.path.join(spool.layout.pending, ".staging.json")
    with open(hidden, "wb") as f:
        f.write(job)
    drop(spool, "nightly-report.json", job)  # no id inside: the file name is the id
    drop(spool, "whatever.json", json.dumps({"command": f"echo $SPOOLQ_JOB_ID >> {ran}", "id": "inner"}).encode())
    drop(spool, "not an id!.json", json.dumps({"command": f"echo generated >> {ran}"}).encode())
    wait_state(spool, "nightly-report", "done")
    wait_state(spool, "inner", "done")
    wait_for(lambda: "generated" in lines(ran), 10, "the job with a generated id")
    run_marker(spool, "marker")
    assert sorted(lines(ran)) == ["generated", "inner", "nightly-report"], "each dropped file ran once"
    assert os.path.exists(hidden), "a '.' name is invisible until renamed"
    assert spool.counts().done == 4 and spool.counts().dead == 0


def test_slow_writer_runs_once_when_complete(cli, spool, workers, tmp_path):
    assert cli("config", "set", "drop_grace", "3").exit_code == 0
    ran = tmp_path / "ran"
    workers(1)
    path = os.path.join(spool.layout.pending, "slow.json")
    first, rest = f'{{"command": "echo $SPOOLQ_JOB_ID >> {ran}", '.encode(), b'"id": "slow1"}\n'
    with open(path, "wb", buffering=0) as f:
        f.write(first)
        written_at = time.monotonic()
        run_marker(spool, "marker")  # the worker has looked at the half-written file by now
        assert time.monotonic() - written_at < 2.5, "too slow to test the grace period"
        assert os.path.exists(path) and quarantined(spool, "slow") == [], "a half-written file waits"
        f.write(rest)
    wait_state(spool, "slow1", "done", 10)
    run_marker(spool, "marker2")
    assert lines(ran) == ["slow1"]
    assert os.listdir(spool.layout.dead) == []


@pytest.mark.parametrize("name, data, why", [
    ("broken.json", b'{"command": "echo never" oops', "malformed"),
    ("array.json", b'[{"command": "echo never"}]', "malformed"),
    ("typed.json", b'{"command": 5}', "malformed"),
    ("nocmd.json", b'{"id": "x1"}', "malformed"),
    ("binary.json", b"\xff\xfe\x00garbage", "malformed"),
    ("surrogate.json", b'{"command": "echo \\ud800"}', "malformed"),
])
def test_malformed_dropin_is_quarantined_with_its_bytes(cli, spool, workers, tmp_path, name, data, why):
    assert cli("config", "set", "drop_grace", "0.5").exit_code == 0
    w = workers(1)
    [worker] = w.live()
    changed = time.time()  # before the drop: a file that parses is quarantined at once, maybe before a stat
    path = drop(spool, name, data)
    stem = name[:-5]
    [qid] = wait_for(lambda: quarantined(spool, stem), 10, "the file to be quarantined")
    assert not os.path.exists(path)
    with open(os.path.join(spool.layout.dead, qid + ".json"), "rb") as f:
        assert f.read() == data, "quarantined bytes are unchanged"
    with open(spool.layout.reason_file(qid), "rb") as f:
        record = json.loads(f.read())
    if not data.startswith(b"{") or b"oops" in data:  # unparseable: it had its grace period first
        assert parse_iso(record["quarantined_at"]) >= changed + 0.5 - 0.002
    [dead] = cli.json("dlq", "list")
    assert dead["id"] == qid and why in dead["last_error"]
    assert why in cli.json("show", qid)["last_error"]
    retry = cli("dlq", "retry", qid)
    assert retry.exit_code == 1 and "fix" in retry.output and "drop it" in retry.output
    assert "Traceback" not in retry.output
    run_marker(spool, "marker")
    assert [x.pid for x in w.live()] == [worker.pid], "a bad file never takes a worker down"
    counts = spool.counts()
    assert (counts.done, counts.dead, counts.quarantined) == (1, 0, 1)  # a quarantined file is no dead job


def test_dropped_duplicate_id_is_quarantined(spool, workers, tmp_path):
    ran = tmp_path / "ran"
    spool.enqueue({"command": f"echo first >> {ran}", "id": "dup"})
    workers(1)
    wait_state(spool, "dup", "done")
    drop(spool, "dupe.json", json.dumps({"id": "dup", "command": f"echo second >> {ran}"}).encode())
    [qid] = wait_for(lambda: quarantined(spool, "dupe"), 10, "the duplicate to be quarantined")
    assert "duplicate" in spool.find(qid).reason
    run_marker(spool, "marker")
    assert lines(ran) == ["first"]
    assert spool.find("dup").job.command == f"echo first >> {ran}"


def test_other_entries_in_pending_are_left_alone(spool, workers, tmp_path):
    pending = spool.layout.pending
    os.mkdir(os.path.join(pending, "folder.json"))
    os.mkdir(os.path.join(pending, "folder"))
    with open(os.path.join(pending, "notes.txt"), "w") as f:
        f.write("not a job")
    with open(os.path.join(pending, ".hidden.json"), "w") as f:
        f.write('{"command": "true"}')
    before = sorted(os.listdir(pending))
    workers(1)  # its first pass lists pending/ and sees all of these
    run_marker(spool, "marker")
    run_marker(spool, "marker2")
    assert sorted(os.listdir(pending)) == before
    assert os.path.isdir(os.path.join(pending, "folder.json"))
    assert os.listdir(spool.layout.dead) == []
    assert spool.counts().pending == 0, "entries that are not jobs are not counted as jobs"


def deliver(spool: Spool, data: bytes, *tracing: str) -> subprocess.Popen:
    """safecat delivering `data` into the spool's Maildir, as a mail delivery agent would (under
    `tracing`, a strace command line, when given); it prints the name it delivered under."""
    maildir = spool.layout.dir("maildir")
    proc = subprocess.Popen([*tracing, safecat_path(), f"{maildir}/tmp", f"{maildir}/new"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(data)
    proc.stdin.close()
    return proc


def test_safecat_delivers_jobs_into_the_maildir(spool, workers, tmp_path):
    """Any name is a job in maildir/new/: one delivered before a worker starts, and twenty while
    it runs, each run once under the name safecat gave it."""
    ran = tmp_path / "ran"
    job = json.dumps({"command": f"echo $SPOOLQ_JOB_ID >> {ran}"}).encode()
    early = deliver(spool, job)
    assert early.wait(10) == 0, early.stderr.read()
    names = [early.stdout.read().decode().strip()]
    workers(1)
    for i in range(20):
        proc = deliver(spool, job)
        assert proc.wait(10) == 0, proc.stderr.read()
        names.append(proc.stdout.read().decode().strip())
    wait_for(lambda: len(lines(ran)) >= 21, 20, "the delivered jobs to run")
    run_marker(spool, "marker")
    assert sorted(lines(ran)) == sorted(names), "each delivery ran once, its name its id"
    assert os.listdir(spool.layout.dead) == [] and os.listdir(spool.layout.dir("maildir/new")) == []


def test_a_delivery_no_worker_has_taken_yet_is_a_pending_job(spool):
    proc = deliver(spool, b'{"command": "true"}')
    assert proc.wait(10) == 0, proc.stderr.read()
    assert spool.counts().pending == 1
    census = spool.views.census()
    assert census.totals.pending == 1 and census.queues["default"].pending == 1 and None in census.ready_since


@pytest.mark.slow
def test_a_delivery_seen_between_its_link_and_its_unlink_waits_instead_of_being_quarantined(spool, workers, tmp_path):
    """safecat links its tmp/ file into new/, then unlinks the tmp/ name; here its unlink is held
    back (strace) while the worker takes the file, which then has two links."""
    spool.set_config("drop_grace", 8)
    ran = tmp_path / "ran"
    workers(1)
    held = [strace_path(), "-f", "-o", os.devnull, "-e", "inject=unlink:delay_enter=4000000"]
    proc = deliver(spool, json.dumps({"id": "linked", "command": f"touch {ran}"}).encode(), *held)
    pending, dead = spool.layout.pending, spool.layout.dead
    wait_for(lambda: [n for n in os.listdir(pending) + os.listdir(dead) if n.endswith(".json")], 10,
             "the worker to take it")
    assert os.listdir(dead) == [], "quarantined for the second link of a delivery in progress"
    [taken] = [n for n in os.listdir(pending) if n.endswith(".json")]
    assert proc.poll() is None and os.stat(os.path.join(pending, taken)).st_nlink == 2, "seen in the window"
    assert proc.wait(10) == 0, proc.stderr.read()
    wait_state(spool, "linked", "done", 10)
    assert ran.exists() and os.listdir(spool.layout.dead) == []


# ---- latency -----------------------------------------------------------------------------------------


def test_pickup_latency_of_an_idle_worker(spool, workers, tmp_path):
    workers(1)
    run_marker(spool, "warm")  # now idle, waiting for events
    for i in range(3):
        stamp = tmp_path / f"stamp{i}"
        job = json.dumps({"command": f"date +%s.%N > {stamp}", "id": f"lat{i}"}).encode()
        stage = os.path.join(spool.layout.pending, f".lat{i}")
        with open(stage, "wb") as f:
            f.write(job)
        published = time.time()
        os.rename(stage, os.path.join(spool.layout.pending, f"lat{i}.json"))
        wait_state(spool, f"lat{i}", "done", 10)
        assert float(stamp.read_text()) - published < 1.0, "a dropped job starts within a second"
    stamp = tmp_path / "stamp-api"
    published = time.time()
    spool.enqueue({"command": f"date +%s.%N > {stamp}", "id": "lat-api"})
    wait_state(spool, "lat-api", "done", 10)
    assert float(stamp.read_text()) - published < 1.0


def test_a_drop_in_with_a_very_long_name_is_adopted(spool, workers, tmp_path):
    """A name of up to 255 bytes is a valid drop-in: its moves through processing/ add prefixes,
    so it is taken under a short name there."""
    name = "x" * 240 + ".json"
    marker = tmp_path / "ran"
    drop(spool, name, json.dumps({"command": f"touch {marker}"}).encode())
    workers(1)
    wait_for(lambda: marker.exists(), 10, "the long-named drop-in to run")
    wait_for(lambda: spool.counts().done == 1, 5, "it to be done")


def test_a_queue_name_nothing_has_named_is_warned_about(run, spool):
    """`worker start --queue encod` (a typo) ran 0 jobs and exited 0, silently."""
    spool.enqueue({"command": "true", "queue": "encode"})
    r = run("worker", "start", "--burst", "-q", "--queue", "encod")
    assert r.returncode == 0 and spool.counts().pending == 1
    assert "Warning: no job, limit, pause or schedule has named queue 'encod'; did you mean 'encode'?" in r.stderr
    r = run("worker", "start", "--burst", "-q", "--queue", "encode,default")
    assert r.returncode == 0 and "Warning" not in r.stderr and spool.counts().done == 1
    # Known once anything named it: a limit, a pause, a schedule, or a job long since purged.
    assert run("queue", "set", "reports", "--concurrency", "1").returncode == 0
    assert run("schedule", "add", "nightly", "@daily", "--cmd", "true", "--queue", "nightly").returncode == 0
    assert run("purge").returncode == 0  # the encode job is gone; the attempts log remembers it
    r = run("worker", "start", "--burst", "-q", "--queue", "reports,nightly,encode")
    assert r.returncode == 0 and "Warning" not in r.stderr, r.stderr


# ---- output logs: made when there is something to put in them ---------------------------------------


def test_a_first_attempt_that_succeeds_at_once_and_writes_nothing_leaves_no_log(run, spool):
    """As cron mails nothing for a silent job: no log file (on ext4 without a journal a new file
    is a short job's largest cost). `show` still says when, how long and where, from the
    attempts log; `logs` says there is nothing."""
    silent = spool.enqueue({"command": "true"}).id
    said = spool.enqueue({"command": "echo said"}).id
    run("worker", "start", "--burst", "-q")
    assert not os.path.exists(spool.output_path(silent))
    assert open(spool.output_path(said)).read().splitlines()[1] == "said"
    shown = json.loads(run("show", silent, "--json").stdout)
    assert shown["state"] == "done" and shown["output"] is None
    assert shown["started_at"] and shown["duration"] is not None and shown["host"], shown
    assert abs(parse_iso(shown["started_at"]) - parse_iso(shown["finished_at"])) < 5, shown
    logs = run("logs", silent)
    assert logs.returncode == 0 and logs.stdout == "", logs
    assert f"(no output: job {silent} is done; it wrote nothing)" in logs.stderr


def test_a_silent_job_that_runs_on_gets_its_log_while_it_runs(spool, workers, tmp_path):
    """A silent job running past LOOK_AFTER has its header: `show` says since when and where."""
    from spoolq.store.output import LOOK_AFTER
    gate = tmp_path / "go"
    job = spool.enqueue({"command": f"while [ ! -e {gate} ]; do sleep 0.02; done"}).id
    workers(1)
    wait_state(spool, job, "processing")
    claimed = time.monotonic()
    wait_for(lambda: os.path.exists(spool.output_path(job)), 5, "its log")
    assert time.monotonic() - claimed < LOOK_AFTER + 1.5
    view = spool.find(job).to_dict()
    assert view["state"] == "processing" and view["started_at"] and view["host"], view
    gate.touch()
    wait_state(spool, job, "done")
    text = open(spool.output_path(job)).read()
    assert re.fullmatch(r"==> \S+ attempt 1 of 4 on \S+ \(worker \S+\) <==\n==> attempt finished in [0-9.]+s: ok <==\n", text), text


def test_a_silent_failure_and_the_retry_after_it_are_both_in_the_log(spool, workers, tmp_path):
    """A failure always leaves its log; the silent success of the next attempt goes on in it."""
    spool.set_config("backoff_base", 0)
    job = spool.enqueue({"command": 'test "$SPOOLQ_ATTEMPT" = 2', "max_retries": 1}).id
    workers(1)
    wait_state(spool, job, "done")
    text = open(spool.output_path(job)).read()
    assert re.fullmatch(r"==> \S+ attempt 1 of 2 on .*<==\n==> attempt finished in [0-9.]+s: exit status 1 <==\n"
                        r"==> \S+ attempt 2 of 2 on .*<==\n==> attempt finished in [0-9.]+s: ok <==\n", text), text


def test_output_that_cannot_be_kept_is_said_and_the_job_runs_once(spool, workers, tmp_path):
    """Something else at output/<id>.log (a group member's directory, say): the job runs once
    and keeps its own result; its output is dropped, and the worker says so in one line."""
    marks = tmp_path / "ran"
    os.mkdir(spool.output_path("blocked"))
    spool.enqueue({"id": "blocked", "command": f"echo said; echo x >> {marks}"})
    w = workers(1)
    wait_state(spool, "blocked", "done")
    assert marks.read_text() == "x\n"
    wait_for(lambda: "its output could not be kept" in w.output, 5, "the worker to say so")
    [line] = [x for x in w.output.splitlines() if "its output could not be kept" in x]
    assert "job blocked attempt 1" in line and "Is a directory" in line, line
    assert "Traceback" not in w.stop()


# ---- hardening: 9. the output cap holds while the job runs ---------------------------------------


@pytest.mark.review("hardening 9")
def test_the_output_cap_holds_while_the_job_writes(spool, workers):
    spool.set_config("max_output_bytes", 100_000)
    job = spool.enqueue({"command": "head -c 50000000 /dev/zero; echo the end"}).id
    workers(1)
    biggest = 0
    while spool.find(job).state != "done":
        try:
            biggest = max(biggest, os.path.getsize(spool.output_path(job)))
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    assert biggest <= 100_000 + 1000
    assert b"the end\n==> attempt finished" in open(spool.output_path(job), "rb").read()


@pytest.mark.review("hardening 9")
def test_nothing_of_a_job_outlives_it_unless_it_asks(spool, workers, tmp_path):
    late = tmp_path / "late"
    kept = tmp_path / "kept"
    first = spool.enqueue({"command": f"(sleep 0.5; touch {late}; echo late) & echo main"}).id
    second = spool.enqueue({"command": f"(sleep 0.5; touch {kept}) >/dev/null 2>&1 &", "keep_children": True}).id
    workers(1)
    wait_for(lambda: spool.find(first).state == spool.find(second).state == "done", 10, "both jobs")
    wait_for(lambda: kept.exists(), 10, "the kept child to finish its work")
    assert not late.exists()
    log = open(spool.output_path(first), "rb").read()
    assert b"late" not in log and log.rstrip().endswith(b"ok <==")


# ---- hardening: 14. the worker pool, and stopping it ---------------------------------------------


@pytest.mark.review("hardening 14")
def test_sigterm_to_one_worker_is_replaced_not_lost(spool_dir, workers):
    w = workers(2)
    victim = w.live()[0].pid
    os.kill(victim, signal.SIGTERM)
    wait_for(lambda: len(w.live()) == 2 and victim not in [x.pid for x in w.live()], 10, "a new worker")
    os.kill(w.live()[0].pid, signal.SIGTERM)
    wait_for(lambda: len(w.live()) == 2, 10, "the pool to stay at 2")
    assert w.proc.poll() is None


@pytest.mark.review("hardening 14")
@pytest.mark.slow
def test_a_stop_file_stamped_in_the_same_second_does_not_stop_new_workers(spool_dir, spool):
    assert cli(spool_dir, "worker", "stop").returncode == 0
    future = time.time() + 30  # as a 1-second file system would show: not before the registrations
    os.utime(spool.layout.stop_file, (future, future))
    r = cli(spool_dir, "worker", "start", "--detach")
    assert r.returncode == 0, r.stderr
    time.sleep(1.5)  # several of the workers' loops: none may take the old request for a new one
    assert len(spool.workers(role="worker")) == 1
    cli(spool_dir, "worker", "stop", "--wait", "--timeout", "20")


@pytest.mark.review("hardening 14")
def test_a_stop_while_workers_start_stops_them(spool_dir, spool):
    starting = subprocess.Popen([*SPOOLQ, "--spool", spool_dir, "worker", "start", "--detach", "--count", "2"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert cli(spool_dir, "worker", "stop").returncode == 0
    starting.communicate(timeout=30)
    wait_for(lambda: not spool.workers(role="worker") and not spool.workers(role="supervisor"), 20,
             "every worker to stop")


@pytest.mark.review("hardening 14")
@pytest.mark.slow
def test_the_third_ctrl_c_kills_the_running_job_and_the_attempt_counts(spool_dir, spool):
    job = spool.enqueue({"command": "sleep 60", "max_retries": 0}).id
    w = Workers(spool_dir, 1).wait_ready()
    wait_for(lambda: spool.find(job).state == "processing", 10, "the job to start")
    for _ in range(2):
        w.proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
    w.proc.send_signal(signal.SIGINT)
    log = w.stop(timeout=20)
    assert w.proc.returncode == 0
    assert f"still running: job {job}" in log
    view = spool.find(job)
    assert view.state == "dead" and "killed" in view.job.last_error and view.to_dict()["attempts"] == 1


@pytest.mark.review("hardening 14")
def test_worker_stop_now_kills_the_running_jobs(spool_dir, spool, workers):
    job = spool.enqueue({"command": "sleep 60", "max_retries": 0}).id
    w = workers(1)
    wait_for(lambda: spool.find(job).state == "processing", 10, "the job to start")
    assert cli(spool_dir, "worker", "stop", "--now", "--wait", "--timeout", "20").returncode == 0
    assert spool.find(job).state == "dead" and "worker stop --now" in spool.find(job).job.last_error
    w.stop()


# ---- hardening: 15, 16. a worker's own directory, and the processes of its jobs ------------------


@pytest.mark.review("hardening 15,16")
def test_a_worker_whose_directory_was_deleted_still_runs_jobs(spool, tmp_path):
    cwd = tmp_path / "gone"
    cwd.mkdir()
    job = spool.enqueue({"command": "true", "cwd": str(tmp_path)}).id
    proc = subprocess.Popen([*SPOOLQ, "--spool", spool.root, "worker", "start"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        cwd.rmdir()
        wait_for(lambda: spool.find(job).state in ("done", "dead"), 15, "the job")
        assert spool.find(job).state == "done", spool.find(job).job.last_error
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


# ---- hardening: what the adversarial review of this work found -----------------------------------


@pytest.mark.review("hardening this work")
def test_a_worker_that_cannot_start_ends_a_burst_with_one_line(small_fs):
    spool = Spool(os.path.join(small_fs, "spool"))
    spool.enqueue({"command": "true"})
    fill(small_fs)
    r = cli(spool.root, "worker", "start", "--burst", timeout=60)
    assert r.returncode == 1, r
    assert "Traceback" not in r.stderr, r.stderr


@pytest.mark.review("hardening this work")
def test_a_worker_that_cannot_register_on_a_full_disk_says_why_in_one_line(small_fs):
    from spoolq.running.worker import CannotStart, Worker

    spool = Spool(os.path.join(small_fs, "spool"))
    fill(small_fs)
    with pytest.raises(CannotStart) as e:
        Worker(spool, burst=True).run()
    assert str(e.value) == ("cannot use the spool: the file system is full (No space left on device); "
                            "nothing was written")


@pytest.mark.review("hardening this work")
def test_a_stop_from_another_host_with_a_clock_ahead_still_stops(spool):
    """A stop request names its host: one from another host is judged on the file system's
    clock, so a host whose clock runs ahead (or behind) cannot stop too much or too little."""
    since = spool.owners.since(time.time())
    fs_now = spool.store.fs_clock()
    with open(spool.layout.stop_file, "w") as f:  # asked on another host 1 s later, its clock 1 h ahead
        f.write(f"stop {time.time() + 3600 + 1:.6f} abcd 0000beef {fs_now + 1:.6f}\n")
    assert spool.owners.stop_requested(since) is not None
    with open(spool.layout.stop_file, "w") as f:  # asked there before we started, its clock 1 h behind
        f.write(f"stop {time.time() - 3600:.6f} abcd 0000beef {fs_now - 5:.6f}\n")
    assert spool.owners.stop_requested(since) is None

