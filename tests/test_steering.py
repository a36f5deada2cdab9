"""Steering the queue from outside: enqueue once (--if-absent), pause and resume, ..."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from conftest import SPOOLQ, wait_for
from spoolq import Spool
from spoolq.running.worker import Worker
from test_cli import clean, parse_iso, snapshot


def burst(spool: Spool) -> None:
    assert Worker(spool, burst=True, log=lambda _m: None).run() == 0


# ---- enqueue --if-absent -----------------------------------------------------------------------

@pytest.mark.parametrize("state", ["pending", "scheduled", "done", "dead"])
def test_if_absent_leaves_an_existing_job_alone_in_any_state(cli, spool, state):
    spec = {"id": "nightly", "command": "true" if state != "dead" else "false", "max_retries": 0}
    if state == "scheduled":
        spec["delay"] = 3600
    spool.enqueue(spec)
    if state in ("done", "dead"):
        burst(spool)
    assert spool.find("nightly").state == state
    before = snapshot(spool.root)
    result = clean(cli("enqueue", "--id", "nightly", "--if-absent", "--cmd", "echo other"))
    assert result.stdout == "nightly\n"
    assert snapshot(spool.root) == before  # nothing written, nothing moved
    obj = json.loads(clean(cli("enqueue", "--if-absent", "--json", '{"id": "nightly", "command": "x"}')).stdout)
    assert (obj["existed"], obj["state"], obj["command"]) == (True, state, spec["command"])


def test_if_absent_enqueues_an_absent_job(cli, spool):
    obj = json.loads(clean(cli("enqueue", "--id", "fresh", "--if-absent", "--json", "--cmd", "echo hi")).stdout)
    assert (obj["existed"], obj["state"]) == (False, "pending")
    assert spool.find("fresh").job.command == "echo hi"


@pytest.mark.parametrize("args, input, line", [
    (("--cmd", "true"), None, ""),
    (('{"command": "true"}',), None, ""),
    (("--batch", "-"), '{"command": "a", "id": "x1"}\n{"command": "b"}\n', "line 2: "),
])
def test_if_absent_without_an_id_writes_nothing(cli, spool, args, input, line):
    before = snapshot(spool.root)
    result = clean(cli("enqueue", "--if-absent", *args, input=input), 2)
    assert result.output == f"Error: {line}--if-absent needs the job's id (--id, or \"id\" in the JSON); " \
                            "nothing was enqueued\n"
    assert snapshot(spool.root) == before


def test_if_absent_batch_skips_existing_lines_and_publishes_the_rest(cli, spool):
    spool.enqueue({"id": "b", "command": "echo old"})
    batch = "".join(json.dumps({"id": i, "command": f"echo {i}"}) + "\n" for i in ("a", "b", "c"))
    result = clean(cli("enqueue", "--batch", "-", "--if-absent", "--json", input=batch))
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(o["id"], o["existed"]) for o in lines] == [("a", False), ("b", True), ("c", False)]
    assert [spool.find(i).job.command for i in "abc"] == ["echo a", "echo old", "echo c"]
    assert clean(cli("enqueue", "--batch", "-", "--if-absent", input=batch)).stdout == "a\nb\nc\n"
    assert cli.json("status")["pending"] == 3


def test_if_absent_from_many_processes_at_once_makes_one_job(spool):
    procs = [subprocess.Popen([*SPOOLQ, "--spool", spool.root, "enqueue", "--id", "once", "--if-absent",
                               "--cmd", f"echo {i}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(8)]
    results = [(p.wait(60), *p.communicate()) for p in procs]
    assert results == [(0, "once\n", "")] * 8
    assert [v.id for v in spool.list_jobs()] == ["once"]


# ---- pause / resume ----------------------------------------------------------------------------

def test_pause_and_resume_are_shown_by_status(cli, spool):
    assert cli.json("status")["paused"] is False
    assert clean(cli("status")).stdout.splitlines()[-1].split() == ["paused", "no"]
    assert clean(cli("pause")).stdout == "paused: every queue\n"
    assert cli.json("status")["paused"] is True
    assert clean(cli("status")).stdout.splitlines()[-1].split() == ["paused", "yes"]
    assert json.loads(clean(cli("pause", "--json")).stdout) == {"paused": True}  # twice: still paused
    assert clean(cli("resume")).stdout == "not paused\n"
    assert cli.json("status")["paused"] is False
    assert not os.path.exists(os.path.join(spool.root, "control", "pause"))


def test_a_paused_spool_takes_jobs_but_runs_none_until_resumed(cli, spool):
    clean(cli("pause"))
    job = spool.enqueue({"command": "true"})
    log: list[str] = []
    assert Worker(spool, burst=True, log=log.append).run() == 0
    assert spool.find(job.id).state == "pending"
    assert any("paused" in line for line in log), log
    clean(cli("resume"))
    burst(spool)
    assert spool.find(job.id).state == "done"


@pytest.mark.parametrize("content, paused", [
    (b"", True),  # touch control/pause
    (b"*\n", True),
    (b"garbage that names \xff no queue!\n", True),
    (b"\x00\x01", True),
    (b"reports\n", ["reports"]),
    (b" reports \n\nmail\n", ["mail", "reports"]),
    (b"reports\n!!bad!!\nmail\n", True),  # a line it cannot read: every queue waits
    (b"reports mail\n", True),
])
def test_a_pause_file_written_by_hand(cli, spool, content, paused):
    with open(os.path.join(spool.root, "control", "pause"), "wb") as f:
        f.write(content)
    assert cli.json("status")["paused"] == paused


def test_a_pause_file_that_is_not_a_regular_file_pauses_everything(cli, spool, tmp_path):
    os.symlink(tmp_path / "elsewhere", os.path.join(spool.root, "control", "pause"))
    assert cli.json("status")["paused"] is True
    clean(cli("resume"))
    assert cli.json("status")["paused"] is False and not (tmp_path / "elsewhere").exists()


@pytest.mark.slow
def test_pause_reaches_running_workers_and_running_jobs_finish(cli, spool, workers, tmp_path):
    spool.set_config("poll_interval", 0.2)
    w = workers(2)
    gate = tmp_path / "gate"
    running = spool.enqueue({"command": f"while [ ! -e {gate} ]; do sleep 0.01; done"})
    wait_for(lambda: spool.find(running.id).state == "processing", 10, "the job to start")
    clean(cli("pause"))
    later = [spool.enqueue({"command": "true"}).id for _ in range(3)]
    gate.touch()
    wait_for(lambda: spool.find(running.id).state == "done", 10, "the running job to finish")
    time.sleep(1.0)  # five poll intervals in which a worker that ignored the pause would claim
    assert [spool.find(j).state for j in later] == ["pending"] * 3
    clean(cli("resume"))
    wait_for(lambda: all(spool.find(j).state == "done" for j in later), 10, "the jobs to run after resume")
    w.stop()


# ---- cancel ------------------------------------------------------------------------------------

def test_cancel_sends_jobs_that_have_not_started_to_dead_for_good(cli, spool, tmp_path):
    ran = tmp_path / "ran"
    spool.enqueue({"id": "p", "command": f"echo p >> {ran}", "max_retries": 5})
    spool.enqueue({"id": "s", "command": f"echo s >> {ran}", "delay": 3600})
    result = clean(cli("cancel", "p", "s"))
    assert result.stdout == "p: cancelled\ns: cancelled\n"
    for job_id in ("p", "s"):
        view = cli.json("show", job_id)
        assert (view["state"], view["last_error"], view["attempts"]) == ("dead", "cancelled", 0)
    burst(spool)
    assert not ran.exists()  # never run, never retried
    assert cli.json("status")["dead"] == 2


def test_cancel_says_which_it_could_not_cancel_and_cancels_the_rest(cli, spool):
    spool.enqueue({"id": "ok", "command": "true"})
    burst(spool)
    spool.enqueue({"id": "p", "command": "true"})
    result = clean(cli("cancel", "nope", "ok", "p"), 1)
    assert result.stdout == "p: cancelled\n"
    assert result.stderr == "Error: nope: no such job\nError: ok: already done: not cancelled\n"
    assert spool.find("p").state == "dead" and spool.find("ok").state == "done"
    out = json.loads(clean(cli("cancel", "--json", "nope", "ok", "p"), 1).stdout)
    assert out == [{"id": "nope", "outcome": "unknown", "state": None},
                   {"id": "ok", "outcome": "finished", "state": "done"},
                   {"id": "p", "outcome": "finished", "state": "dead"}]


@pytest.mark.parametrize("args", [(), ("",), (".bad",)])
def test_cancel_refuses_a_bad_id_before_touching_anything(cli, spool, args):
    spool.enqueue({"id": "p", "command": "true"})
    before = snapshot(spool.root)
    clean(cli("cancel", *args), 2)
    assert snapshot(spool.root) == before


def test_a_running_job_is_left_alone_without_kill_and_killed_with_it(cli, spool, workers, tmp_path):
    child = tmp_path / "child.pid"
    job = spool.enqueue({"command": f"sleep 60 & echo $! > {child}; wait", "max_retries": 3})
    w = workers(1)
    wait_for(lambda: child.exists() and child.read_text().strip(), 10, "the job to start")
    result = clean(cli("cancel", job.id), 1)
    assert result.stderr == f"Error: {job.id}: running: left alone (--kill kills it)\n"
    assert spool.find(job.id).state == "processing"
    result = clean(cli("cancel", "--kill", job.id))
    assert result.stdout == f"{job.id}: killed by its worker: cancelled\n"
    view = spool.find(job.id)
    assert (view.state, view.job.last_error, view.job.attempts) == ("dead", "cancelled", 1)  # not retried
    pid = int(child.read_text())
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z",
             10, "the job's own child to be killed too")
    assert "cancelled" in open(spool.output_path(job.id)).read()
    w.stop()
    assert not [n for n in os.listdir(spool.layout.processing) if os.listdir(spool.layout.owned(n))]


def test_a_rescuer_honours_a_kill_request_its_dead_worker_never_saw(spool):
    from conftest import dead_pid
    from spoolq.moves.cancel import attempt_token, mark_name

    spool.enqueue({"id": "held", "command": "true", "max_retries": 5})
    owner = spool.owners.register("worker")
    claimed = spool.transitions.claim(os.listdir(spool.layout.pending)[0], owner)
    with open(os.path.join(spool.layout.owned(owner), mark_name("held")), "wb") as f:
        f.write(attempt_token(claimed.job))
    record = json.loads(open(spool.layout.worker_file(owner)).read())
    record.update(pid=dead_pid(), start=None)
    with open(spool.layout.worker_file(owner), "w") as f:
        json.dump(record, f)
    burst(spool)
    view = spool.find("held")
    assert (view.state, view.job.last_error) == ("dead", "cancelled")


def test_a_kill_request_for_an_earlier_run_of_the_job_is_ignored(spool, tmp_path):
    from spoolq.moves.cancel import mark_name

    spool.enqueue({"id": "again", "command": f"echo ran >> {tmp_path}/ran"})
    owner = spool.owners.register("worker")
    stale = os.path.join(spool.layout.owned(owner), mark_name("again"))
    with open(stale, "wb") as f:
        f.write(b"1 1\n")  # another seq: a mark left for a run before a requeue
    from spoolq.moves.cancel import KillRequest
    claimed = spool.transitions.claim(os.listdir(spool.layout.pending)[0], owner)
    assert not KillRequest(claimed.path, claimed.job).asked()


def test_cancel_against_claims_at_the_same_instant_exactly_one_wins_and_says_so(spool, tmp_path):
    """Many jobs, two workers claiming them while one cancel takes the same ids: each job either
    ran once (the cancel reports it running or finished) or never ran (reported cancelled)."""
    ran = tmp_path / "ran"
    ids = [spool.enqueue({"id": f"j{i}", "command": f"echo j{i} >> {ran}"}).id for i in range(200)]
    log = tmp_path / "workers.log"
    with open(log, "wb") as out:  # kept: what the workers said, should they fail
        procs = [subprocess.Popen([*SPOOLQ, "--spool", spool.root, "worker", "start", "--burst", "--count", "2", "-q"],
                                  stdout=subprocess.DEVNULL, stderr=out)]
    cancel = subprocess.run([*SPOOLQ, "--spool", spool.root, "cancel", "--json", *ids], capture_output=True,
                            text=True, timeout=120)
    for p in procs:
        assert p.wait(120) == 0, log.read_text()
    said = {r["id"]: r["outcome"] for r in json.loads(cancel.stdout)}
    runs = ran.read_text().split() if ran.exists() else []
    assert len(runs) == len(set(runs))  # nothing ran twice
    for job_id in ids:
        view = spool.find(job_id)
        if said[job_id] == "cancelled":
            assert job_id not in runs and (view.state, view.job.last_error) == ("dead", "cancelled"), job_id
        else:
            assert said[job_id] in ("running", "finished") and job_id in runs and view.state == "done", job_id


# ---- requeue, purge ID…, logs -f ---------------------------------------------------------------

def test_requeue_runs_finished_jobs_again_from_the_back_keeping_their_output(cli, spool, tmp_path):
    spool.enqueue({"id": "ok", "command": "echo run"})
    spool.enqueue({"id": "bad", "command": "echo fail; exit 3", "max_retries": 0})
    burst(spool)
    spool.enqueue({"id": "queued", "command": "true"})  # requeued jobs go behind this one
    result = clean(cli("requeue", "ok", "bad"))
    assert result.stdout == "ok: pending again\nbad: pending again\n"
    views = {v.id: v for v in spool.list_jobs(state="pending")}
    assert [v.id for v in spool.list_jobs(state="pending")] == ["queued", "ok", "bad"]
    assert (views["bad"].job.attempts, views["bad"].job.exit_code) == (0, None)
    burst(spool)
    assert open(spool.output_path("ok")).read().count("run\n") == 2  # both runs' output kept
    assert spool.find("bad").state == "dead" and spool.find("ok").state == "done"


def test_requeue_says_which_it_could_not_requeue_and_requeues_the_rest(cli, spool):
    spool.enqueue({"id": "ok", "command": "true"})
    burst(spool)
    spool.enqueue({"id": "waiting", "command": "true"})
    result = clean(cli("requeue", "nope", "waiting", "ok"), 1)
    assert result.stdout == "ok: pending again\n"
    assert result.stderr == "Error: no job 'nope'\nError: job waiting is pending, not done or dead\n"
    out = json.loads(clean(cli("requeue", "--json", "waiting"), 1).stdout)
    assert out == [{"id": "waiting", "ok": False, "error": "job waiting is pending, not done or dead"}]


def test_purge_by_id_frees_exactly_those_ids(cli, spool):
    for job_id in ("a", "b", "c"):
        spool.enqueue({"id": job_id, "command": f"echo {job_id}"})  # output: each has a log
    burst(spool)
    spool.enqueue({"id": "p", "command": "true"})  # pending: purged too, never run
    spool.enqueue({"id": "w", "command": "true", "after": ["p"], "delay": 3600})
    result = clean(cli("purge", "a", "w", "nope", "c"), 1)
    assert result.stdout == "a: purged\nc: purged\n"
    assert "job w is waiting, not finished or pending (cancel it first)" in result.stderr, result.stderr
    assert "no job 'nope'" in result.stderr
    assert [v.id for v in spool.list_jobs()] == ["p", "w", "b"]
    assert not os.path.exists(spool.output_path("a")) and os.path.exists(spool.output_path("b"))
    clean(cli("enqueue", "--id", "a", "true"))  # the id is free again
    clean(cli("purge", "b", "--state", "done"), 2)  # ids, or a state: not both
    assert json.loads(clean(cli("purge", "--json")).stdout) == {"purged": 1, "state": "done", "kept": 0}


@pytest.mark.slow
def test_logs_follow_prints_output_as_it_comes_and_exits_as_wait_would(spool, workers, tmp_path):
    gate = tmp_path / "gate"
    job = spool.enqueue({"command": f"echo first; while [ ! -e {gate} ]; do sleep 0.01; done; echo second"})
    failing = spool.enqueue({"command": "echo oops; exit 1", "max_retries": 1})
    follow = subprocess.Popen([*SPOOLQ, "--spool", spool.root, "logs", "-f", job.id], stdout=subprocess.PIPE,
                              text=True)
    workers(1)
    assert follow.stdout.readline().startswith("==> ")  # the attempt's header
    assert follow.stdout.readline() == "first\n"  # while the job still runs
    assert follow.poll() is None
    gate.touch()
    rest, _ = follow.communicate(timeout=20)
    assert rest.startswith("second\n") and follow.returncode == 0
    dead = subprocess.run([*SPOOLQ, "--spool", spool.root, "logs", "--follow", failing.id], capture_output=True,
                          text=True, timeout=60)
    assert dead.returncode == 1 and dead.stdout.count("oops\n") == 2 and dead.stderr == f"Error: dead: {failing.id}\n"


# ---- queues ------------------------------------------------------------------------------------

def test_a_job_belongs_to_a_queue_which_its_pending_name_says(cli, spool):
    clean(cli("enqueue", "--queue", "video", "--id", "v", "true"))
    clean(cli("enqueue", "--id", "d", "true"))
    names = sorted(os.listdir(spool.layout.pending))
    assert [n.split("@")[1] for n in names] == ["v%video.json", "d.json"]
    assert (cli.json("show", "v")["queue"], cli.json("show", "d")["queue"]) == ("video", "default")
    assert [j["queue"] for j in cli.json("list")] == ["video", "default"]
    clean(cli("cancel", "v"))  # found, and taken, under its longer name
    assert spool.find("v").state == "dead"


@pytest.mark.parametrize("queue", [".hidden", "a b", "x" * 65, "slash/no", "per%cent", ""])
def test_a_bad_queue_name_writes_nothing(cli, spool, queue):
    before = snapshot(spool.root)
    clean(cli("enqueue", "--queue", queue, "true"), 2)
    clean(cli("enqueue", json.dumps({"command": "true", "queue": queue})), 2)
    assert snapshot(spool.root) == before
    clean(cli("worker", "start", "--burst", "--queue", queue or ","), 2)


def test_the_longest_id_in_the_longest_queue_name_runs(spool):
    job = spool.enqueue({"id": "i" * 128, "queue": "q" * 64, "command": "true"})
    assert len(os.listdir(spool.layout.pending)[0]) <= 255
    burst(spool)
    assert spool.find(job.id).state == "done"


def test_a_dropped_file_may_name_its_queue(spool, tmp_path):
    with open(os.path.join(spool.layout.pending, "drop.json"), "w") as f:
        f.write('{"command": "true", "queue": "mail"}')
    log: list[str] = []
    assert Worker(spool, burst=True, log=log.append, queues=frozenset({"mail"})).run() == 0
    [view] = spool.list_jobs()
    assert (view.state, view.job.queue) == ("done", "mail")


def test_workers_take_only_their_queues_in_priority_then_fifo_order(spool, tmp_path):
    ran = tmp_path / "ran"
    for job_id, queue, priority in [("a1", "a", 0), ("b1", "b", 0), ("c1", "c", 0), ("a2", "a", 5), ("b2", "b", 0)]:
        spool.enqueue({"id": job_id, "queue": queue, "priority": priority, "command": f"echo {job_id} >> {ran}"})
    assert Worker(spool, burst=True, log=lambda _m: None, queues=frozenset({"a", "b"})).run() == 0
    assert ran.read_text().split() == ["a2", "a1", "b1", "b2"]
    assert spool.find("c1").state == "pending"


def test_pausing_one_queue_passes_over_its_jobs_and_runs_the_others(cli, spool, tmp_path):
    ran = tmp_path / "ran"
    for job_id, queue in [("v1", "video"), ("m1", "mail"), ("v2", "video"), ("m2", "mail")]:
        spool.enqueue({"id": job_id, "queue": queue, "command": f"echo {job_id} >> {ran}"})
    assert clean(cli("pause", "--queue", "video")).stdout == "paused: video\n"
    assert cli.json("status")["paused"] == ["video"]
    burst(spool)
    assert ran.read_text().split() == ["m1", "m2"]
    rows = {r["queue"]: r for r in cli.json("queue", "list")}
    assert (rows["video"]["pending"], rows["video"]["paused"], rows["mail"]["done"], rows["mail"]["paused"]) == \
        (2, True, 2, False)
    clean(cli("pause"))  # the whole spool, too
    assert clean(cli("resume", "--queue", "video")).stdout == "paused: every queue\n"  # still: the spool is
    log: list[str] = []
    assert Worker(spool, burst=True, log=log.append, queues=frozenset({"video"})).run() == 0
    assert any("paused" in line and "leaving" in line for line in log), log
    assert clean(cli("resume")).stdout == "not paused\n"
    burst(spool)
    assert ran.read_text().split() == ["m1", "m2", "v1", "v2"]


def test_queue_list_and_worker_list(cli, spool, workers):
    assert clean(cli("queue", "list")).stdout == "no queues\n"
    spool.enqueue({"id": "s", "queue": "reports", "command": "true", "delay": 3600})
    w = workers(1, extra=("--queue", "reports,mail"))
    [row] = cli.json("queue", "list")
    assert row == {"queue": "reports", "pending": 0, "scheduled": 1, "waiting": 0, "processing": 0, "done": 0,
                   "dead": 0, "paused": False, "concurrency": None, "slots_in_use": 0}
    [info] = cli.json("worker", "list")
    assert info["queues"] == ["mail", "reports"]
    assert "mail,reports" in clean(cli("worker", "list")).stdout
    w.stop()


# ---- concurrency limits ------------------------------------------------------------------------

def concurrency_job(marks, job_id: str) -> dict:
    """A job that says how many jobs of its kind ran at once while it did: each makes its mark, looks
    at all the marks after a pause, and removes its own."""
    return {"id": job_id, "command": f"mkdir {marks}/{job_id}; sleep 0.05; ls {marks} | wc -l >> {marks}.seen; "
                                     f"rmdir {marks}/{job_id}"}


def test_a_queue_limit_holds_across_workers_and_other_queues_run_freely(cli, spool, workers, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    assert clean(cli("queue", "set", "enc", "--concurrency", "2")).stdout == "enc: at most 2 at once\n"
    ids = [spool.enqueue({**concurrency_job(marks, f"e{i}"), "queue": "enc"}).id for i in range(12)]
    free = [spool.enqueue({"command": "true"}).id for _ in range(5)]
    w = workers(4)
    wait_for(lambda: all(spool.find(j).state == "done" for j in ids + free), 30, "every job to run")
    seen = [int(n) for n in (tmp_path / "marks.seen").read_text().split()]
    assert len(seen) == 12 and max(seen) <= 2, seen
    row = next(r for r in cli.json("queue", "list") if r["queue"] == "enc")
    assert (row["concurrency"], row["slots_in_use"], row["done"]) == (2, 0, 12)
    w.stop()


@pytest.mark.parametrize("args", [("enc",), ("enc", "--concurrency", "-1"), ("bad name", "--concurrency", "1"),
                                  ("a,b", "--concurrency", "1"), ("enc", "--concurrency", "x")])
def test_queue_set_refuses_bad_input_and_writes_nothing(cli, spool, args):
    before = snapshot(spool.root)
    clean(cli("queue", "set", *args), 2)
    assert snapshot(spool.root) == before


def test_lowering_and_removing_a_limit(cli, spool):
    clean(cli("queue", "set", "enc", "--concurrency", "3"))
    assert sorted(os.listdir(spool.layout.dir("slots"))) == ["enc%0", "enc%1", "enc%2"]
    held = spool.slots.take("enc", "someone")
    clean(cli("queue", "set", "enc", "--concurrency", "1"))
    assert sorted(os.listdir(spool.layout.dir("slots"))) == [held]  # the held one stays until given back
    spool.slots.give_back(held)
    assert sorted(os.listdir(spool.layout.dir("slots"))) == ["enc%0"]
    assert clean(cli("queue", "set", "enc", "--concurrency", "0")).stdout == "enc: no limit\n"
    assert os.listdir(spool.layout.dir("slots")) == [] and spool.slots.limits() == {}


def test_a_slot_held_by_a_dead_worker_is_given_back_by_recovery(cli, spool):
    from conftest import dead_pid

    clean(cli("queue", "set", "enc", "--concurrency", "1"))
    owner = spool.owners.register("worker")
    assert spool.slots.take("enc", owner) is not None
    record = json.loads(open(spool.layout.worker_file(owner)).read())
    record.update(pid=dead_pid(), start=None)
    with open(spool.layout.worker_file(owner), "w") as f:
        json.dump(record, f)
    job = spool.enqueue({"queue": "enc", "command": "true"})
    burst(spool)  # its recovery sweep gives the slot back, then the job takes it
    assert spool.find(job.id).state == "done" and os.listdir(spool.layout.dir("slots")) == ["enc%0"]


@pytest.mark.parametrize("content", [b"enc two\n", b"enc 0\n", b"\xff\xfe", b"enc 99999999\n", b".x 1\n"])
def test_a_limits_file_edited_into_garbage_limits_nothing(spool, content, tmp_path):
    with open(os.path.join(spool.layout.dir("control"), "limits"), "wb") as f:
        f.write(content)
    assert spool.slots.limits() == {}
    job = spool.enqueue({"queue": "enc", "command": "true"})
    burst(spool)
    assert spool.find(job.id).state == "done"


# ---- when a job ran ------------------------------------------------------------------------------

def test_show_and_list_say_when_the_last_attempt_ran(cli, spool, workers, tmp_path):
    gate = tmp_path / "gate"
    job = spool.enqueue({"command": f"while [ ! -e {gate} ]; do sleep 0.01; done"})
    before = cli.json("show", job.id)
    assert (before["started_at"], before["finished_at"], before["duration"]) == (None, None, None)
    w = workers(1)
    wait_for(lambda: spool.find(job.id).state == "processing", 10, "the job to start")
    wait_for(lambda: cli.json("show", job.id)["started_at"], 10, "its start to be logged")
    running = cli.json("show", job.id)
    assert running["finished_at"] is None and running["duration"] is None
    gate.touch()
    wait_for(lambda: spool.find(job.id).state == "done", 10, "the job to finish")
    done = next(j for j in cli.json("list") if j["id"] == job.id)
    started, finished = parse_iso(done["started_at"]), parse_iso(done["finished_at"])
    assert done["started_at"] == running["started_at"] and 0 < done["duration"] <= finished - started + 0.01
    w.stop()


@pytest.mark.parametrize("started, seconds, shown", [
    (99.990, 0.013, 100.003),  # the move's ctime, from the coarse clock, came 3 ms before the end
    (99.000, 0.500, 100.000),  # ended before the move: the move
    (104.000, 0.500, 100.000),  # a host whose clock is ahead: the move
    (None, None, 100.000),  # nothing known of the attempt: the move
])
def test_a_finished_job_is_never_shown_finishing_before_its_attempt_ended(started, seconds, shown):
    from spoolq.format.job import from_dict
    from spoolq.reading.views import JobView
    from spoolq.store.output import LastAttempt

    job = from_dict({"id": "j1", "command": "true", "created_at": "2026-01-01T00:00:00Z",
                         "updated_at": "2026-01-01T00:00:00Z"}, now=0.0, default_max_retries=3)
    out = JobView("j1", "done", job, "/x", changed_at=100.0, last_attempt=LastAttempt(started, seconds, "h")).to_dict()
    assert parse_iso(out["finished_at"]) == pytest.approx(shown, abs=0.0005)
    assert out["updated_at"] == out["finished_at"]


# ---- dependencies (--after) --------------------------------------------------------------------

def test_a_job_after_others_waits_until_they_are_done(cli, spool, tmp_path):
    ran = tmp_path / "ran"
    clean(cli("enqueue", "--id", "a", f"echo a >> {ran}"))
    clean(cli("enqueue", "--id", "b", "--after", "a", f"echo b >> {ran}"))
    clean(cli("enqueue", "--id", "c", "--after", "b,a", "--priority", "9", f"echo c >> {ran}"))
    assert cli.json("status")["waiting"] == 2 and cli.json("status")["pending"] == 1
    assert [j["id"] for j in cli.json("list", "--state", "waiting")] == ["b", "c"]
    assert cli.json("show", "c")["after"] == ["b", "a"] and cli.json("show", "c")["state"] == "waiting"
    assert not [n for n in os.listdir(spool.layout.pending) if "@b" in n or "@c" in n]  # never seen by claims
    assert clean(cli("fsck")).stdout.endswith(": clean\n")
    burst(spool)
    assert ran.read_text().split() == ["a", "b", "c"]
    assert os.listdir(spool.layout.dir("after")) == [] and os.listdir(spool.layout.dir("waiting")) == []
    clean(cli("enqueue", "--id", "d", "--after", "a", "true"))  # an already-done one is satisfied at once
    assert spool.find("d").state == "pending"


def test_when_a_job_dies_what_waits_for_it_dies_too_naming_it(cli, spool, tmp_path):
    ran = tmp_path / "ran"
    spool.enqueue({"id": "f", "command": "exit 1", "max_retries": 0})
    clean(cli("enqueue", "--id", "g", "--after", "f", f"echo g >> {ran}"))
    clean(cli("enqueue", "--id", "h", "--after", "g", f"echo h >> {ran}"))
    burst(spool)
    assert not ran.exists()
    assert [(spool.find(j).state, spool.find(j).job.last_error) for j in "gh"] == \
        [("dead", "dependency f is dead"), ("dead", "dependency g is dead")]
    clean(cli("enqueue", "--id", "k", "--after", "f", "true"))  # after a dead one: dead at once
    assert spool.find("k").job.last_error == "dependency f is dead"


def test_cancelling_a_job_or_its_dependency(cli, spool):
    spool.enqueue({"id": "a", "command": "true"})
    clean(cli("enqueue", "--id", "b", "--after", "a", "true"))
    clean(cli("enqueue", "--id", "w", "--after", "a", "true"))
    assert clean(cli("cancel", "w")).stdout == "w: cancelled\n"  # a waiting job
    assert spool.find("w").job.last_error == "cancelled"
    assert os.listdir(os.path.join(spool.layout.dir("after"), "a")) == ["b"]  # w's edge went with it
    clean(cli("cancel", "a"))  # what waits for it goes with it
    assert (spool.find("b").state, spool.find("b").job.last_error) == ("dead", "dependency a is dead")


def test_a_batch_may_wait_for_its_own_lines(cli, spool, tmp_path):
    ran = tmp_path / "ran"
    lines = [{"id": "x", "command": f"echo x >> {ran}"}, {"id": "y", "after": ["x"], "command": f"echo y >> {ran}"}]
    clean(cli("enqueue", "--batch", "-", input="".join(json.dumps(line) + "\n" for line in lines)))
    assert spool.find("y").state == "waiting"
    burst(spool)
    assert ran.read_text().split() == ["x", "y"]


@pytest.mark.parametrize("args", [
    ("--after", "nope", "true"),
    ("--after", "a,nope", "true"),
    ("--after", ".bad", "true"),
    ("--id", "self", "--after", "self", "true"),
    ('{"command": "true", "after": ["a", "a"]}',),  # the flags' `a,a` counts a once (test_review_s6.py)
    ('{"command": "true", "after": "a"}',),
    ('{"command": "true", "after": [1]}',),
])
def test_a_bad_after_writes_nothing(cli, spool, args):
    spool.enqueue({"id": "a", "command": "true"})
    before = snapshot(spool.root)
    clean(cli("enqueue", *args), 2)
    assert snapshot(spool.root) == before


def _a_done_without_waking_b(spool) -> None:
    """b waits for a; a is finished as a crash just after its move would leave it: b not woken."""
    spool.enqueue({"id": "a", "command": "true"})
    spool.enqueue({"id": "b", "command": "true", "after": ["a"]})
    owner = spool.owners.register("worker")
    claimed = spool.transitions.claim(os.listdir(spool.layout.pending)[0], owner)
    os.rename(claimed.path, os.path.join(spool.layout.done, "a.json"))  # done, and then the crash: no one woke b
    spool.owners.unregister(owner)


def test_a_wake_up_lost_in_a_crash_is_found_by_recovery(spool):
    _a_done_without_waking_b(spool)
    assert spool.find("b").state == "waiting"
    burst(spool)  # a worker's first recovery sweep looks through after/
    assert spool.find("b").state == "done"


def test_a_spool_made_before_queues_limits_and_dependencies_is_whole(cli, spool):
    for name in ("waiting", "after", "slots"):
        os.rmdir(spool.layout.dir(name))
    spool.enqueue({"id": "a", "command": "true"})
    assert clean(cli("fsck")).stdout.endswith(": clean\n")
    assert cli.json("status")["waiting"] == 0 and clean(cli("list", "--state", "waiting")).stdout == "no waiting jobs\n"
    clean(cli("enqueue", "--id", "b", "--after", "a", "true"))  # made when first needed
    clean(cli("queue", "set", "enc", "--concurrency", "1"))
    burst(spool)
    assert spool.find("b").state == "done"


def test_wait_for_everything_counts_waiting_jobs(cli, spool):
    spool.enqueue({"id": "later", "command": "true", "delay": 3600})
    clean(cli("enqueue", "--id", "w", "--after", "later", "true"))
    result = clean(cli("wait", "--timeout", "0.2"), 124)
    assert "0 pending, 1 scheduled, 1 waiting, 0 processing" in result.output


def test_fsck_finds_and_repairs_a_lost_wake_up_and_a_stale_edge(cli, spool):
    _a_done_without_waking_b(spool)
    os.makedirs(os.path.join(spool.layout.dir("after"), "a"), exist_ok=True)
    open(os.path.join(spool.layout.dir("after"), "a", "gone"), "w").close()  # an edge whose waiter is gone
    report = json.loads(clean(cli("fsck", "--json"), 1).stdout)
    assert sorted(p["kind"] for p in report["problems"]) == ["stale-edge", "stuck-waiting"], report
    repaired = clean(cli("fsck", "--repair"))  # every problem repaired: exit 0
    assert repaired.stdout.endswith("2 problems found, 2 repaired; the spool is clean now\n"), repaired.stdout
    assert spool.find("b").state == "pending"
    assert clean(cli("fsck")).stdout.endswith(": clean\n")


def _finish_and_wake(spool, job_id: str) -> None:
    """What a worker does with one pending job: claim it, finish it done (which judges what waits for it)."""
    from spoolq.format import layout

    owner = spool.owners.register("worker")
    entry = next(e for e in spool.store.shards.entries() if getattr(layout.parse_pending(e), "job_id", None) == job_id)
    claimed = spool.transitions.claim(entry, owner)
    spool.transitions.finish(claimed, ok=True, exit_code=0, error=None)
    spool.owners.unregister(owner)


def _fsck_clean(spool, _job_id: str) -> None:
    """An enqueue at work, between its edges and its file, is no problem to fsck."""
    from spoolq import fsck

    assert fsck.check(spool) == []


def _purge(spool, job_id: str) -> None:
    spool.purge_ids([job_id])


def _requeue(spool, job_id: str) -> None:
    assert spool.requeue([job_id]) == {job_id: None}


@pytest.mark.parametrize("meanwhile", [
    (_finish_and_wake, _purge),  # a finishes and is purged between b's edge and b's file
    (_finish_and_wake, _requeue),  # a finishes and is requeued: b waits for the requeued run
    (_purge,),  # a purge of a, done before: it keeps a while b is being enqueued; b runs once c has
])
def test_a_dependency_that_finishes_is_purged_or_requeued_during_an_enqueue_strands_no_one(spool, meanwhile):
    spool.enqueue({"id": "c", "command": "true"})
    spool.enqueue({"id": "a", "command": "true"})
    if meanwhile == (_purge,):
        _finish_and_wake(spool, "a")
    # The enqueue is held once its edges are made and its file is staged, just before the file
    # is published (`announce`): the other steps come then, as another process's would.
    spool.enqueue_many([{"id": "b", "command": "true", "after": ["a", "c"]}],
                       announce=lambda: [step(spool, "a") for step in (*meanwhile, _fsck_clean)])
    burst(spool)
    assert spool.find("b").state == "done"
    assert os.listdir(spool.layout.dir("after")) == [] and os.listdir(spool.layout.dir("waiting")) == []


def test_a_dependency_purged_before_its_edge_is_made_refuses_the_enqueue(spool):
    """The enqueue's own steps: its check, a purge by another process, then the publishing."""
    from spoolq.format.errors import JobNotFound

    spool.enqueue({"id": "c", "command": "true"})
    spool.enqueue({"id": "a", "command": "true"})
    _finish_and_wake(spool, "a")
    jobs = [spool.make_job({"id": "b", "command": "true", "after": ["a", "c"]})]
    spool.check_after(jobs)  # a is done
    _purge(spool, "a")
    before = snapshot(spool.root)
    with pytest.raises(JobNotFound, match="after: job 'a' was purged meanwhile"):
        spool.publisher.publish(jobs)
    assert snapshot(spool.root) == before  # no edge, no file, the id free
    assert spool.enqueue({"id": "b", "command": "true"}).id == "b"


