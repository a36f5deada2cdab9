"""Hooks: on_done, on_dead and on_failure run after the transition, with the job in their
environment, bounded by hook_timeout, their output in the worker's log, never blocking a claim."""

from __future__ import annotations

import json
import time

from conftest import spoolq, wait_for
from spoolq import Spool
import os
import pytest


def test_each_hook_sees_the_job_in_its_environment(spool, tmp_path):
    seen = tmp_path / "seen.jsonl"
    dump = ("python3 -c 'import json, os; print(json.dumps({k: v for k, v in os.environ.items() "
            f"if k.startswith(\"SPOOLQ_\")}}))' >> {seen}")
    for key in ("on_done", "on_dead", "on_failure"):
        spool.set_config(key, dump)
    spool.set_config("backoff_base", 0)
    spool.enqueue({"command": "true", "id": "good", "queue": "mail"})
    spool.enqueue({"command": "echo no >&2; exit 3", "id": "bad", "max_retries": 1})
    result = spoolq(spool.root, "worker", "start", "--burst")
    assert result.returncode == 0, result.stderr
    envs = sorted((json.loads(line) for line in seen.read_text().splitlines()),
                  key=lambda e: (e["SPOOLQ_JOB_ID"], e["SPOOLQ_ATTEMPT"]))
    got = [(e["SPOOLQ_JOB_ID"], e["SPOOLQ_STATE"], e["SPOOLQ_EXIT_CODE"], e["SPOOLQ_ATTEMPT"], e["SPOOLQ_LAST_ERROR"],
            e["SPOOLQ_QUEUE"]) for e in envs]
    assert got == [("bad", "pending", "3", "1", "exit status 3", "default"),
                   ("bad", "dead", "3", "2", "exit status 3", "default"),
                   ("good", "done", "0", "1", "", "mail")]
    assert all(e["SPOOLQ_SPOOL"] == spool.root for e in envs)


def test_a_hook_that_fails_or_hangs_is_logged_killed_and_never_retried(spool, tmp_path):
    runs = tmp_path / "runs"
    spool.set_config("on_done", f"echo ran >> {runs}; echo out-line; exit 5")
    spool.set_config("on_dead", f"echo hung >> {runs}; sleep 60")
    spool.set_config("hook_timeout", 0.5)
    spool.enqueue({"command": "true", "id": "a"})
    spool.enqueue({"command": "false", "id": "b", "max_retries": 0})
    started = time.monotonic()
    result = spoolq(spool.root, "worker", "start", "--burst")
    assert result.returncode == 0 and time.monotonic() - started < 20
    err = result.stderr
    assert "hook on_done for job a: out-line" in err and "hook on_done for job a: exit status 5" in err
    assert "hook on_dead for job b: timed out after 0.5s; its process group was killed" in err
    assert sorted(runs.read_text().splitlines()) == ["hung", "ran"]  # each once, in either order (threads): never retried
    assert Spool(spool.root).find("a").state == "done" and Spool(spool.root).find("b").state == "dead"


def test_a_slow_hook_never_holds_up_the_next_claim(spool, workers, tmp_path):
    gate = tmp_path / "gate"
    spool.set_config("on_done", f"while [ ! -e {gate} ]; do sleep 0.01; done")
    spool.set_config("hook_timeout", 120)
    first = spool.enqueue({"command": "true"}).id
    w = workers(1)
    wait_for(lambda: spool.find(first).state == "done", 10, "the first job")
    second = spool.enqueue({"command": "true"}).id
    wait_for(lambda: spool.find(second).state == "done", 10, "the next job, while the first's hook waits")
    gate.touch()
    w.stop()


def test_a_hook_runs_in_the_spool_directory_whatever_the_jobs_cwd(spool, tmp_path):
    seen = tmp_path / "cwd"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    spool.set_config("on_done", f"pwd > {seen}")
    spool.enqueue({"command": "true", "cwd": str(elsewhere)})
    assert spoolq(spool.root, "worker", "start", "--burst").returncode == 0
    assert seen.read_text().strip() == spool.root


# 10. a hook that closes its output and hangs is never killed; the worker never stops -----------
@pytest.mark.review("service 10")
def test_a_hook_that_redirects_its_output_is_still_bounded_by_hook_timeout(spool, tmp_path):
    import signal
    import subprocess

    from conftest import SPOOLQ

    pidfile = tmp_path / "hook.pid"
    # a usual hook shape: its output to a log of its own, then something that hangs (curl without -m)
    spool.set_config("on_done", f"echo $$ > {pidfile}; exec >/dev/null 2>&1; sleep 30")
    spool.set_config("hook_timeout", 0.5)
    spool.enqueue({"command": "true"})
    proc = subprocess.Popen([*SPOOLQ, "--spool", spool.root, "worker", "start", "--burst"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        proc.wait(timeout=8)  # the hook has 0.5 s; then it is killed and the burst ends
    except subprocess.TimeoutExpired:
        pytest.fail("worker start --burst still running 8 s later: it waits for a hook past hook_timeout")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if pidfile.exists():
            try:
                os.killpg(int(pidfile.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass


# 11. a hook killed by a real-time signal: a traceback from the hook thread, no log line --------
@pytest.mark.review("service 11")
def test_a_hook_killed_by_a_realtime_signal_is_logged(spool):
    from spoolq.store.attempts_log import FinishedAttempt
    from spoolq.running.hooks import Hooks

    spool.init()
    spool.set_config("on_done", "kill -40 $$")
    lines: list[str] = []
    hooks = Hooks(spool, lines.append)
    errors = []
    import threading
    old = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)
    try:
        hooks.after(FinishedAttempt("j", "default", 1, "h", "w", 0, 0, 0, 0, "done", 0), "done")
        hooks.wait()
    finally:
        threading.excepthook = old
    assert errors == [], errors
    assert any("killed by signal" in line for line in lines), lines

