"""A job's output log (store/output.py): made when an attempt first has something to put in it,
and what `show`, `logs` and the dashboard say of a job that has none."""

from __future__ import annotations

import os
import re
import pytest

from conftest import wait_for
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
