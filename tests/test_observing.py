"""Seeing the queue: the attempts log, `stats`, `metrics`, a foreground worker's lines,
`status --watch`, `wait`'s progress bar, and what `show` says of the last attempt."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import time

import pytest

from conftest import SPOOLQ, backdate, fill, spoolq, wait_for
from spoolq import Spool
from spoolq.reading import stats
from spoolq.running import metrics
from spoolq.store import attempts_log
from spoolq.store.attempts_log import FinishedAttempt
from spoolq.running.worker import Worker
from test_cli import clean
from spools import hostile_line, plant


def burst(spool: Spool) -> None:
    assert Worker(spool, burst=True, log=lambda _m: None).run() == 0


def facts_of(spool: Spool) -> list[FinishedAttempt]:
    return sorted(attempts_log.read(spool.layout.dir("events")), key=lambda f: (f.id, f.attempt))


def fact(job_id: str = "j", *, queue: str = "default", outcome: str = "done", ready: float = 1000.0,
         started: float = 1001.0, finished: float = 1002.0, attempt: int = 1) -> FinishedAttempt:
    return FinishedAttempt(job_id, queue, attempt, "h", "h-1-w", ready, started, started, finished, outcome,
                0 if outcome == "done" else 1, None if outcome == "done" else "exit status 1", 3)


# ---- the attempts log ------------------------------------------------------------------------

def test_every_attempt_is_one_line_with_where_it_left_its_job(spool):
    spool.set_config("backoff_base", 0)
    ok = spool.enqueue({"command": "echo hello", "id": "ok"})
    bad = spool.enqueue({"command": "echo oops >&2; exit 3", "id": "bad", "max_retries": 1})
    mail = spool.enqueue({"command": "true", "id": "m", "queue": "mail"})
    before = time.time()
    burst(spool)
    got = facts_of(spool)
    assert [(f.id, f.attempt, f.outcome, f.exit_code) for f in got] == [
        ("bad", 1, "retry", 3), ("bad", 2, "dead", 3), ("m", 1, "done", 0), ("ok", 1, "done", 0)]
    by_id = {(f.id, f.attempt): f for f in got}
    assert by_id[("ok", 1)].output_bytes == len(b"hello\n") and by_id[("bad", 1)].output_bytes == len(b"oops\n")
    assert by_id[("bad", 2)].error == "exit status 3" and by_id[("m", 1)].queue == "mail"
    for f in got:
        assert f.ready <= f.claimed <= f.started <= f.finished and before <= f.claimed
        assert f.ready >= ok.created_at - 0.01 and f.worker.startswith(f.host)
    assert by_id[("bad", 2)].ready >= by_id[("bad", 1)].finished - 0.01  # ready again after its failure
    assert mail.id == "m" and bad.id == "bad"


@pytest.mark.parametrize("line", [
    b"", b"not json", b"[1, 2]", b'{"id": "x"}', b"{" * 100000,
    b'{"id":"x","queue":"q","attempt":1,"host":"h","worker":"w","ready":1,"claimed":1,"started":1,'
    b'"finished":1,"outcome":"exploded"}',  # an outcome that does not exist
    b'{"id":"x","queue":"q","attempt":true,"host":"h","worker":"w","ready":1,"claimed":1,"started":1,'
    b'"finished":1,"outcome":"done"}',  # a bool for a number
    b'{"id":"x","queue":"q","attempt":1,"host":"h","worker":"w","ready":1,"claimed":1,"started":1,'
    b'"finished":1e999,"outcome":"done"}',  # infinity
    b'{"id":7,"queue":"q","attempt":1,"host":"h","worker":"w","ready":1,"claimed":1,"started":1,'
    b'"finished":1,"outcome":"done"}',
])
def test_a_line_that_is_not_an_attempt_is_skipped(line):
    assert attempts_log.parse_line(line) is None


def test_torn_garbage_and_overlong_lines_are_skipped_and_the_rest_read(tmp_path):
    path = tmp_path / "w.0.jsonl"
    good = fact("a").to_line()
    path.write_bytes(good + b"garbage\n" + b"x" * (attempts_log.MAX_LINE * 3) + b"\n" + fact("b").to_line()
                     + fact("torn").to_line()[:-9])
    assert [f.id for f in attempts_log.read_file(str(path))] == ["a", "b"]


def test_only_regular_files_are_read(tmp_path):
    directory = tmp_path / "events"
    directory.mkdir()
    secret = tmp_path / "secret.jsonl"
    secret.write_bytes(fact("secret").to_line())
    os.symlink(secret, directory / "link.jsonl")
    os.mkfifo(directory / "fifo.jsonl")  # opening a fifo would block the reader for good
    (directory / "w.0.jsonl").write_bytes(fact("mine").to_line())
    assert [f.id for f in attempts_log.read(str(directory))] == ["mine"]


def test_the_log_rotates_and_old_files_are_deleted(tmp_path, monkeypatch):
    directory = str(tmp_path / "events")
    monkeypatch.setattr(attempts_log, "ROTATE_BYTES", 1000)
    log = attempts_log.EventLog(directory, "h-1-w", modes=Spool(str(tmp_path / "s")).store.modes, keep_seconds=3600)
    for i in range(20):
        log.record(fact(f"j{i}"))
    log.close()
    names = sorted(os.listdir(directory))
    assert len(names) > 3 and all(os.path.getsize(os.path.join(directory, n)) <= 1000 for n in names)
    assert sorted(f.id for f in attempts_log.read(directory)) == sorted(f"j{i}" for i in range(20))
    old = os.path.join(directory, names[0])
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    again = attempts_log.EventLog(directory, "h-1-w", modes=Spool(str(tmp_path / "s")).store.modes, keep_seconds=3600)
    again.record(fact("later"))
    again.close()
    ids = {f.id for f in attempts_log.read(directory)}
    assert "later" in ids and "j0" not in ids and "j19" in ids  # the old file went, the newest stayed
    assert len(os.listdir(directory)) == len(names)  # one gone, one new


def test_a_symlink_where_the_log_goes_stops_the_worker(spool, tmp_path):
    spool.enqueue({"command": "true"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.rmdir(spool.layout.dir("events"))
    os.symlink(elsewhere, spool.layout.dir("events"))
    result = spoolq(spool.root, "worker", "start", "--burst")
    assert result.returncode == 1 and "events" in result.stderr and "Traceback" not in result.stderr
    assert os.listdir(elsewhere) == []


# ---- stats -----------------------------------------------------------------------------------

def write_facts(spool: Spool, facts: list[FinishedAttempt]) -> None:
    log = attempts_log.EventLog(spool.layout.dir("events"), "h-1-w", modes=spool.store.modes, keep_seconds=86400 * 365)
    for f in facts:
        log.record(f)
    log.close()


def test_stats_count_rates_and_percentiles_over_the_window(spool):
    spool.init()
    now = time.time()
    facts = [fact(f"d{i}", ready=now - 100, started=now - 100 + i, finished=now - 99 + i + i / 10) for i in range(10)]
    facts += [fact("r", outcome="retry", ready=now - 50, started=now - 50, finished=now - 49),
              fact("r", outcome="dead", attempt=2, ready=now - 40, started=now - 40, finished=now - 30),
              fact("m", queue="mail", ready=now - 20, started=now - 20, finished=now - 19),
              fact("old", started=now - 7200, finished=now - 7199),  # before the window
              fact("lost", outcome="lost", started=now - 10, finished=now - 9)]
    write_facts(spool, facts)
    s = spool.stats(3600, now=now).to_dict()
    total = s["total"]
    assert (total["done"], total["failed_attempts"], total["dead"], total["lost_attempts"]) == (11, 2, 1, 1)
    assert total["success_rate"] == round(11 / 13, 4)
    assert total["throughput_per_min"] == round(12 / 60, 3)
    assert total["run_seconds"]["max"] == 10.0  # the dead attempt ran 10 s
    assert total["wait_seconds"]["p50"] == 3.0  # waits 0-9 and three of 0: the 7th of 13
    assert set(s["queues"]) == {"default", "mail"} and s["queues"]["mail"]["done"] == 1
    assert sum(s["series"]["finished"]) == 12 and sum(s["series"]["failed"]) == 2
    only_mail = spool.stats(3600, now=now, queue="mail").to_dict()
    assert only_mail["total"]["done"] == 1 and set(only_mail["queues"]) == {"mail"}


def test_stats_says_how_long_the_oldest_ready_job_has_waited(spool):
    spool.enqueue({"command": "true", "delay": 3600})  # scheduled: not ready, not counted
    spool.enqueue({"command": "true", "queue": "mail"})
    assert spool.stats(3600).to_dict()["total"]["oldest_ready_age"] < 5
    dropped = os.path.join(spool.layout.pending, "from-elsewhere.json")
    with open(dropped, "w") as f:
        json.dump({"command": "true"}, f)
    backdate(dropped, 120)  # not adopted yet (no worker runs); its mtime is its writer's to set
    assert spool.stats(3600).to_dict()["total"]["oldest_ready_age"] < 5  # it counts from its arrival
    os.unlink(spool.layout.pending + "/" + [n for n in os.listdir(spool.layout.pending) if "%mail" in n][0])
    s = spool.stats(3600, now=time.time() + 120).to_dict()
    assert 119 <= s["total"]["oldest_ready_age"] <= 130 and "mail" not in s["queues"]  # the dropped file's


def test_stats_cli_prints_a_table_and_a_chart_and_json(cli, spool):
    spool.set_config("backoff_base", 0)
    spool.enqueue({"command": "true"})
    spool.enqueue({"command": "false", "max_retries": 0, "queue": "mail"})
    burst(spool)
    text = clean(cli("stats")).stdout
    assert re.search(r"^default +1 +0 +0 +100\.0%", text, re.M) and re.search(r"^mail +0 +1 +1 +0\.0%", text, re.M)
    assert re.search(r"^finished per minute +\|[ .:\-=+*#%@]{59}@\| max 2$", text, re.M)
    data = cli.json("stats", "--since", "30m")
    assert data["window_seconds"] == 1800 and data["total"]["done"] == 1 and data["total"]["dead"] == 1
    assert cli.json("stats", "--queue", "mail")["total"]["done"] == 0


def test_stats_of_a_queue_nothing_has_named_warns(cli, spool):
    spool.enqueue({"command": "true", "queue": "mail"})
    result = clean(cli("stats", "--queue", "nosuch"))
    assert "Warning: no job, limit, pause or schedule has named queue 'nosuch' (known: default, mail)" in result.stderr
    assert "Warning" not in clean(cli("stats", "--queue", "mail")).stderr


@pytest.mark.parametrize("since", ["1x", "0", "-5m", "", "400d", "1e3", "nan"])
def test_stats_refuses_a_window_that_is_not_one(cli, spool, since):
    spool.init()
    result = cli("stats", "--since", since)
    assert result.exit_code == 2 and "--since" in result.output and "Traceback" not in result.output


# ---- metrics ---------------------------------------------------------------------------------

def parse_exposition(text: str) -> dict[str, float]:
    """Samples by name and labels, and a check of the format's grammar for every line."""
    samples = {}
    types = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
            continue
        if line.startswith("# HELP "):
            continue
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})? '
                         r'(-?[0-9.e+]+|\+Inf)', line)
        assert m, line
        family = re.sub(r"_(bucket|sum|count)$", "", m.group(1))
        assert family in types or m.group(1) in types, line
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return samples


