"""Seeing the queue against hostile files and careless operators: the attempts log, the
dashboard, a worker's lines and summary, the metrics textfile."""

from __future__ import annotations

import json
import os
import time

import pytest

from conftest import spoolq
from spoolq import Spool
from spoolq.running import metrics
from spoolq.store import attempts_log
from spoolq.store.attempts_log import Fact


def hostile_line(queue_json: str, now: float) -> bytes:
    return (f'{{"id":"x","queue":{queue_json},"attempt":1,"host":"h","worker":"w","ready":{now},'
            f'"claimed":{now},"started":{now},"finished":{now},"outcome":"done"}}\n').encode()


def plant(spool: Spool, name: str, data: bytes) -> str:
    directory = spool.layout.dir("events")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


# 1. A lone surrogate escape in an attempts-log line is accepted by parse_line, and then every
#    reader that prints it dies: stats, stats --json, metrics (and the dashboard's /metrics).
@pytest.mark.parametrize("args", [("stats",), ("stats", "--json"), ("metrics",)])
def test_one_hostile_events_line_does_not_break_stats_or_metrics(spool, spool_dir, args):
    spool.enqueue({"command": "true"})
    plant(spool, "evil.0.jsonl", hostile_line('"\\ud800"', time.time() - 5))
    result = spoolq(spool_dir, *args)
    assert result.returncode == 0, result.stderr[-300:]
    assert "Traceback" not in result.stderr


def test_metrics_text_from_a_hostile_line_is_encodable(spool):
    plant(spool, "evil.0.jsonl", hostile_line('"\\ud800"', time.time() - 5))
    metrics.exposition(spool, metrics.Totals()).encode()  # what /metrics and the textfile do


# 2. Queue names from the (untrusted) log are not validated: terminal control sequences reach
#    the operator's terminal through `spoolq stats`.
def test_stats_does_not_print_terminal_escapes_from_the_log(spool, spool_dir):
    plant(spool, "evil.0.jsonl", hostile_line('"\\u001b]0;pwned\\u0007\\u001b[2J"', time.time() - 5))
    result = spoolq(spool_dir, "stats")
    assert result.returncode == 0
    assert "\x1b" not in result.stdout


# ---- the dashboard ---------------------------------------------------------------------------

flask = pytest.importorskip("flask")
from spoolq.web import create_app  # noqa: E402
from spoolq.web.access import Bound  # noqa: E402


def client(spool: Spool, **kw):
    app = create_app(spool, **kw)
    app.testing = True
    return app.test_client()


def foreign_worker(spool: Spool, **extra) -> None:
    """A registration as another host's worker would leave it (anyone in the group can write one)."""
    spool.enqueue({"command": "true"})  # the spool's directories exist
    record = {"owner": "other-1-abc", "host": "other", "pid": 1, "role": "worker", **extra}
    with open(spool.layout.worker_file("other-1-abc"), "w") as f:
        json.dump(record, f)


# 3. A registration whose "queues" is not a list takes the whole overview page down (500).
def test_overview_survives_a_registration_with_odd_queues(spool):
    foreign_worker(spool, queues=5)
    c = client(spool)
    assert c.get("/api/overview").status_code == 200
    assert c.get("/").status_code == 200


