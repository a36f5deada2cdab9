"""`worker start --slots N`: one worker process runs up to N jobs at once, through real `worker
start` processes: the jobs' parent is the one worker; a stop waits for all of them, the third
signal kills all of them; `cancel --kill` of one leaves the others running; a queue limit holds
across slots; a SIGKILLed worker's jobs are all recovered exactly once; the lease guard stops
every running job of a cut-off host; a slot count that is no count is refused."""

from __future__ import annotations

import json
import re
import os
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import SPOOLQ, stop_gracefully, wait_for
from test_hosts import LEASE, _last_renewal, _marking, _runs, strict_rig  # noqa: F401 (the rig's fixture)
from spoolq import Spool
from spoolq.running import slot_threads
from spools import pid_gone


def held_job(tmp_path: Path, name: str, seconds: float = 30) -> str:
    """A job that says it started (its parent's pid and its own in <name>.started), then waits
    until the file `go` exists (or `seconds`), then says it finished."""
    base = tmp_path / name
    return (f"echo $PPID $$ > {base}.tmp; mv {base}.tmp {base}.started; i=0; "
            f"while [ ! -e {tmp_path / 'go'} ] && [ $i -lt {int(seconds * 20)} ]; do sleep 0.05; i=$((i+1)); done; "
            f"touch {base}.finished")


def started(tmp_path: Path, names: list[str], which: int = 0) -> list[int]:
    """The parent pids (`which` 1: their own) of those of the jobs `names` that have started."""
    return [int((tmp_path / f"{n}.started").read_text().split()[which]) for n in names
            if (tmp_path / f"{n}.started").exists()]


def state(spool: Spool, job_id: str) -> str | None:
    view = spool.find(job_id)
    return view.state if view is not None else None


def wait_states(spool: Spool, ids: list[str], want: str, timeout: float = 20) -> list[dict]:
    wait_for(lambda: all(state(spool, i) == want for i in ids), timeout,
             f"jobs {ids} to be {want} (they are {[state(spool, i) for i in ids]})")
    return [spool.find(i).to_dict() for i in ids]


def start_slots(workers, slots: int, count: int = 1):
    return workers(count, extra=("--slots", str(slots)))


NAMES = ["j1", "j2", "j3"]


def enqueue_held(spool: Spool, tmp_path: Path, names: list[str] = NAMES, **fields) -> None:
    for name in names:
        spool.enqueue({"id": name, "command": held_job(tmp_path, name), **fields})


def test_one_worker_process_runs_n_jobs_at_once(spool, workers, tmp_path, run):
    """Three jobs, each waiting for the others to have started: they can all finish only if they
    run at once; the parent of each is the one worker process; `worker list` shows all three."""
    w = start_slots(workers, 3)
    enqueue_held(spool, tmp_path)
    parents = wait_for(lambda: len(started(tmp_path, NAMES)) == 3 and started(tmp_path, NAMES), 15,
                       "three jobs to run at once")
    [worker] = w.live()
    assert set(parents) == {worker.pid}, (parents, worker.pid)
    assert worker.jobs == tuple(NAMES)
    listed = json.loads(run("worker", "list", "--json").stdout)
    assert [(r["pid"], r["jobs"], r["slots"]) for r in listed] == [(worker.pid, NAMES, 3)]
    (tmp_path / "go").touch()
    wait_states(spool, NAMES, "done")
    assert all((tmp_path / f"{n}.finished").exists() for n in NAMES)


def test_a_stop_waits_for_every_running_job(spool, workers, tmp_path):
    w = start_slots(workers, 3)
    enqueue_held(spool, tmp_path)
    wait_for(lambda: len(started(tmp_path, NAMES)) == 3, 15, "three jobs to run")
    w.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "SIGTERM" in w.output, 10, "the supervisor to say it got SIGTERM")
    enqueue_held(spool, tmp_path, ["late"])
    assert w.proc.poll() is None, "the worker waits for its jobs"
    assert [state(spool, n) for n in NAMES] == ["processing"] * 3
    (tmp_path / "go").touch()
    assert w.proc.wait(20) == 0, w.output
    assert [state(spool, n) for n in [*NAMES, "late"]] == ["done"] * 3 + ["pending"], "nothing claimed after a stop"
    assert w.live() == []