def promtool_check(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("SPOOLQ_REQUIRE_PROMTOOL") == "1":
            pytest.fail("promtool is required here (SPOOLQ_REQUIRE_PROMTOOL=1) and is not installed")
        return  # parse_exposition has checked the grammar
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_metrics_expose_states_attempts_histograms_workers_and_pauses(cli, spool):
    spool.set_config("backoff_base", 0)
    spool.enqueue({"command": "true"})
    spool.enqueue({"command": "false", "max_retries": 1, "queue": "mail"})
    spool.enqueue({"command": "true", "delay": 3600})
    burst(spool)
    spool.pause("mail")
    text = clean(cli("metrics")).stdout
    promtool_check(text)
    m = parse_exposition(text)
    assert m['spoolq_jobs{state="done",queue="default"}'] == 1
    assert m['spoolq_jobs{state="scheduled",queue="default"}'] == 1
    assert m['spoolq_jobs{state="dead",queue="mail"}'] == 1
    assert m['spoolq_attempts_total{queue="mail",outcome="retry"}'] == 1
    assert m['spoolq_attempts_total{queue="mail",outcome="dead"}'] == 1
    assert m['spoolq_run_seconds_count{queue="mail"}'] == 2
    assert m['spoolq_run_seconds_bucket{queue="default",le="+Inf"}'] == 1
    assert m['spoolq_paused{queue="mail"}'] == 1


def test_dead_means_the_same_everywhere_and_quarantined_files_reach_prometheus(cli, spool):
    """status counted quarantined drop-ins as dead (13), queue list and metrics did not (6): a
    quarantined file is no job, counted apart under its own name by every reader."""
    spool.set_config("drop_grace", 0)
    spool.enqueue({"command": "exit 3", "max_retries": 0, "queue": "mail"})
    for n in range(2):
        with open(os.path.join(spool.layout.pending, f"broken{n}.json"), "w") as f:
            f.write("{not json")
    burst(spool)
    status = cli.json("status")
    assert (status["dead"], status["quarantined"]) == (1, 2)
    queues = cli.json("queue", "list")
    assert sum(q["dead"] for q in queues) == status["dead"]
    m = parse_exposition(clean(cli("metrics")).stdout)
    assert sum(v for k, v in m.items() if k.startswith('spoolq_jobs{state="dead"')) == status["dead"]
    assert m["spoolq_quarantined_files"] == 2
    from spoolq.web import create_app

    page = create_app(spool).test_client().get("/").get_data(as_text=True)  # the dashboard's cards
    assert re.search(r'id="count-dead">\s*<span class="n">1<', page), page
    assert re.search(r'id="count-quarantined">\s*<span class="n">2<', page), page
    assert len(cli.json("dlq", "list")) == 3  # the dead-letter queue holds both, each saying why


def test_metrics_say_zero_workers_when_none_runs(cli, spool):
    """`spoolq_workers == 0` must be able to alert: with no worker there is still a sample."""
    spool.init()
    m = parse_exposition(clean(cli("metrics")).stdout)
    assert [v for k, v in m.items() if k.startswith("spoolq_workers")] == [0]


def test_metrics_escape_a_hostile_host_name(spool):
    spool.init()
    owner = spool.owners.register("worker")
    path = spool.layout.worker_file(owner)
    record = json.loads(open(path).read())
    record["host"] = 'evil"} 1\nspoolq_fake 9\\'
    with open(path, "w") as f:
        json.dump(record, f)
    text = metrics.exposition(spool, metrics.Totals())
    promtool_check(text)
    assert "spoolq_fake" not in parse_exposition(text)


def test_a_long_running_reader_reads_only_what_was_appended(spool):
    spool.init()
    totals = metrics.Totals()
    write_facts(spool, [fact("a")])
    totals.update(spool.layout.dir("events"))
    write_facts(spool, [fact("b"), fact("c", outcome="dead")])
    totals.update(spool.layout.dir("events"))
    totals.update(spool.layout.dir("events"))
    assert dict(totals.attempts) == {("default", "done"): 2, ("default", "dead"): 1}


def test_metrics_textfile_is_written_whole_and_only_as_prom(cli, spool, tmp_path):
    spool.init()
    target = tmp_path / "collector" / "spoolq.prom"
    target.parent.mkdir()
    clean(cli("metrics", "--textfile", str(target)))
    assert "spoolq_jobs" in target.read_text() and os.listdir(target.parent) == ["spoolq.prom"]
    result = cli("metrics", "--textfile", str(tmp_path / "collector" / "spoolq.txt"))
    assert result.exit_code == 2 and ".prom" in result.output
    result = cli("metrics", "--textfile", str(tmp_path / "missing" / "x.prom"))
    assert result.exit_code != 0 and "Traceback" not in result.output


@pytest.mark.slow
def test_workers_keep_the_textfile_fresh(spool, workers, tmp_path):
    target = tmp_path / "node" / "spoolq.prom"
    target.parent.mkdir()
    spool.set_config("metrics_textfile", str(target))
    spool.set_config("metrics_interval", 1)
    workers(2)
    wait_for(target.exists, 10, "the textfile")
    job = spool.enqueue({"command": "true"})
    wait_for(lambda: 'spoolq_jobs{state="done",queue="default"} 1' in target.read_text(), 10,
             f"job {job.id} to show in the textfile")
    promtool_check(target.read_text())
    assert [n for n in os.listdir(target.parent)] == ["spoolq.prom"]  # no temp file left behind


def test_a_reader_counting_again_does_not_list_a_directory_still_since(spool):
    """The metrics textfile and the dashboard count every interval: done/ and dead/, which may
    hold a week of jobs, are listed again only once they changed. Seen here by a file slipped in
    with done/'s times put back as they were: a count that listed done/ would find it."""
    spool.enqueue_many([{"command": "true"} for _ in range(2)])
    burst(spool)
    still = time.time() - 60
    os.utime(spool.layout.done, (still, still))
    assert spool.views.census().totals.done == 2
    shutil.copy(os.path.join(spool.layout.done, os.listdir(spool.layout.done)[0]),
                os.path.join(spool.layout.done, "slipped.json"))
    os.utime(spool.layout.done, (still, still))
    assert spool.views.census().totals.done == 2  # one stat, no listing
    os.utime(spool.layout.done)  # changed: listed again
    assert spool.views.census().totals.done == 3


@pytest.mark.parametrize("value", ["relative.prom", "/tmp/x.txt", "/tmp/\0.prom"])
def test_a_textfile_setting_that_is_not_an_absolute_prom_path_is_refused(cli, spool, value):
    spool.init()
    result = cli("config", "set", "metrics_textfile", value)
    assert result.exit_code == 2 and "metrics_textfile" in result.output


# ---- a foreground worker's lines -----------------------------------------------------------

def test_a_foreground_worker_says_each_job_claimed_and_finished_and_a_burst_sums_up(spool):
    spool.enqueue({"command": "true", "id": "good"})
    spool.enqueue({"command": "exit 4", "id": "bad", "max_retries": 0})
    result = spoolq(spool.root, "worker", "start", "--burst", "--count", "2")
    assert result.returncode == 0, result.stderr
    err = result.stderr
    assert re.search(r"job good attempt 1 claimed$", err, re.M)
    assert re.search(r"job good attempt 1 finished: exit 0 in [0-9.]+s \(done\)$", err, re.M)
    assert re.search(r"job bad attempt 1 finished: exit 4 in [0-9.]+s \(dead\)$", err, re.M)
    assert re.search(r"burst finished: 2 jobs in 2 attempts, 1 ok, 1 failed, in [0-9.]+s \([0-9.]+ jobs/s\)$",
                     err, re.M)


def test_quiet_silences_the_job_lines_and_json_makes_every_line_an_object(spool):
    spool.enqueue({"command": "true", "id": "q"})
    quiet = spoolq(spool.root, "worker", "start", "--burst", "--quiet")
    assert quiet.returncode == 0 and "job q" not in quiet.stderr and "burst finished: 1 job in 1 attempt" in quiet.stderr
    spool.enqueue({"command": "true", "id": "j"})
    loud = spoolq(spool.root, "worker", "start", "--burst", "--log-format", "json")
    objects = [json.loads(line) for line in loud.stderr.splitlines()]
    finished = [o for o in objects if o.get("event") == "finished"]
    assert finished == [{**finished[0], "id": "j", "attempt": 1, "exit_code": 0, "outcome": "done", "error": None}]
    assert all("time" in o for o in objects) and any("burst finished" in o.get("message", "") for o in objects)


# ---- status --watch and wait's progress bar -------------------------------------------------

def test_status_watch_prints_a_block_per_interval_and_ctrl_c_ends_it(spool):
    spool.enqueue({"command": "true"})
    proc = subprocess.Popen([*SPOOLQ, "--spool", spool.root, "status", "--watch", "--interval", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=ctrl_c_works)
    seen = b""
    deadline = time.monotonic() + 20
    while seen.count(b"pending 1 ") < 2 and time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 1)[0]:
            seen += os.read(proc.stdout.fileno(), 65536)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and err == b""
    assert seen.count(b"pending 1 ") >= 2 and b"\x1b[" not in seen + out and b"no job running" in seen


def ctrl_c_works() -> None:
    """In the command's child: SIGINT at its default. A shell starts a background job (a CI run,
    `cmd &`) with SIGINT ignored, and Python keeps an ignored SIGINT ignored: Ctrl+C would then
    mean nothing to it, as to any program started that way."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def read_pty(master: int, until: bytes, timeout: float = 20) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while until not in seen and time.monotonic() < deadline:
        if select.select([master], [], [], 0.5)[0]:
            try:
                seen += os.read(master, 65536)
            except OSError:
                break
    return seen


def test_status_watch_redraws_in_place_on_a_terminal(spool):
    spool.enqueue({"command": "true"})
    master, slave = pty.openpty()
    proc = subprocess.Popen([*SPOOLQ, "--spool", spool.root, "status", "--watch", "--interval", "0.2"],
                            stdout=slave, stderr=slave, stdin=subprocess.DEVNULL, preexec_fn=ctrl_c_works)
    os.close(slave)
    try:
        seen = read_pty(master, b"pending 1 ")
        seen += read_pty(master, b"pending 1 ")
        assert seen.count(b"\x1b[H\x1b[2J") >= 1 and b"pending 1 " in seen
    finally:
        proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            read_pty(master, b"\0", 0.2)  # drained meanwhile: a full terminal would hold its last redraw
        os.close(master)
    assert proc.wait(timeout=5) == 0


def test_wait_draws_a_progress_bar_on_a_terminal_and_never_on_a_pipe(spool):
    jobs = [spool.enqueue({"command": "true"}) for _ in range(3)]
    master, slave = pty.openpty()
    proc = subprocess.Popen([*SPOOLQ, "--spool", spool.root, "wait"], stderr=slave, stdout=subprocess.DEVNULL)
    os.close(slave)
    seen = read_pty(master, b"0/3 finished")
    burst(spool)
    seen += read_pty(master, b"3/3 finished")
    assert proc.wait(timeout=20) == 0
    os.close(master)
    assert b"[" + b"." * 30 + b"] 0/3 finished" in seen and b"[" + b"#" * 30 + b"] 3/3 finished" in seen
    piped = spoolq(spool.root, "wait", "--progress", *[j.id for j in jobs])
    assert piped.returncode == 0 and piped.stderr == "" and piped.stdout == ""


# ---- show ------------------------------------------------------------------------------------

def test_show_json_gives_the_last_attempts_host_and_the_output(cli, spool):
    job = spool.enqueue({"command": "echo '<b>out</b>'; exit 1", "max_retries": 0})
    burst(spool)
    shown = cli.json("show", job.id)
    assert shown["host"] == os.uname().nodename[:64] or shown["host"]
    assert "<b>out</b>\n" in shown["output"] and shown["output_cut"] is False
    assert shown["started_at"] and shown["finished_at"] and shown["duration"] is not None
    listed = next(j for j in cli.json("list") if j["id"] == job.id)
    assert listed["host"] == shown["host"] and "output" not in listed


def test_a_full_disk_costs_lines_of_the_attempts_log_never_its_writer(small_fs):
    directory = os.path.join(small_fs, "events")
    log = attempts_log.EventLog(directory, "h-1-w", modes=Spool(os.path.join(small_fs, "s")).store.modes,
                          keep_seconds=3600)
    log.record(fact("before"))
    filler = fill(small_fs)
    for i in range(200):  # more than the last page of the file can hold: writes fail, quietly
        log.record(fact(f"during{i}"))
    assert log.fd is not None and log.torn  # it kept its file: no new file per lost line
    os.unlink(filler)
    log.record(fact("after"))
    log.close()
    ids = [f.id for f in attempts_log.read(directory)]
    assert {"before", "after"} <= set(ids) and len(ids) < 202  # lines were lost, nothing else
    assert len(os.listdir(directory)) == 1


# 1. A lone surrogate escape in an attempts-log line is accepted by parse_line, and then every
#    reader that prints it dies: stats, stats --json, metrics (and the dashboard's /metrics).
@pytest.mark.review("observing 1")
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
@pytest.mark.review("observing 2")
def test_stats_does_not_print_terminal_escapes_from_the_log(spool, spool_dir):
    plant(spool, "evil.0.jsonl", hostile_line('"\\u001b]0;pwned\\u0007\\u001b[2J"', time.time() - 5))
    result = spoolq(spool_dir, "stats")
    assert result.returncode == 0
    assert "\x1b" not in result.stdout


# ---- observing review: the dashboard -------------------------------------------------------------


def test_one_worker_per_host_writes_the_textfile(spool):
    spool.init()
    owners = sorted(spool.owners.register("worker") for _ in range(3))
    writers = [metrics.Textfile(spool.root, lambda o=o: o, lambda _m: None)._is_writer(spool) for o in owners]
    assert writers == [True, False, False]  # one reader's counters: they only grow


# 7. The burst summary counts only workers that returned from run(): the jobs a worker finished
#    before it was killed (OOM, a job killing it) vanish from "burst finished: N jobs".
@pytest.mark.review("observing 7")
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
@pytest.mark.review("observing 10")
def test_a_quiet_workers_attempts_are_not_lost_after_a_sibling_prunes(spool):
    spool.enqueue({"command": "true"})  # the spool exists
    directory, keep = spool.layout.dir("events"), 3600
    quiet = attempts_log.EventLog(directory, "h-1-quiet", modes=spool.store.modes, keep_seconds=keep)
    now = time.time()
    quiet.record(FinishedAttempt("early", "default", 1, "h", "h-1-quiet", now - 7300, now - 7300, now - 7300, now - 7200, "done"))
    (path,) = [os.path.join(directory, n) for n in os.listdir(directory)]
    os.utime(path, (now - 7200, now - 7200))  # two hours without a job
    busy = attempts_log.EventLog(directory, "h-2-busy", modes=spool.store.modes, keep_seconds=keep)
    busy.record(FinishedAttempt("b", "default", 1, "h", "h-2-busy", now, now, now, now, "done"))  # starts: prunes
    quiet.record(FinishedAttempt("late", "default", 1, "h", "h-1-quiet", now, now, now, now + 1, "done"))
    assert "late" in {f.id for f in attempts_log.read(directory)}


# 12. A foreground worker now writes two lines per job to stderr, blocking: under a parent that
#     does not read its stderr pipe (Popen(stderr=PIPE) and no reader) it stops after ~300 jobs,
#     holding a claimed job in processing/ for as long as it lives (its heartbeat goes on).
@pytest.mark.review("observing 12")
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
@pytest.mark.review("observing 14")
def test_readme_documents_the_new_commands_and_keys():
    docs = os.path.join(os.path.dirname(__file__), "..", "docs")
    readme = "".join(open(os.path.join(docs, name)).read() for name in ("cli.md", "operating.md"))
    missing = [w for w in ("Seeing the queue", "`stats", "`metrics", "`web", "--watch", "--progress",
                           "`keep_events`", "`metrics_textfile`", "`metrics_interval`", "--log-format")
               if w not in readme]
    assert not missing, missing


# 16. The burst summary counts attempts and calls them jobs: one job that fails twice and then
#     succeeds is reported as "3 jobs, 1 ok, 2 failed".
@pytest.mark.review("observing 16")
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
@pytest.mark.review("observing 17")
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


# 18. log_lines.py promises "a closed stderr loses the line", but a worker started with stderr
#     closed (2>&-) has sys.stderr None: write_line raises AttributeError and the burst runs
#     nothing (exit 1). (Inherited from the old stderr_log, which the change moved.)
@pytest.mark.review("observing 18")
def test_a_worker_with_stderr_closed_runs_its_jobs(spool, spool_dir):
    import shlex
    import subprocess

    from conftest import SPOOLQ

    spool.enqueue({"command": "true"})
    argv = " ".join(shlex.quote(a) for a in [*SPOOLQ, "--spool", spool_dir, "worker", "start", "--burst"])
    r = subprocess.run(["sh", "-c", f"exec {argv} 2>&-"], capture_output=True, timeout=60)
    assert (r.returncode, spool.counts().done) == (0, 1)


def test_status_watch_with_a_huge_interval_is_refused_or_waits_without_a_traceback(spool, spool_dir):
    spool.init()
    result = spoolq(spool_dir, "status", "--watch", "--interval", "1e300", timeout=30)
    assert "Traceback" not in result.stderr, result.stderr[-200:]

