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



# ---- what operating.md promises of many hooks and long output ---------------------------------------


def test_at_most_16_hooks_run_at_once_and_a_stopping_worker_lets_them_end(spool, tmp_path):
    """operating.md: at most 16 hooks run at once per worker (more are skipped, and said to be),
    and a stopping worker lets its running hooks end."""
    import subprocess

    from conftest import SPOOLQ

    gate, marks = tmp_path / "gate", tmp_path / "marks"
    marks.mkdir()
    spool.set_config("on_done", f'touch {marks}/started-$SPOOLQ_JOB_ID; while [ ! -e {gate} ]; do sleep 0.01; done; '
                                f'touch {marks}/ended-$SPOOLQ_JOB_ID')
    spool.set_config("hook_timeout", 120)
    for i in range(18):
        spool.enqueue({"id": f"j{i:02d}", "command": "true"})
    worker = subprocess.Popen([*SPOOLQ, "--spool", spool.root, "worker", "start", "--burst", "-q"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: all(spool.find(f"j{i:02d}").state == "done" for i in range(18)), 30, "every job done")
        wait_for(lambda: len(os.listdir(marks)) >= 16, 30, "16 hooks started")
        assert worker.poll() is None, "the worker left while its hooks ran"
        gate.touch()
        _, err = worker.communicate(timeout=60)
    finally:
        gate.touch()
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err
    started = {name[len("started-"):] for name in os.listdir(marks) if name.startswith("started-")}
    ended = {name[len("ended-"):] for name in os.listdir(marks) if name.startswith("ended-")}
    assert len(started) == 16 and ended == started
    skipped = [line for line in err.splitlines() if "skipped: 16 hooks are still running" in line]
    assert len(skipped) == 2 and all(any(f"job {j} " in line for line in skipped) for j in
                                    {f"j{i:02d}" for i in range(18)} - started)


def test_a_hooks_output_is_kept_up_to_64_kib_and_the_rest_read(spool):
    """operating.md: a hook's output goes to the worker's log up to 64 KiB; the rest is read and
    dropped, so a hook that writes more is neither held up nor killed by a full pipe."""
    spool.set_config("on_done", "yes 0123456789abcdef | head -c 1000000")
    spool.enqueue({"id": "chatty", "command": "true"})
    result = spoolq(spool.root, "worker", "start", "--burst", "-q")
    assert result.returncode == 0
    kept = [line for line in result.stderr.splitlines() if "hook on_done for job chatty: " in line]
    assert all(line.endswith(": 0123456789abcdef") for line in kept[:-1])
    assert 64 * 1024 - 17 <= 17 * len(kept) <= 64 * 1024 + 17
    assert "exit status" not in result.stderr and "timed out" not in result.stderr