# 4. A job's log is opened following symlinks: a group member who links output/<id>.log to a
#    file of the dashboard's user has the dashboard serve that file to anyone who can reach it.
def test_dashboard_log_does_not_follow_a_symlink_planted_in_output(spool, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("the dashboard user's private key\n")
    spool.enqueue({"command": "true", "id": "j"})
    path = spool.output_path("j")
    os.makedirs(os.path.dirname(path), exist_ok=True)

    os.symlink(secret, path)
    r = client(spool).get("/job/j/log")
    assert "private key" not in r.get_data(as_text=True)


# 5. A fifo planted as output/<id>.log hangs the job page (and its log) for ever: open() blocks.
def test_job_page_does_not_hang_on_a_fifo_in_output(spool):
    import threading

    spool.enqueue({"command": "true", "id": "j"})
    path = spool.output_path("j")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.mkfifo(path)
    c = client(spool)
    got = []
    t = threading.Thread(target=lambda: got.append(c.get("/api/job/j").status_code), daemon=True)
    t.start()
    t.join(3)
    hung = t.is_alive()
    if hung:  # let it go
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(5)
    assert not hung, "GET /api/job/j still blocked after 3 s"


# 6. No Host check: with the default bind (127.0.0.1, no --token), a page on another origin that
#    DNS-rebinds its own name to 127.0.0.1 is same-origin with the dashboard: it reads the CSRF
#    token from a page and posts actions (here: pauses the whole spool).
def test_dashboard_refuses_a_foreign_host_header(spool):
    spool.enqueue({"command": "true"})
    c = client(spool)
    base = "http://rebind.attacker.example:8765"
    assert c.get("/", base_url=base).status_code == 421 and c.get("/api/overview", base_url=base).status_code == 421
    assert c.post("/pause", data={"csrf": "x"}, base_url=base).status_code == 421
    assert "*" not in spool.paused()
    for name in ("http://127.0.0.1:8765", "http://localhost:8765", "http://[::1]:8765"):
        assert c.get("/", base_url=name).status_code == 200
    elsewhere = client(spool, token="t", bound=Bound("0.0.0.0", "0.0.0.0", 8765))  # any name: the token decides
    assert elsewhere.get("/", headers={"Authorization": "Bearer t"}, base_url=base).status_code == 200


def test_one_worker_per_host_writes_the_textfile(spool):
    spool.init()
    owners = sorted(spool.owners.register("worker") for _ in range(3))
    writers = [metrics.Textfile(spool.root, lambda o=o: o, lambda _m: None)._is_writer(spool) for o in owners]
    assert writers == [True, False, False]  # one reader's counters: they only grow


# 7. The burst summary counts only workers that returned from run(): the jobs a worker finished
#    before it was killed (OOM, a job killing it) vanish from "burst finished: N jobs".
def test_burst_summary_counts_the_jobs_of_a_worker_that_died(spool, spool_dir, tmp_path):
    spool.set_config("backoff_base", 0)
    for _ in range(3):
        spool.enqueue({"command": "true"})
    mark = tmp_path / "killed-once"
    spool.enqueue({"command": f"test -e {mark} || {{ touch {mark}; kill -9 $PPID; sleep 5; }}"})
    result = spoolq(spool_dir, "worker", "start", "--burst")
    assert spool.counts().done == 4
    summary = [line for line in result.stderr.splitlines() if "burst finished" in line]
    assert summary and "4 jobs in 4 attempts, 4 ok" in summary[0], result.stderr[-800:]


# 10. A sibling prunes a live worker's log file once it has not been written for keep_events
#     (an idle worker on a quiet queue; keep_events may be as low as an hour): the live worker
#     goes on appending to its open, now unlinked, file, and every attempt it runs from then on
#     is lost to stats, metrics and the dashboard (until it rotates at 8 MiB).
def test_a_quiet_workers_attempts_are_not_lost_after_a_sibling_prunes(spool):
    spool.enqueue({"command": "true"})  # the spool exists
    directory, keep = spool.layout.dir("events"), 3600
    quiet = attempts_log.EventLog(directory, "h-1-quiet", modes=spool.store.modes, keep_seconds=keep)
    now = time.time()
    quiet.record(Fact("early", "default", 1, "h", "h-1-quiet", now - 7300, now - 7300, now - 7300, now - 7200, "done"))
    (path,) = [os.path.join(directory, n) for n in os.listdir(directory)]
    os.utime(path, (now - 7200, now - 7200))  # two hours without a job
    busy = attempts_log.EventLog(directory, "h-2-busy", modes=spool.store.modes, keep_seconds=keep)
    busy.record(Fact("b", "default", 1, "h", "h-2-busy", now, now, now, now, "done"))  # starts: prunes
    quiet.record(Fact("late", "default", 1, "h", "h-1-quiet", now, now, now, now + 1, "done"))
    assert "late" in {f.id for f in attempts_log.read(directory)}


# 11. str.isdigit() is true for digits int() refuses ('²', and any string past Python's 4300-digit
#     limit): ?page= and ?offset= then raise ValueError, a 500 instead of page 0 / offset 0.
@pytest.mark.parametrize("url", ["/jobs/done?page=%C2%B2", "/api/jobs/done?page=" + "9" * 5000,
                                 "/job/j/log?offset=%C2%B2", "/job/j/log?offset=" + "9" * 5000])
def test_odd_page_and_offset_values_are_not_a_server_error(spool, url):
    spool.enqueue({"command": "true", "id": "j"})
    app = create_app(spool)
    r = app.test_client().get(url)  # not in testing mode: what a browser gets
    assert r.status_code < 500, r.status_code


# 12. A foreground worker now writes two lines per job to stderr, blocking: under a parent that
#     does not read its stderr pipe (Popen(stderr=PIPE) and no reader) it stops after ~300 jobs,
#     holding a claimed job in processing/ for as long as it lives (its heartbeat goes on).
def test_a_worker_whose_stderr_nobody_reads_still_finishes_the_burst(spool, spool_dir):
    import fcntl
    import signal
    import subprocess

    from conftest import SPOOLQ

    for i in range(100):
        spool.enqueue({"command": "true"})
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, getattr(fcntl, "F_SETPIPE_SZ", 1031), 4096)  # a small pipe: fills sooner
    proc = subprocess.Popen([*SPOOLQ, "--spool", spool_dir, "worker", "start", "--burst"],
                            stdout=subprocess.DEVNULL, stderr=write_end, start_new_session=True)
    os.close(write_end)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    stuck = proc.poll() is None
    counts = spool.counts()
    if stuck:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    os.close(read_end)
    assert not stuck, f"still running after 15 s: {counts.done} done, {counts.processing} processing"