def test_an_enqueue_that_is_taken_back_leaves_no_edge(spool):
    spool.enqueue({"id": "a", "command": "true"})
    before = snapshot(spool.root)

    def cannot_announce() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        spool.enqueue_many([{"id": "b", "command": "true", "after": ["a"]}], announce=cannot_announce)
    assert snapshot(spool.root) == before


def test_fsck_finds_a_waiter_whose_dependency_is_gone_or_whose_edge_is_missing(cli, spool):
    spool.enqueue({"id": "a", "command": "true"})
    spool.enqueue({"id": "c", "command": "true"})
    spool.enqueue({"id": "b", "command": "true", "after": ["a"]})
    spool.enqueue({"id": "d", "command": "true", "after": ["c"]})
    os.unlink(spool.find("a").path)  # a gone from under b, as a hand (or an older spoolq's purge) could
    os.unlink(spool.layout.id_marker("a"))
    os.unlink(os.path.join(spool.layout.dir("after"), "c", "d"))  # c's finish would not wake d
    report = json.loads(clean(cli("fsck", "--json"), 1).stdout)
    assert sorted(p["kind"] for p in report["problems"]) == ["gone-dependency", "missing-edge"], report
    clean(cli("fsck", "--repair"), 0)  # it repaired all it found
    assert (spool.find("b").state, spool.find("b").job.last_error) == ("dead", "dependency a is gone")
    assert clean(cli("fsck")).stdout.endswith(": clean\n")
    burst(spool)
    assert spool.find("d").state == "done"
    assert os.listdir(spool.layout.dir("after")) == []


