"""A shell user's day: what someone used to nq, task-spooler and pueue does with spoolq from a
for-loop, `find | xargs`, a script under `set -e`, cron and jq, with real workers end to end."""

from __future__ import annotations

import json
import os
import subprocess

from conftest import SPOOLQ, spoolq, wait_for
from spoolq import Spool


def _burst(spool_dir: str) -> subprocess.CompletedProcess:
    return spoolq(spool_dir, "worker", "start", "--burst", "-q")


def _start_wait(spool_dir: str, *ids: str) -> subprocess.Popen:
    return subprocess.Popen([*SPOOLQ, "--spool", spool_dir, "wait", "--timeout", "60", *ids],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_wait_for_everything_fails_when_a_job_it_waited_for_died(spool_dir):
    """`for f in *; do spoolq enqueue ...; done; spoolq wait && echo all good`: a wait without ids
    exited 0 whatever became of the jobs, so `set -e` and `&&` never saw a failure. It exits 1
    naming the jobs that went dead while it waited; one dead before it began is no failure of its."""
    spool = Spool(spool_dir)
    spool.enqueue({"command": "exit 5", "max_retries": 0, "id": "old-failure"})
    assert _burst(spool_dir).returncode == 0
    spool.enqueue({"command": "true", "id": "fine"})
    waiting = _start_wait(spool_dir)
    assert _burst(spool_dir).returncode == 0
    _out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err  # the old failure is not this wait's

    spool.enqueue({"command": "exit 3", "max_retries": 0, "id": "broken"})
    spool.enqueue({"command": "true", "id": "fine-too"})
    waiting = _start_wait(spool_dir)
    assert _burst(spool_dir).returncode == 0
    _out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 1, err
    assert err.strip().splitlines()[-1].startswith("Error: dead: broken"), err
    assert "old-failure" not in err


def test_after_given_twice_waits_for_both(spool_dir):
    """`--after A --after B` (as a script that adds one flag per dependency writes it) kept only B:
    the job ran as soon as B was done, A still running. Every --after counts."""
    spool = Spool(spool_dir)
    spool.enqueue({"command": "true", "id": "a"})
    spool.enqueue({"command": "true", "id": "b"})
    r = spoolq(spool_dir, "enqueue", "--id", "c", "--after", "a", "--after", "b", "true")
    assert r.returncode == 0, r.stderr
    assert spool.find("c").job.after == ["a", "b"]