def test_the_third_signal_kills_every_running_job(spool, workers, tmp_path):
    w = start_slots(workers, 3)
    enqueue_held(spool, tmp_path, max_retries=0)
    wait_for(lambda: len(started(tmp_path, NAMES)) == 3, 15, "three jobs to run")
    for n in range(1, 4):
        w.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: w.output.count("SIGTERM") >= n, 10, f"the supervisor to hear signal {n}")
    for job in wait_states(spool, NAMES, "dead"):
        assert "stopped by 3 signals" in job["last_error"], job
    assert w.proc.wait(20) == 0, w.output
    assert not any((tmp_path / f"{n}.finished").exists() for n in NAMES), "no job ran on"


def test_cancel_kill_of_one_job_leaves_the_others_running(spool, workers, tmp_path, run):
    start_slots(workers, 3)
    enqueue_held(spool, tmp_path)
    wait_for(lambda: len(started(tmp_path, NAMES)) == 3, 15, "three jobs to run")
    r = run("cancel", "--kill", "j2")
    assert r.returncode == 0, r.stdout + r.stderr
    [cancelled] = wait_states(spool, ["j2"], "dead")
    assert cancelled["last_error"] == "cancelled"
    assert [state(spool, n) for n in ("j1", "j3")] == ["processing"] * 2
    assert not any((tmp_path / f"{n}.finished").exists() for n in NAMES)
    (tmp_path / "go").touch()
    wait_states(spool, ["j1", "j3"], "done")
    assert not (tmp_path / "j2.finished").exists()


