"""A job's output log (store/output.py): made when an attempt first has something to put in it,
and what `show`, `logs` and the dashboard say of a job that has none."""

from __future__ import annotations

import json
import os
import re

import pytest

from conftest import dead_pid
from spoolq import Spool
from spoolq.running.worker import Worker


def burst(spool: Spool) -> None:
    assert Worker(spool, burst=True, log=lambda _m: None).run() == 0


def footers(spool: Spool, job_id: str) -> list[str]:
    text = open(spool.output_path(job_id), encoding="utf-8").read()
    return re.findall(r"^==> attempt finished in [0-9.]+s: (.*) <==$", text, re.M)


# ---- a job run again after a run that left a log -------------------------------------------------


@pytest.mark.parametrize("again", ["dlq retry", "requeue"])
def test_a_job_run_again_silently_adds_its_attempt_to_the_log_its_earlier_run_left(spool, tmp_path, again):
    """`dlq retry` and `requeue` reset attempts, and the job's log keeps what earlier runs
    wrote: the new run's attempt 1 goes on in it, even when it succeeds at once and writes
    nothing. Else `logs` ends on the earlier run's failure for a job that is done, and `show`
    gives the earlier run's start, duration and host as its last attempt's."""
    fixed = tmp_path / "fixed"
    job = spool.enqueue({"command": f"test -e {fixed} || {{ echo broken; exit 3; }}", "max_retries": 0}).id
    burst(spool)
    assert spool.find(job).state == "dead" and footers(spool, job) == ["exit status 3"]
    first = spool.find(job).last_attempt
    fixed.touch()
    if again == "dlq retry":
        assert spool.retry_dead([job]) == [job]
    else:
        assert spool.requeue([job]) == {job: None}
    burst(spool)
    view = spool.find(job)
    assert view.state == "done"
    assert footers(spool, job) == ["exit status 3", "ok"]
    assert first.started is not None and view.last_attempt.started > first.started, (first, view.last_attempt)


# ---- a done job without a log: its times from the attempts log, read once for a listing -----------


@pytest.fixture
def passes(monkeypatch) -> list[str]:
    """The attempts-log files read, one entry a read from a place (the readers' own code runs)."""
    from spoolq.store import attempts_log

    read, real = [], attempts_log.lines

    def counted(path: str, offset: int = 0):
        read.append(os.path.basename(path))
        return real(path, offset)

    monkeypatch.setattr(attempts_log, "lines", counted)
    return read


SILENT = 60