# 14. The README's "Seeing the queue" section is not in the change: the new commands and config
#     keys are documented nowhere (CLI reference and Configuration tables included).
def test_readme_documents_the_new_commands_and_keys():
    docs = os.path.join(os.path.dirname(__file__), "..", "docs")
    readme = "".join(open(os.path.join(docs, name)).read() for name in ("cli.md", "operating.md"))
    missing = [w for w in ("Seeing the queue", "`stats", "`metrics", "`web", "--watch", "--progress",
                           "`keep_events`", "`metrics_textfile`", "`metrics_interval`", "--log-format")
               if w not in readme]
    assert not missing, missing


# 15. The log is served in byte chunks decoded with errors="replace": a character split by a
#     chunk's end (LOG_CHUNK, or a job mid-write when the page polls) shows as two U+FFFD, and
#     the offset has moved past it, so the page never shows it right.
def test_followed_log_does_not_mangle_a_character_split_by_a_chunk(spool):
    from spoolq import web

    spool.enqueue({"command": "true", "id": "j"})
    path = spool.output_path("j")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"a" * (web.LOG_CHUNK - 1) + "é\n".encode())
    c = client(spool)
    text, offset = "", 0
    for _ in range(3):
        r = c.get(f"/job/j/log?offset={offset}")
        text += r.get_data(as_text=True)
        offset = int(r.headers["X-Log-Offset"])
    assert "\ufffd" not in text and text.endswith("é\n")


# 16. The burst summary counts attempts and calls them jobs: one job that fails twice and then
#     succeeds is reported as "3 jobs, 1 ok, 2 failed".
def test_burst_summary_counts_jobs_not_attempts(spool, spool_dir, tmp_path):
    spool.set_config("backoff_base", 0)
    count = tmp_path / "n"
    spool.enqueue({"command": f"echo x >> {count}; [ $(wc -l < {count}) -ge 3 ]", "max_retries": 5})
    result = spoolq(spool_dir, "worker", "start", "--burst", "--quiet")
    assert spool.counts().done == 1
    summary = [line for line in result.stderr.splitlines() if "burst finished" in line][0]
    import re

    assert re.search(r"burst finished: 1 job in 3 attempts, 1 ok, 2 failed, in [0-9.]+s", summary), summary


# 17. metrics_textfile is refreshed only from the worker's loop: while the workers of a host run
#     jobs (one worker and a long job), the textfile is not rewritten for the job's whole run,
#     whatever metrics_interval says; node_exporter serves the counts from before the job.
@pytest.mark.slow
def test_textfile_is_refreshed_while_a_long_job_runs(spool, workers, tmp_path):
    prom = str(tmp_path / "spoolq.prom")
    spool.set_config("metrics_textfile", prom)
    spool.set_config("metrics_interval", 1)
    gate = tmp_path / "gate"
    w = workers(1)
    spool.enqueue({"command": f"while [ ! -e {gate} ]; do sleep 0.05; done", "id": "long"})
    from conftest import wait_for

    wait_for(lambda: spool.counts().processing == 1, 10, "the job to start")
    # Rewritten while the job runs: it comes to say the job is processing.
    wait_for(lambda: os.path.exists(prom) and 'spoolq_jobs{state="processing",queue="default"} 1' in open(prom).read(),
             10, "the textfile to show the running job")
    gate.touch()
    w.stop()


def test_a_non_ascii_form_token_is_refused_not_a_server_error(spool):
    spool.enqueue({"command": "true"})
    r = create_app(spool).test_client().post("/pause", data={"csrf": "é"})
    assert r.status_code == 400, r.status_code


# 18. log_lines.py promises "a closed stderr loses the line", but a worker started with stderr
#     closed (2>&-) has sys.stderr None: write_line raises AttributeError and the burst runs
#     nothing (exit 1). (Inherited from the old stderr_log, which the change moved.)
def test_a_worker_with_stderr_closed_runs_its_jobs(spool, spool_dir):
    import shlex
    import subprocess

    from conftest import SPOOLQ

    spool.enqueue({"command": "true"})
    argv = " ".join(shlex.quote(a) for a in [*SPOOLQ, "--spool", spool_dir, "worker", "start", "--burst"])
    r = subprocess.run(["sh", "-c", f"exec {argv} 2>&-"], capture_output=True, timeout=60)
    assert (r.returncode, spool.counts().done) == (0, 1)


def test_a_bind_port_of_superscript_digits_is_refused_without_a_traceback(spool, spool_dir):
    spool.init()
    result = spoolq(spool_dir, "web", "--bind", "127.0.0.1:²", timeout=30)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-300:]


def test_status_watch_with_a_huge_interval_is_refused_or_waits_without_a_traceback(spool, spool_dir):
    spool.init()
    result = spoolq(spool_dir, "status", "--watch", "--interval", "1e300", timeout=30)
    assert "Traceback" not in result.stderr, result.stderr[-200:]


def test_dashboard_metrics_recover_once_a_hostile_line_is_gone(spool):
    spool.enqueue({"command": "true"})
    path = plant(spool, "evil.0.jsonl", hostile_line('"\\ud800"', time.time() - 5))
    c = create_app(spool).test_client()
    c.get("/metrics")
    os.unlink(path)
    assert c.get("/metrics").status_code == 200  # the dashboard's Totals keep the bad name for good