def test_a_queue_limit_of_two_holds_across_slots(spool, workers, tmp_path, run):
    """Six jobs of a queue limited to 2, one worker of 5 slots: never more than two at once
    (each job counts the jobs running with it, by files in a directory), and two at a time."""
    r = run("queue", "set", "enc", "--concurrency", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    live, seen = tmp_path / "live", tmp_path / "seen"
    live.mkdir()
    for i in range(6):
        spool.enqueue({"id": f"e{i}", "queue": "enc",
                       "command": f"touch {live}/$SPOOLQ_JOB_ID; sleep 0.4; ls {live} | wc -l >> {seen}; "
                                  f"rm {live}/$SPOOLQ_JOB_ID"})
    start_slots(workers, 5)
    wait_states(spool, [f"e{i}" for i in range(6)], "done", 30)
    counts = [int(line) for line in seen.read_text().split()]
    assert max(counts) == 2, counts


@pytest.mark.slow
def test_a_sigkilled_multi_slot_worker_s_jobs_are_all_recovered_exactly_once(spool, workers, tmp_path):
    """A worker of three slots running three jobs is SIGKILLed with its supervisor; another
    worker takes every one of them back (attempt 2), kills what was left of each, and runs each
    once more, exactly once."""
    spool.set_config("backoff_base", 0)
    marks = tmp_path / "marks"
    names = ["k1", "k2", "k3"]
    for name in names:
        spool.enqueue({"id": name, "max_retries": 2, "command":
                       f'echo "$SPOOLQ_JOB_ID $SPOOLQ_ATTEMPT" >> {marks}; '
                       f'if [ "$SPOOLQ_ATTEMPT" = 1 ]; then {held_job(tmp_path, name, 60)}; fi'})
    first = start_slots(workers, 3)
    wait_for(lambda: len(started(tmp_path, names)) == 3, 15, "three jobs to run")
    [victim] = first.live()
    assert started(tmp_path, names) == [victim.pid] * 3
    leftovers = started(tmp_path, names, 1)
    first.kill_all()  # the supervisor and its worker; the jobs live on in their own sessions
    wait_for(lambda: first.proc.poll() is not None, 10, "the first worker to die")
    start_slots(workers, 3)
    for job in wait_states(spool, names, "done", 30):
        assert job["attempts"] == 2 and "stopped during attempt 1" in job["last_error"], job
    runs = sorted(marks.read_text().split("\n")[:-1])
    assert runs == sorted(f"{n} {a}" for n in names for a in (1, 2)), runs
    for pid in leftovers:
        wait_for(lambda: pid_gone(pid), 5, "the dead worker's jobs to be killed")
    assert not any((tmp_path / f"{n}.finished").exists() for n in names)


def test_a_burst_of_many_slots_waits_for_its_running_jobs_and_their_retries(spool, spool_dir, tmp_path):
    """A burst worker of 4 slots leaves only once every job it started has ended and the retry
    of the one that failed has run: not when nothing is left to claim while jobs still run."""
    spool.set_config("backoff_base", 0)
    spool.enqueue({"id": "flaky", "max_retries": 1,
                   "command": f'sleep 0.5; [ "$SPOOLQ_ATTEMPT" = 2 ] || exit 3'})
    for i in range(3):
        spool.enqueue({"id": f"slow{i}", "command": "sleep 1"})
    r = subprocess.run([*SPOOLQ, "--spool", spool_dir, "worker", "start", "--slots", "4", "--burst"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert [state(spool, i) for i in ("flaky", "slow0", "slow1", "slow2")] == ["done"] * 4, r.stderr
    assert spool.find("flaky").to_dict()["attempts"] == 2
    assert "4 jobs in 5 attempts, 4 ok, 1 failed" in r.stderr, r.stderr


def test_one_slot_looks_for_a_stop_request_between_the_jobs_of_a_backlog(spool, workers, tmp_path, run):
    """The default, one slot: a `worker stop` while it works through a backlog stops it after
    the job it runs, not once the backlog is empty."""
    w = workers(1)
    enqueue_held(spool, tmp_path, ["first"])
    for i in range(5):
        spool.enqueue({"id": f"next{i}", "command": "true"})
    wait_for(lambda: started(tmp_path, ["first"]), 15, "the first job to run")
    r = run("worker", "stop")
    assert r.returncode == 0, r.stdout + r.stderr
    (tmp_path / "go").touch()
    assert w.proc.wait(20) == 0, w.output
    assert state(spool, "first") == "done"
    assert [state(spool, f"next{i}") for i in range(5)] == ["pending"] * 5


@pytest.mark.parametrize("slots", ["0", "-1", "1025", "many"])
def test_a_slot_count_that_is_no_count_is_refused(spool_dir, slots):
    r = subprocess.run([*SPOOLQ, "--spool", spool_dir, "worker", "start", "--slots", slots, "--burst"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    [error] = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert "Invalid value for '--slots'" in error, r.stderr  # the option is known; the value refused


def _start_under_limit(spool_dir: str, slots: int, soft: int, hard: int, tmp_path) -> tuple[subprocess.CompletedProcess, str]:
    """`worker start --slots N --burst` under `ulimit -n soft` (hard `hard`), its only job
    writing the soft limit it was started with."""
    import resource
    out = tmp_path / "limit"
    Spool(spool_dir).enqueue({"command": f"sh -c 'ulimit -n > {out}'"})

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    r = subprocess.run([*SPOOLQ, "--spool", spool_dir, "worker", "start", "--slots", str(slots), "--burst"],
                       capture_output=True, text=True, timeout=60, preexec_fn=limited)
    return r, out.read_text().strip() if out.exists() else ""


def test_many_slots_raise_the_soft_open_files_limit_to_what_they_need(spool_dir, tmp_path):
    """`ulimit -n 1024` is many a shell's: 600 slots need more, within the hard limit. The worker
    raises its soft limit (its jobs inherit it) instead of running out of files at the 340th job."""
    needed = slot_threads.open_files_needed(600)
    r, limit = _start_under_limit(spool_dir, 600, 1024, needed + 100, tmp_path)
    assert r.returncode == 0, r.stderr
    assert limit == str(needed), r.stderr


def test_a_soft_limit_already_enough_is_left_as_it_is(spool_dir, tmp_path):
    r, limit = _start_under_limit(spool_dir, 4, 1024, 4096, tmp_path)
    assert r.returncode == 0 and limit == "1024", r.stderr


def test_slots_beyond_the_hard_open_files_limit_are_refused_in_one_line(spool_dir, tmp_path):
    needed = slot_threads.open_files_needed(600)
    r, limit = _start_under_limit(spool_dir, 600, 512, 1024, tmp_path)
    assert r.returncode == 2 and limit == "", r.stdout + r.stderr  # nothing ran
    assert "Traceback" not in r.stderr
    [error] = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert "Invalid value for '--slots'" in error and f"600 slots: about {needed} open files are needed" in error, error
    assert "at most 1024" in error, error


# ---- the lease guard, on a host cut off from the spool (GlusterFS rig) ---------------------------


@pytest.mark.rig
def test_a_cut_off_host_stops_every_running_job_before_its_lease_can_run_out(strict_rig, tmp_path):
    """Host B runs three 30 s jobs in one worker of three slots, lease 4 s, and is cut off from
    the spool: its worker kills all three before its lease can run out; host A takes each back
    after the lease and runs it; no copy on B runs past the lease."""
    rig = strict_rig
    rig.ok("A", "config", "set", "lease_timeout", f"{LEASE:g}")
    marks = tmp_path / "marks"
    log = tmp_path / "worker-B.log"
    with open(log, "wb") as out:
        b = subprocess.Popen([*SPOOLQ, "--spool", rig.path("B"), "worker", "start", "--slots", "3"],
                             stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=rig.env("B"),
                             start_new_session=True)
    rig.procs.append(b)
    spool = rig.spool("A")
    names = ["long1", "long2", "long3"]
    for name in names:
        spool.enqueue({"id": name, "command": _marking(marks), "max_retries": 3})
    wait_for(lambda: all(_runs(marks).get(("B", n)) for n in names), 15, "B to run the three jobs")
    [b_worker] = rig.workers("B")
    a = rig.start("A", 1)
    rig.partition("B")
    renewed = _last_renewal(rig, b_worker.owner)
    wait_for(lambda: all(state(spool, n) == "done" for n in names), 60, "A to take every job back and run it")
    runs = _runs(marks)
    b_last = max(max(runs[("B", n)]) for n in names)
    assert b_last < renewed + LEASE, f"a copy on B ran {b_last - renewed - LEASE:.2f}s past its lease"
    assert all(runs.get(("A", n)) for n in names)
    text = log.read_text(errors="replace")
    assert "could not renew its lease" in text and "the process groups of its 3 jobs" in text, text
    stop_gracefully(b, 5)
    a.stop()


def test_many_threads_of_one_spool_never_get_the_same_sequence_number(spool, monkeypatch):
    """Slots of one worker make sequence numbers at once (a retry's new pending name). With a wall
    clock stepped back (standing still below the last number, so each number is the last plus
    one) and the interpreter switching threads as often as it can, 8 threads x 20000 numbers get
    no duplicate, and each thread's numbers still rise."""
    import sys
    import threading
    import time
    per_thread, threads = 20000, 8
    made: list[list[int]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads)

    def make(out: list[int]) -> None:
        start.wait()
        out.extend(spool.store.next_seq() for _ in range(per_thread))

    spool.store.next_seq()  # the last number: now, on the real clock
    monkeypatch.setattr(time, "time_ns", lambda: 1)  # the clock stepped back, not the file system
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        running = [threading.Thread(target=make, args=(out,)) for out in made]
        for t in running:
            t.start()
        for t in running:
            t.join()
    finally:
        sys.setswitchinterval(interval)
        monkeypatch.undo()
    every = [seq for out in made for seq in out]
    assert len(set(every)) == len(every), f"{len(every) - len(set(every))} duplicate sequence numbers"
    assert all(a < b for out in made for a, b in zip(out, out[1:])), "a thread's numbers went backwards"


def test_the_dashboard_shows_every_job_a_worker_runs_and_its_slots(spool, workers, tmp_path):
    """A worker of three slots running three jobs: /api/overview gives its `jobs` and `slots` as
    `worker list --json` does, and the page's workers table links each of the three jobs."""
    pytest.importorskip("flask", reason="the dashboard needs the web extra (the test extra installs it)")
    from spoolq.web import create_app

    w = start_slots(workers, 3)
    enqueue_held(spool, tmp_path)
    wait_for(lambda: len(started(tmp_path, NAMES)) == 3, 15, "three jobs to run")
    client = create_app(spool).test_client()
    wait_for(lambda: len(w.live()[0].jobs) == 3, 10, "the worker's registration to name its three jobs")
    answer = client.get("/api/overview")
    assert answer.status_code == 200
    [worker] = answer.get_json()["workers"]
    assert sorted(worker["jobs"]) == NAMES and worker["slots"] == 3, worker
    page = client.get("/").get_data(as_text=True)
    table = page[page.index('<table id="workers">'):]
    table = table[:table.index("</table>")]
    for name in NAMES:
        assert f'<a href="/job/{name}">{name}</a>' in table, table
    assert re.search(r"<td>3</td>", table), table
    (tmp_path / "go").touch()


def test_a_slot_that_runs_out_of_open_files_stops_its_worker_after_the_others_jobs(spool, workers, tmp_path):
    """A worker of three slots runs two jobs; its open-files limit (RLIMIT_NOFILE, set on the
    running worker) then leaves the third job's slot one descriptor short of its output pipe: that
    slot raises. The other two jobs run to their end and are done; the worker says why in one
    line (its open files, not the spool's file system), with no traceback, and exits; its
    supervisor takes the third job back, and a new worker runs it once, as attempt 2."""
    import resource
    w = start_slots(workers, 3)
    [worker] = w.live()
    enqueue_held(spool, tmp_path, NAMES[:2])
    wait_for(lambda: len(started(tmp_path, NAMES[:2])) == 2, 15, "two jobs to run")
    wait_for(lambda: len(w.live()[0].jobs) == 2, 10, "the worker's registration to name its two jobs")
    # Settled: what it holds now, plus one (the third job's log), and no more (its output pipe).
    held = len(os.listdir(f"/proc/{worker.pid}/fd"))
    resource.prlimit(worker.pid, resource.RLIMIT_NOFILE, (held + 1, held + 1))
    enqueue_held(spool, tmp_path, NAMES[2:])
    wait_for(lambda: "claiming no more, waiting for the running jobs" in w.output, 15, "the third slot to fail")
    assert not (tmp_path / "j3.started").exists(), "its command never started"
    assert not pid_gone(worker.pid), "it waits for the other slots' jobs"
    (tmp_path / "go").touch()
    done = wait_states(spool, NAMES, "done", 30)
    assert [d["attempts"] for d in done] == [1, 1, 2], done
    assert len(started(tmp_path, NAMES)) == 3, "each job ran once"
    wait_for(lambda: pid_gone(worker.pid), 10, "the worker to exit")
    said = [line for line in w.output.splitlines() if f"worker pid {worker.pid} " in line or worker.owner in line]
    assert any("out of open files (Too many open files" in line and "ulimit -n" in line for line in said), w.output
    assert "Traceback" not in w.output and "the spool's file system failed" not in w.output, w.output
    assert any(f"worker pid {worker.pid} stopped: " in line for line in said), w.output
    assert w.proc.poll() is None, "its supervisor goes on"