# ---- found by an adversarial review ------------------------------------------------------------

def test_a_dependency_requeued_or_purged_strands_no_one(cli, spool, tmp_path):
    ran = tmp_path / "ran"
    spool.enqueue({"id": "a", "command": f"echo a >> {ran}"})
    spool.enqueue({"id": "b", "queue": "slow", "command": f"echo b >> {ran}"})
    clean(cli("enqueue", "--id", "c", "--after", "a,b", f"echo c >> {ran}"))
    assert Worker(spool, burst=True, log=lambda _m: None, queues=frozenset({"default"})).run() == 0
    assert spool.find("c").state == "waiting"  # a is done, b is not
    result = clean(cli("purge", "a"), 1)  # purged, a would be waited for by c for good
    assert result.stderr == "Error: job a is kept: c still wait for it\n"
    assert json.loads(clean(cli("purge", "--json")).stdout) == {"purged": 0, "state": "done", "kept": 1}
    clean(cli("requeue", "a"))
    burst(spool)  # b (older), a again (at the back), then c: woken by the last of them, both done
    assert ran.read_text().split() == ["a", "b", "a", "c"]
    assert os.listdir(spool.layout.dir("after")) == []


def test_jobs_that_wait_for_each_other_are_refused(cli, spool):
    lines = [{"id": "x", "command": "true", "after": ["y"]}, {"id": "y", "command": "true", "after": ["x"]}]
    before = snapshot(spool.root)
    result = clean(cli("enqueue", "--batch", "-", input="".join(json.dumps(line) + "\n" for line in lines)), 2)
    assert "x -> y -> x wait for each other" in result.output
    assert snapshot(spool.root) == before