def test_a_listing_of_silent_done_jobs_reads_the_attempts_log_once_and_gives_their_times(spool, passes):
    """`list` (and `list --json`) of done jobs that left no log read the attempts log once for
    them all, not once a job (each read a file's window again: `list` of 2,000 such jobs took
    3.7 s, 36 times as long as of jobs with a log); each still gets its start, duration and host."""
    ids = [job.id for job in spool.enqueue_many([{"command": "true"} for _ in range(SILENT)])]
    burst(spool)
    assert not any(os.path.exists(spool.output_path(job_id)) for job_id in ids)
    files = len(os.listdir(spool.layout.dir("events")))
    del passes[:]
    views = spool.list_jobs(state="done")
    assert sorted(v.id for v in views) == sorted(ids)
    assert all(v.last_attempt.started and v.last_attempt.host and v.last_attempt.seconds is not None
               for v in views), [v.last_attempt for v in views if not v.last_attempt.started]
    assert len(passes) <= files, passes
    del passes[:]
    view = spool.find(ids[SILENT // 2])
    assert view.last_attempt == next(v.last_attempt for v in views if v.id == view.id)
    assert len(passes) <= files, passes


def test_the_dashboard_reads_the_attempts_log_once_for_a_page_and_not_to_search(spool, passes):
    """A page of the dashboard's done jobs is one pass too; a search of their commands (up to
    SEARCH_LIMIT files read to filter them) needs no times at all."""
    pytest.importorskip("flask")
    from spoolq.web.board import DashboardState, Filter

    ids = [job.id for job in spool.enqueue_many([{"command": "true"} for _ in range(SILENT)])]
    burst(spool)
    files = len(os.listdir(spool.layout.dir("events")))
    board = DashboardState(spool, read_only=True)
    del passes[:]
    page = board.jobs(Filter("done"), 0)
    assert {row["id"] for row in page["jobs"]} <= set(ids) and len(page["jobs"]) == min(SILENT, page["page_size"])
    assert all(row["started_at"] and row["host"] for row in page["jobs"]), page["jobs"]
    assert len(passes) <= files, passes
    del passes[:]
    searched = board.jobs(Filter("done", query="no such command"), 0)
    assert searched["total"] == 0 and passes == [], passes


def test_the_dashboard_does_not_say_a_silent_done_job_never_ran(spool):
    """Its job page said "no attempt yet" under Attempts for a done job that left no log."""
    pytest.importorskip("flask")
    from spoolq.web import create_app

    job = spool.enqueue({"command": "true"}).id
    burst(spool)
    app = create_app(spool)
    app.testing = True
    page = app.test_client().get(f"/job/{job}").get_data(as_text=True)
    assert "no attempt yet" not in page
    assert "wrote nothing" in page, page


# ---- recovery's marker for an attempt whose worker died before it had a log ---------------------


def held_by_a_dead_worker(spool: Spool, job_id: str, **spec) -> None:
    """`job_id` claimed by a worker that died before its attempt wrote anything (so before its
    log was begun): as a worker killed in its job's first half second leaves it."""
    spool.enqueue({"id": job_id, "command": "true", **spec})
    owner = spool.owners.register("worker")
    [name] = os.listdir(spool.layout.pending)
    assert spool.transitions.claim(name, owner) is not None
    record = json.loads(open(spool.layout.worker_file(owner)).read())
    record.update(pid=dead_pid(), start=None)  # its worker is gone
    with open(spool.layout.worker_file(owner), "w") as f:
        json.dump(record, f)


@pytest.mark.parametrize("retries, state", [(1, "done"), (0, "dead")])
def test_recovery_says_an_attempt_ended_without_a_result_though_it_left_no_log(spool, retries, state):
    """docs/cli.md: an attempt whose worker died is closed by the recovery with a marker line in
    the job's log. The marker never makes a log (a purged job stays purged), so an attempt that
    died before its log was begun was never told there: `logs` of the retried job began at
    attempt 2, and a dead job had no log at all."""
    spool.set_config("backoff_base", 0)
    held_by_a_dead_worker(spool, "j", max_retries=retries)
    burst(spool)  # recovers the job
    burst(spool)  # runs its retry
    assert spool.find("j").state == state
    text = open(spool.output_path("j"), encoding="utf-8").read()
    first = text.splitlines()[0]
    assert re.fullmatch(r"==> attempt 1 ended without a result: worker \S+ on \S+ stopped during attempt 1 .*; "
                        rf"the job is {'pending' if retries else 'dead'} now <==", first), text


# ---- what `logs` says of a done job without a log -----------------------------------------------


def test_logs_does_not_say_a_job_wrote_nothing_when_its_output_could_not_be_kept(spool, run):
    """A log that cannot be made (here a directory in its place; a full disk alike) costs the
    output, not the attempt: `logs` said "it wrote nothing" of a job that wrote. The attempts
    log counts what it wrote."""
    os.makedirs(spool.output_path("blocked"))
    spool.enqueue({"id": "blocked", "command": "echo said"})
    spool.enqueue({"id": "silent", "command": "true"})
    burst(spool)
    blocked, silent = run("logs", "blocked"), run("logs", "silent")
    assert blocked.returncode == 0 and blocked.stdout == "", blocked
    assert "wrote nothing" not in blocked.stderr, blocked.stderr
    assert "(no output: job blocked is done; the 5 bytes it wrote could not be kept" in blocked.stderr, blocked.stderr
    assert silent.stderr == "(no output: job silent is done; it wrote nothing)\n", silent.stderr


def test_logs_of_a_finished_job_that_never_ran_says_no_output_not_yet(spool, run):
    """A job cancelled before it ran is dead with no log: none will come, so not "yet"."""
    job = spool.enqueue({"command": "echo never", "delay": 3600}).id
    assert run("cancel", job).returncode == 0
    assert spool.find(job).state == "dead"
    said = run("logs", job)
    assert said.returncode == 0 and said.stderr == f"(no output: job {job} is dead)\n", said