def _take_and_give(root: str, owner: str, rounds: int, set_limit: bool) -> None:
    spool = Spool(root)
    for _ in range(rounds):
        if set_limit:
            spool.slots.set_limit("q", 1)
            continue
        held = spool.slots.take("q", owner)
        if held is not None:
            others = [n for n in os.listdir(spool.layout.dir("slots")) if n.count("%") == 2 and n != held]
            assert not others, others  # one slot, one holder
            spool.slots.give_back(held)


@pytest.mark.slow
def test_slots_hold_under_takers_and_a_limit_set_again_and_again(spool):
    import multiprocessing

    spool.slots.set_limit("q", 1)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_take_and_give, args=(spool.root, f"host-{i}-abcdef", 1500, i == 2))
             for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]  # no taker crashed, none saw two holders
    assert sorted(os.listdir(spool.layout.dir("slots"))) == ["q%0"]


def test_a_kill_request_left_by_an_earlier_run_is_replaced(spool):
    from spoolq.moves.cancel import KillRequest, mark_name

    spool.enqueue({"id": "k", "command": "true"})
    owner = spool.owners.register("worker")
    claimed = spool.transitions.claim(os.listdir(spool.layout.pending)[0], owner)
    with open(os.path.join(spool.layout.owned(owner), mark_name("k")), "wb") as f:
        f.write(b"1 1\n")  # left for an earlier run, which ended before its worker looked
    [result] = spool.cancel(["k"], kill=True, wait=0.05)
    assert result.outcome.value == "requested"
    assert KillRequest(claimed.path, claimed.job).asked()  # the request now names this run


def test_a_dropped_file_may_wait_for_other_jobs(spool, tmp_path):
    ran = tmp_path / "ran"
    spool.enqueue({"id": "a", "queue": "slow", "command": f"echo a >> {ran}"})
    with open(os.path.join(spool.layout.pending, "d.json"), "w") as f:
        json.dump({"id": "d", "command": f"echo d >> {ran}", "after": ["a"]}, f)
    with open(os.path.join(spool.layout.pending, "bad.json"), "w") as f:
        json.dump({"id": "e", "command": "true", "after": ["nope"]}, f)
    assert Worker(spool, burst=True, log=lambda _m: None, queues=frozenset({"default"})).run() == 0
    assert spool.find("d").state == "waiting" and not ran.exists()
    assert [v.reason for v in spool.list_jobs(state="dead")] == ["malformed: after: no job 'nope'"]
    burst(spool)
    assert ran.read_text().split() == ["a", "d"]
