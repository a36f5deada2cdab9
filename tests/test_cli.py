"""The CLI contract of issue 2, in-process: every form, exit code, message and --json output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import SPOOLQ, examples
from spoolq import ConfigError, Spool
from spoolq.format import durations
from spoolq.cli import main
from spoolq.moves.transitions import Adopted
from spoolq.running.worker import Worker

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
SHOW_FIELDS = ("id", "command", "state", "attempts", "max_retries", "priority", "created_at", "updated_at",
               "run_at", "exit_code", "last_error")
STATUS_KEYS = {"pending", "scheduled", "waiting", "processing", "done", "dead", "quarantined", "workers"}


# ---- helpers ---------------------------------------------------------------------------------


def clean(result, code: int = 0):
    """The exit code is `code`, and nothing anywhere looks like a Python traceback."""
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, f"exit {result.exit_code}, wanted {code}: {result.output}"
    return result


def ids_of(result) -> list[str]:
    return result.stdout.split()


def parse_iso(value: str) -> float:
    assert isinstance(value, str) and ISO_UTC.fullmatch(value), value
    dt = datetime.fromisoformat(value)
    assert dt.utcoffset().total_seconds() == 0
    return dt.timestamp()


def snapshot(root: str) -> dict[str, object]:
    """Every entry under `root` with its bytes: to prove that nothing at all was written. (A
    lock file's mtime is when the lock was last taken: a command that took it and wrote nothing
    leaves its bytes as they were.)"""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            path = os.path.join(dirpath, f)
            with open(path, "rb") as fh:
                taken = os.path.basename(dirpath) == "locks"
                out[os.path.relpath(path, root)] = (fh.read(), 0 if taken else os.stat(path).st_mtime_ns)
    return out


def pending_name(spool: Spool, job_id: str) -> str:
    return os.path.basename(spool.find(job_id).path)


def make_processing(spool: Spool, job_id: str, owner: str | None = None, **spec):
    spool.enqueue({"command": "true", "id": job_id, **spec})
    owner = owner or spool.owners.register("worker")
    claimed = spool.transitions.claim(pending_name(spool, job_id), owner)
    assert claimed is not None
    return claimed


def make_done(spool: Spool, job_id: str, **spec) -> None:
    claimed = make_processing(spool, job_id, **spec)
    spool.transitions.finish(claimed, ok=True, exit_code=0, error=None)
    spool.owners.unregister(claimed.owner)


def make_dead(spool: Spool, job_id: str, **spec) -> None:
    claimed = make_processing(spool, job_id, max_retries=0, **spec)
    decision = spool.transitions.finish(claimed, ok=False, exit_code=3, error="exit status 3")
    assert decision.state == "dead"
    spool.owners.unregister(claimed.owner)


def drain(spool_dir: str) -> None:
    """Run every ready job with an in-process burst worker."""
    Worker(Spool(spool_dir), burst=True, log=lambda _m: None).run()


def quarantine(spool: Spool, name: str, data: bytes) -> str:
    """Drop a malformed file and let the spool quarantine it; returns its quarantine id."""
    spool.set_config("drop_grace", 0)
    with open(os.path.join(spool.layout.pending, name), "wb") as f:
        f.write(data)
    owner = spool.owners.register("worker")
    result = spool.transitions.adopt(name, owner, now=time.time() + 1)
    assert result.outcome is Adopted.QUARANTINED, result
    spool.owners.unregister(owner)
    [qid] = [e[:-5] for e in os.listdir(spool.layout.dead) if e.startswith("+")]
    return qid


# ---- enqueue: every form -----------------------------------------------------------------------


def test_enqueue_positional_command(cli, spool_dir, tmp_path, monkeypatch):
    workdir = tmp_path / "here"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    result = clean(cli("enqueue", "echo hello world"))
    [job_id] = ids_of(result)
    assert re.fullmatch(r"[A-Za-z0-9_.\-]{1,128}", job_id) and not job_id.startswith(".")
    d = cli.json("show", job_id)
    assert d["command"] == "echo hello world"
    assert d["state"] == "pending" and d["attempts"] == 0 and d["max_retries"] == 3 and d["priority"] == 0
    assert d["cwd"] == str(workdir), "the CLI records the caller's working directory"
    assert d["run_at"] is None and d["exit_code"] is None and d["last_error"] is None


def test_enqueue_positional_json_keeps_unknown_fields(cli, spool):
    job = {"command": "echo hi", "id": "j1", "max_retries": 5, "priority": 7, "timeout": 2.5,
           "env": {"A": "b"}, "cwd": "/tmp", "custom": {"k": [1, "two", None]}, "tag": "x"}
    assert ids_of(clean(cli("enqueue", json.dumps(job)))) == ["j1"]
    d = cli.json("show", "j1")
    for key, value in job.items():
        assert d[key] == value, key
    with open(spool.find("j1").path, "rb") as f:
        stored = json.loads(f.read())
    assert stored["custom"] == {"k": [1, "two", None]} and stored["tag"] == "x"
    # Leading white space still means JSON.
    assert ids_of(clean(cli("enqueue", '  {"command": "true", "id": "j2"}'))) == ["j2"]


def test_enqueue_cmd_with_flags(cli):
    before = time.time()
    result = clean(cli("enqueue", "--cmd", "echo flags", "--id", "f1", "--max-retries", "0", "--priority", "-5",
                       "--timeout", "1.5", "--delay", "60"))
    assert ids_of(result) == ["f1"]
    d = cli.json("show", "f1")
    assert (d["command"], d["max_retries"], d["priority"], d["timeout"]) == ("echo flags", 0, -5, 1.5)
    assert d["state"] == "scheduled"
    assert before + 59 <= parse_iso(d["run_at"]) <= time.time() + 61
    assert cli.json("status")["scheduled"] == 1


@pytest.mark.parametrize("when, expected", [("2030-01-02T03:04:05Z", "2030-01-02T03:04:05.000Z"),
                                             ("2030-01-02T05:04:05+02:00", "2030-01-02T03:04:05.000Z"),
                                             ("1893553445", "2030-01-02T03:04:05.000Z")])
def test_enqueue_run_at_forms(cli, when, expected):
    clean(cli("enqueue", "--cmd", "true", "--id", "r", "--run-at", when))
    d = cli.json("show", "r")
    assert d["run_at"] == expected and d["state"] == "scheduled"
    clean(cli("enqueue", json.dumps({"command": "true", "id": "r2", "run_at": when if not when.isdigit()
                                     else int(when)})))
    assert cli.json("show", "r2")["run_at"] == expected


def test_enqueue_file_and_stdin(cli, tmp_path):
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"command": "echo from file", "id": "file1", "priority": 1}))
    assert ids_of(clean(cli("enqueue", "--file", str(path)))) == ["file1"]
    assert cli.json("show", "file1")["command"] == "echo from file"
    # Flags apply on top of the file's object.
    path.write_text(json.dumps({"command": "echo again", "id": "file2"}))
    clean(cli("enqueue", "--file", str(path), "--priority", "9"))
    assert cli.json("show", "file2")["priority"] == 9
    # '-' is stdin; the object may span lines.
    result = clean(cli("enqueue", "--file", "-", input='{\n  "command": "echo stdin",\n  "id": "file3"\n}\n'))
    assert ids_of(result) == ["file3"]
    assert cli.json("show", "file3")["command"] == "echo stdin"


def test_enqueue_batch(cli, tmp_path):
    lines = [{"command": "echo 1", "id": "b1"}, {"command": "echo 2", "priority": 3}, {"command": "echo 3",
                                                                                           "id": "b3"}]
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines[:2]) + "\n\n   \n" + json.dumps(lines[2]) + "\n")
    result = clean(cli("enqueue", "--batch", str(path)))
    got = ids_of(result)
    assert len(got) == 3 and got[0] == "b1" and got[2] == "b3", "one id per line, in input order"
    assert cli.json("show", got[1])["priority"] == 3
    # stdin, with --json: one JSON object per line.
    result = clean(cli("enqueue", "--batch", "-", "--json",
                       input='{"command": "echo a", "id": "s1"}\n{"command": "echo b", "id": "s2", "delay": 30}\n'))
    objs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["id"] for o in objs] == ["s1", "s2"]
    assert [o["state"] for o in objs] == ["pending", "scheduled"]
    assert objs[0]["command"] == "echo a" and objs[0]["attempts"] == 0
    assert cli.json("status")["pending"] == 4


def test_enqueue_json_output(cli):
    result = clean(cli("enqueue", "--json", "--cmd", "echo j", "--id", "jj", "--priority", "2"))
    [line] = result.stdout.splitlines()
    obj = json.loads(line)
    assert obj["id"] == "jj" and obj["command"] == "echo j" and obj["priority"] == 2 and obj["state"] == "pending"
    for key in ("created_at", "updated_at"):
        parse_iso(obj[key])
    result = clean(cli("enqueue", "--json", '{"command": "echo j2"}'))
    assert json.loads(result.stdout)["command"] == "echo j2"


def test_duplicate_id_exit_1_and_original_intact(cli, spool):
    clean(cli("enqueue", "--cmd", "echo first", "--id", "dup"))
    result = clean(cli("enqueue", "--cmd", "echo second", "--id", "dup"), 1)
    assert "dup" in result.output and "exists" in result.output
    clean(cli("enqueue", '{"command": "echo third", "id": "dup"}'), 1)
    assert cli.json("show", "dup")["command"] == "echo first"
    assert cli.json("status")["pending"] == 1


def test_batch_with_an_existing_id_writes_nothing(cli, spool, tmp_path):
    clean(cli("enqueue", "--cmd", "true", "--id", "taken"))
    before = snapshot(spool.root)
    result = clean(cli("enqueue", "--batch", "-",
                       input='{"command": "echo a", "id": "new1"}\n{"command": "echo b", "id": "taken"}\n'), 1)
    assert "taken" in result.output
    assert snapshot(spool.root) == before, "the batch is all or nothing"
    clean(cli("show", "new1"), 1)


@pytest.mark.parametrize("text, line", [
    ('{"command": "a"}\n\n{"command": 5}\n', 3),
    ('{"command": "a"}\n[1]\n', 2),
    ('{"command": "a"}\n{"command": "b"\n', 2),
    ('\n\n\n{"id": "x"}\n', 4),
    ('{"command": "a", "id": "d"}\n\n{"command": "b", "id": "d"}\n', 3),
    ('{"command": "a", "id": ".bad"}\n', 1),
])
def test_batch_invalid_line_is_named_and_nothing_written(cli, spool_dir, text, line):
    result = clean(cli("enqueue", "--batch", "-", input=text), 2)
    assert f"line {line}" in result.output
    assert not os.path.exists(spool_dir), "invalid input must not even create the spool"


# ---- bad input: exit 2 and nothing at all written ------------------------------------------------

BAD = [
    (["enqueue"], None),
    (["enqueue", "echo", "--cmd", "x"], None),
    (["enqueue", "[1, 2]"], "object"),
    (["enqueue", "[]"], "object"),
    (["enqueue", "{"], "JSON"),
    (["enqueue", "{'command': 'x'}"], "JSON"),
    (["enqueue", '{"command": 5}'], "command"),
    (["enqueue", "{}"], "command"),
    (["enqueue", ""], "command"),
    (["enqueue", "   "], "command"),
    (["enqueue", '{"command": "x", "id": ".hidden"}'], "id"),
    (["enqueue", '{"command": "x", "env": {"A": 1}}'], "env"),
    (["enqueue", '{"command": "x", "max_retries": true}'], "max_retries"),
    (["enqueue", '{"command": "x", "timeout": "10"}'], "timeout"),
    (["enqueue", '{"command": "x", "run_at": "2300-01-01"}'], "run_at"),
    (["enqueue", '{"command": "x", "delay": 1e999}'], "delay"),
    (["enqueue", '{"command": "x", "priority": NaN}'], None),
    (["enqueue", '{"command": "echo \\ud800"}'], "command"),
    (["enqueue", "--cmd", "x", "--id", "a/b"], "id"),
    (["enqueue", "--cmd", "x", "--id", ""], "id"),
    (["enqueue", "--cmd", "x", "--id", "x" * 129], "id"),
    (["enqueue", "--cmd", "x", "--id", "../escape"], "id"),
    (["enqueue", "--cmd", "x", "--max-retries", "-1"], None),
    (["enqueue", "--cmd", "x", "--max-retries", "two"], None),
    (["enqueue", "--cmd", "x", "--priority", "1.5"], None),
    (["enqueue", "--cmd", "x", "--priority", "1000000000"], "priority"),
    (["enqueue", "--cmd", "x", "--timeout", "0"], None),
    (["enqueue", "--cmd", "x", "--delay", "-1"], None),
    (["enqueue", "--cmd", "x", "--run-at", "soon"], "run_at"),
    (["enqueue", "--cmd", "x", "--delay", "5", "--run-at", "2030-01-01"], "not both"),
    (["enqueue", "--cmd", ""], "command"),
    (["enqueue", "--file", "/nonexistent/job.json"], "cannot read"),
    (["enqueue", "--batch", "/nonexistent/jobs.jsonl"], "cannot read"),
    (["enqueue", "--batch", "-", "--id", "x"], "--id"),
    (["enqueue", "--file", "-", "--batch", "-"], None),
    (["list", "--state", "nope"], None),
    (["list", "--limit", "-1"], None),
    (["list", "--limit", "x"], None),
    (["show"], None),
    (["show", ".x"], "id"),
    (["show", "a/b"], "id"),
    (["show", "+../../x"], "id"),
    (["logs", "../etc"], "id"),
    (["wait", ".x"], "id"),
    (["wait", "--timeout", "-1"], None),
    (["dlq", "retry"], None),
    (["dlq", "retry", "a", "--all"], None),
    (["dlq", "retry", ".x"], "id"),
    (["config", "get", "nope"], "nope"),
    (["config", "set", "nope", "1"], "nope"),
    (["config", "set", "max_retries", "abc"], "max_retries"),
    (["config", "set", "max_retries", "--", "-1"], "max_retries"),
    (["config", "set", "max_retries", "1.5"], "max_retries"),
    (["config", "set", "backoff_base", "fast"], "backoff_base"),
    (["config", "set", "poll_interval", "0"], "poll_interval"),
    (["config", "set", "job_timeout", "--", "-5"], "job_timeout"),
    (["config", "set", "poll_interval", "0.01"], "poll_interval"),
    (["config", "set", "drop_grace", "nan"], "drop_grace"),
    (["config", "set", "backoff_max", "inf"], "backoff_max"),
    (["config", "set", "group_access", "maybe"], "group_access"),
    (["config", "set", "max_retries"], None),
    (["worker", "start", "--count", "0"], None),
    (["worker", "stop", "--timeout", "-1"], None),
    (["frobnicate"], None),
    (["status", "--bogus"], None),
]
BAD_STDIN = [
    (["enqueue", "--file", "-"], "not json", "JSON"),
    (["enqueue", "--file", "-"], b"\xff\xfe{}", "UTF-8"),
    (["enqueue", "--file", "-"], "[1]", "object"),
    (["enqueue", "--batch", "-"], '{"command": "a"}\n\xff\n', None),
    (["enqueue", "--batch", "-"], b'{"command": "a"}\n\xff\n', "UTF-8"),
]


@pytest.mark.parametrize("args, needle", BAD, ids=lambda v: " ".join(v)[:60] if isinstance(v, list) else None)
def test_bad_input_exit_2_creates_nothing(cli, spool_dir, args, needle):
    result = clean(cli(*args), 2)
    assert result.output.strip(), "a message says what is wrong"
    if needle:
        assert needle in result.output
    assert not os.path.exists(spool_dir), "invalid input must not even create the spool"


@pytest.mark.parametrize("args, text, needle", BAD_STDIN)
def test_bad_stdin_exit_2_creates_nothing(cli, spool_dir, args, text, needle):
    result = clean(cli(*args, input=text), 2)
    if needle:
        assert needle in result.output
    assert not os.path.exists(spool_dir)


def test_bad_input_on_a_live_spool_changes_nothing(cli, spool):
    make_done(spool, "d1")
    make_dead(spool, "x1")
    clean(cli("enqueue", "--cmd", "true", "--id", "p1"))
    clean(cli("config", "set", "max_retries", "4"))
    before = snapshot(spool.root)
    for args, _ in BAD:
        clean(cli(*args), 2)
    for args, text, _ in BAD_STDIN:
        clean(cli(*args, input=text), 2)
    assert snapshot(spool.root) == before


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=40) | st.builds(lambda d: json.dumps(d), st.dictionaries(
    st.sampled_from(["command", "id", "priority", "max_retries", "timeout", "delay", "run_at", "env", "cwd", "x"]),
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=10)
    | st.lists(st.integers(), max_size=2) | st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
    max_size=5)))
def test_any_positional_argument_is_accepted_or_refused_cleanly(arg):
    """Fuzz: exit 0 with one id, or exit 2 with nothing written. Never a traceback."""
    with tempfile.TemporaryDirectory() as tmp:
        spool_dir = os.path.join(tmp, "spool")
        result = CliRunner().invoke(main, ["--spool", spool_dir, "enqueue", arg], catch_exceptions=False)
        assert "Traceback" not in result.output
        assert result.exit_code in (0, 2), result.output
        if result.exit_code == 2:
            assert not os.path.exists(spool_dir)
        else:
            [job_id] = result.stdout.split()
            assert Spool(spool_dir).find(job_id).state in ("pending", "scheduled")


# ---- reading: status, list, show, logs ---------------------------------------------------------


def test_status_counts_every_state(cli, spool):
    assert cli.json("status") == {**dict.fromkeys(STATUS_KEYS, 0), "paused": False}
    clean(cli("enqueue", "--cmd", "true", "--id", "p1"))
    clean(cli("enqueue", "--cmd", "true", "--id", "p2"))
    clean(cli("enqueue", "--cmd", "true", "--id", "s1", "--delay", "300"))
    make_processing(spool, "r1")
    make_done(spool, "d1")
    make_dead(spool, "x1")
    make_dead(spool, "x2")
    counts = cli.json("status")
    assert set(counts) == STATUS_KEYS | {"paused"}
    assert {k: counts[k] for k in ("pending", "scheduled", "processing", "done", "dead")} == \
        {"pending": 2, "scheduled": 1, "processing": 1, "done": 1, "dead": 2}
    human = clean(cli("status")).stdout
    for key in STATUS_KEYS:
        assert re.search(rf"^{key}\s+{counts[key]}$", human, re.M), human


def test_list_states_order_limit_and_json(cli, spool):
    assert clean(cli("list")).stdout.strip() == "no jobs"
    assert cli.json("list") == []
    for job_id, prio in (("low", -1), ("mid1", 0), ("high", 5), ("mid2", 0)):
        clean(cli("enqueue", "--cmd", "true", "--id", job_id, "--priority", str(prio)))
    clean(cli("enqueue", "--cmd", "true", "--id", "later", "--delay", "300"))
    make_processing(spool, "run")
    make_done(spool, "fin")
    make_dead(spool, "gone")
    pending = cli.json("list", "--state", "pending")
    assert [d["id"] for d in pending] == ["high", "mid1", "mid2", "low"], "run order: priority, then FIFO"
    assert all(d["state"] == "pending" for d in pending)
    for state, expected in (("scheduled", ["later"]), ("processing", ["run"]), ("done", ["fin"]),
                            ("dead", ["gone"])):
        assert [d["id"] for d in cli.json("list", "--state", state)] == expected, state
    everything = cli.json("list")
    assert sorted(d["id"] for d in everything) == sorted(["low", "mid1", "high", "mid2", "later", "run", "fin",
                                                          "gone"])
    assert len(cli.json("list", "--limit", "2")) == 2
    assert cli.json("list", "--limit", "0") == []
    assert clean(cli("list", "--limit", "0")).stdout.strip() == "no jobs shown (--limit 0)"  # not "no jobs"
    assert clean(cli("list", "--state", "waiting")).stdout.strip() == "no waiting jobs"
    human = clean(cli("list", "--state", "dead")).stdout
    assert "gone" in human and "exit status 3" in human


def test_show_fields(cli, spool):
    before = time.time()
    clean(cli("enqueue", "--cmd", "echo show", "--id", "s", "--max-retries", "2", "--priority", "4"))
    d = cli.json("show", "s")
    for key in SHOW_FIELDS:
        assert key in d, key
    assert (d["id"], d["command"], d["state"], d["attempts"], d["max_retries"], d["priority"]) == \
        ("s", "echo show", "pending", 0, 2, 4)
    assert before - 1 <= parse_iso(d["created_at"]) <= time.time() + 1
    assert parse_iso(d["updated_at"]) >= parse_iso(d["created_at"]) - 0.001
    assert d["run_at"] is None and d["exit_code"] is None and d["last_error"] is None
    # A dead job shows its exit code and last error; a delayed one its run_at.
    make_dead(spool, "x")
    d = cli.json("show", "x")
    assert (d["state"], d["attempts"], d["exit_code"], d["last_error"]) == ("dead", 1, 3, "exit status 3")
    parse_iso(d["updated_at"])
    clean(cli("enqueue", "--cmd", "true", "--id", "later", "--delay", "100"))
    d = cli.json("show", "later")
    assert d["state"] == "scheduled" and parse_iso(d["run_at"]) > time.time() + 90
    # A running job counts the attempt it is in.
    make_processing(spool, "run")
    assert cli.json("show", "run")["attempts"] == 1
    # A done job.
    make_done(spool, "ok")
    d = cli.json("show", "ok")
    assert (d["state"], d["attempts"], d["exit_code"]) == ("done", 1, 0)
    # The human form names every field.
    human = clean(cli("show", "s")).stdout
    for key in SHOW_FIELDS:
        assert re.search(rf"^{key}:", human, re.M), key
    assert re.search(r"^command:\s+echo show$", human, re.M)


def test_unknown_job_exit_1(cli, spool):
    for args in (["show", "nope"], ["show", "nope", "--json"], ["logs", "nope"], ["wait", "nope"],
                 ["dlq", "retry", "nope"], ["show", "+nope.abc"], ["dlq", "retry", "+nope.abc"]):
        result = clean(cli(*args), 1)
        assert "nope" in result.output


def test_logs_every_attempt_marked(cli, spool, spool_dir):
    spool.set_config("backoff_base", 0)
    clean(cli("enqueue", "--cmd", "echo out-$SPOOLQ_ATTEMPT; echo err-$SPOOLQ_ATTEMPT >&2; exit 3", "--id", "L",
              "--max-retries", "1"))
    result = clean(cli("logs", "L"))
    assert "no output yet" in result.output
    drain(spool_dir)
    assert cli.json("show", "L")["state"] == "dead"
    text = clean(cli("logs", "L")).stdout
    for needle in ("attempt 1 of 2", "attempt 2 of 2", "out-1", "err-1", "out-2", "err-2", "exit status 3"):
        assert needle in text, needle
    assert text.index("out-1") < text.index("attempt 2 of 2") < text.index("out-2")


# ---- the dead-letter queue -------------------------------------------------------------------


def test_dlq_list_and_retry(cli, spool):
    assert cli.json("dlq", "list") == []
    make_dead(spool, "x1")
    make_dead(spool, "x2")
    make_dead(spool, "x3")
    clean(cli("enqueue", "--cmd", "true", "--id", "alive"))
    dead = cli.json("dlq", "list")
    assert sorted(d["id"] for d in dead) == ["x1", "x2", "x3"]
    assert all(d["state"] == "dead" and d["last_error"] == "exit status 3" for d in dead)
    assert "x1" in clean(cli("dlq", "list")).stdout
    # Retry one: pending again with attempts reset.
    assert ids_of(clean(cli("dlq", "retry", "x1"))) == ["x1"]
    d = cli.json("show", "x1")
    assert (d["state"], d["attempts"], d["exit_code"]) == ("pending", 0, None)
    # A job that is not dead cannot be retried, and a failed retry changes nothing.
    before = snapshot(spool.root)
    result = clean(cli("dlq", "retry", "alive"), 1)
    assert "not dead" in result.output
    clean(cli("dlq", "retry", "x2", "alive"), 1)
    assert snapshot(spool.root) == before
    # --all retries the rest.
    assert sorted(ids_of(clean(cli("dlq", "retry", "--all")))) == ["x2", "x3"]
    assert cli.json("status")["dead"] == 0 and cli.json("status")["pending"] == 4
    result = clean(cli("dlq", "retry", "--all"))
    assert "no dead jobs" in result.output


def test_quarantined_file_in_dlq(cli, spool):
    qid = quarantine(spool, "broken.json", b"{not json at all")
    assert qid.startswith("+broken")
    dead = cli.json("dlq", "list")
    assert [d["id"] for d in dead] == [qid]
    assert "malformed" in dead[0]["last_error"]
    d = cli.json("show", qid)
    assert d["state"] == "dead" and "malformed" in d["last_error"]
    result = clean(cli("dlq", "retry", qid), 1)
    assert "fix" in result.output and "drop it" in result.output
    with open(os.path.join(spool.layout.dead, qid + ".json"), "rb") as f:
        assert f.read() == b"{not json at all", "a quarantined file keeps its bytes"
    assert clean(cli("dlq", "retry", "--all")).stdout == "", "--all skips quarantined files"


def test_dlq_list_and_list_keep_their_columns_for_long_ids_and_errors(cli, spool):
    """A long error ran into the next column of `dlq list`, and a schedule's id (29 characters)
    pushed every column after it."""
    make_dead(spool, "nightly-backup.20260101T0215Z")
    claimed = make_processing(spool, "short", max_retries=0)
    spool.transitions.finish(claimed, ok=False, exit_code=None, error="timed out after 1s; its process group was killed "
                             "and then some more words to make it long")
    spool.owners.unregister(claimed.owner)
    quarantine(spool, "broken.json", b"{not json")
    for args, columns in ((("dlq", "list"), ("TRIES", "COMMAND", "LAST ERROR")), (("list",), ("STATE", "TRIES", "PRIO"))):
        header, *rows = clean(cli(*args)).stdout.splitlines()
        assert len(rows) == 3
        for column in columns:
            at = header.index(column)
            for row in rows:  # each cell starts (or, right-aligned, ends) under its heading, after a gap
                assert row[at - 2:at] == "  " or row[at + len(column) - 1] != " " and row[at - 1] == " ", (column, row)
        for row in rows:
            assert row.split()[0] in ("nightly-backup.20260101T0215Z", "short") or row.startswith("+broken")
    dlq = clean(cli("dlq", "list")).stdout.splitlines()
    assert dlq[0].rstrip().endswith("LAST ERROR") and any(r.endswith("to make it long") for r in dlq)


# ---- config --------------------------------------------------------------------------------


def test_config_show_get_set(cli, spool, spool_dir):
    shown = cli.json("config", "show")
    assert shown["max_retries"] == 3 and shown["backoff_base"] == 2
    for key in ("backoff_max", "job_timeout", "poll_interval", "drop_grace"):
        assert key in shown
    human = clean(cli("config", "show")).stdout
    assert re.search(r"^max_retries\s+3$", human, re.M)
    assert clean(cli("config", "get", "max_retries")).stdout.strip() == "3"
    for key, value, expected in (("max_retries", "5", 5), ("backoff_base", "0.5", 0.5), ("backoff_max", "60", 60),
                                 ("job_timeout", "2.5", 2.5), ("poll_interval", "0.2", 0.2),
                                 ("drop_grace", "0", 0)):
        clean(cli("config", "set", key, value))
        assert json.loads(clean(cli("config", "get", key)).stdout) == expected
    shown = cli.json("config", "show")
    assert shown["max_retries"] == 5 and shown["backoff_base"] == 0.5
    # Persisted in the spool, visible to a fresh reader.
    assert Spool(spool_dir).config.max_retries == 5


def test_config_refusals_keep_the_file(cli, spool):
    clean(cli("config", "set", "max_retries", "4"))
    with open(spool.layout.config, "rb") as f:
        before = f.read()
    for args in (["max_retries", "x"], ["unknown_key", "1"], ["poll_interval", "--", "-1"], ["max_retries", "1001"]):
        result = clean(cli("config", "set", *args), 2)
        assert args[0] in result.output
    with open(spool.layout.config, "rb") as f:
        assert f.read() == before
    assert cli.json("config", "show")["max_retries"] == 4


@pytest.mark.parametrize("key, value", [("lease_timeout", 1.0), ("max_retries", -1), ("poll_interval", "1"),
                                        ("group_access", 1), ("max_retries", True)])
def test_the_api_refuses_what_the_cli_refuses(spool, key, value):
    """An out-of-range value given through the API is refused, never saved to be ignored at load."""
    spool.set_config("max_retries", 4)
    with open(spool.layout.config, "rb") as f:
        before = f.read()
    with pytest.raises(ConfigError, match=key):
        spool.set_config(key, value)
    with open(spool.layout.config, "rb") as f:
        assert f.read() == before
    assert Spool(spool.root).config.problems == ()


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("30m", 1800), ("6h", 21600), ("7d", 604800),
                                           ("2w", 1209600), ("0.5h", 1800), ("1.5h", 5400), ("1h30m", 5400),
                                           (" 10M ", 600), ("0", 0), (".5", 0.5)])
def test_durations(text, seconds):
    assert durations.parse(text) == seconds


@pytest.mark.parametrize("text", ["", "1x", "-5", "1e3", "nan", "inf", "m", "30m1h", "1h1h", "1 h 2", "٣s", "1_0"])
def test_what_is_not_a_duration(text):
    with pytest.raises(ValueError, match="not a duration"):
        durations.parse(text)


def test_every_option_and_setting_in_seconds_takes_a_duration(cli, spool):
    """`--timeout 5m`, `--delay 10s`, `config set job_timeout 10m`: one syntax everywhere."""
    clean(cli("enqueue", "--cmd", "true", "--id", "d", "--timeout", "5m", "--delay", "1h30m"))
    shown = cli.json("show", "d")
    assert shown["timeout"] == 300 and parse_iso(shown["run_at"]) - parse_iso(shown["created_at"]) == pytest.approx(5400, abs=2)
    clean(cli("schedule", "add", "s", "@daily", "--cmd", "true", "--timeout", "2h"))
    assert cli.json("schedule", "show", "s")["job"]["timeout"] == 7200
    for key, text, seconds in (("job_timeout", "10m", 600), ("keep_done", "1.5d", 129600), ("poll_interval", "500", 500),
                               ("lease_timeout", "45s", 45)):
        clean(cli("config", "set", key, text))
        assert json.loads(clean(cli("config", "get", key)).stdout) == seconds
    clean(cli("wait", "--timeout", "1m", "--no-progress", "--", "nosuch"), 1)  # taken, then: no such job
    clean(cli("purge", "--older-than", "7d"))
    result = clean(cli("config", "set", "job_timeout", "10 minutes"), 2)
    assert "duration" in result.output and "10m" in result.output
    result = clean(cli("enqueue", "--cmd", "true", "--timeout", "0s"), 2)
    assert "--timeout" in result.output and "out of range" in result.output
    for command in (["enqueue"], ["wait"], ["purge"], ["fsck"], ["worker", "stop"], ["schedule", "add"]):
        assert "DURATION" in clean(cli(*command, "--help")).output, command


def test_max_retries_fixed_at_enqueue(cli):
    clean(cli("config", "set", "max_retries", "1"))
    clean(cli("enqueue", "--cmd", "true", "--id", "m"))
    clean(cli("config", "set", "max_retries", "7"))
    assert cli.json("show", "m")["max_retries"] == 1
    clean(cli("enqueue", "--cmd", "true", "--id", "n"))
    assert cli.json("show", "n")["max_retries"] == 7


# ---- wait ----------------------------------------------------------------------------------------


def test_wait_exit_codes_without_workers(cli, spool):
    make_done(spool, "ok")
    make_dead(spool, "bad")
    clean(cli("wait", "ok"))
    result = clean(cli("wait", "ok", "bad"), 1)
    assert "bad" in result.output
    clean(cli("enqueue", "--cmd", "true", "--id", "stuck"))
    started = time.monotonic()
    clean(cli("wait", "stuck", "--timeout", "0.3"), 124)
    assert 0.25 <= time.monotonic() - started < 5
    clean(cli("wait", "--timeout", "0.1"), 124)
    clean(cli("wait", "nope", "--timeout", "1"), 1)


def test_wait_without_ids_on_an_idle_spool(cli, spool):
    make_done(spool, "ok")
    make_dead(spool, "bad")
    clean(cli("wait", "--timeout", "5"))


def test_spool_wait_gives_finished_jobs_and_times_out_or_refuses_an_unknown_id(spool):
    """The Python API's wait, which `spoolq wait` looks the same way as."""
    from spoolq import JobNotFound, WaitTimeout

    make_done(spool, "ok")
    make_dead(spool, "bad")
    assert [(v.id, v.state) for v in spool.wait(["bad", "ok"])] == [("bad", "dead"), ("ok", "done")]
    spool.enqueue({"command": "true", "id": "stuck"})
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match="1 job not finished after 0.3s: stuck"):
        spool.wait(["ok", "stuck"], timeout=0.3)
    assert 0.25 <= time.monotonic() - started < 5
    with pytest.raises(JobNotFound):
        spool.wait(["nope"], timeout=1)


def test_spool_wait_returns_once_a_worker_finishes_the_job(spool_dir, spool):
    job = spool.enqueue({"command": "sleep 0.3; exit 3", "max_retries": 0})
    worker = subprocess.Popen([*SPOOLQ, "--spool", spool_dir, "worker", "start", "--burst", "-q"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        (view,) = spool.wait([job.id], timeout=30)  # while the worker runs it
        assert view.state == "dead" and view.job.exit_code == 3
    finally:
        assert worker.wait(timeout=30) == 0


# ---- the rest of the surface ---------------------------------------------------------------------


def test_init_and_spool_location(tmp_path, monkeypatch):
    runner = CliRunner()
    target = tmp_path / "from-env"
    result = runner.invoke(main, ["init"], env={"SPOOLQ_DIR": str(target)}, catch_exceptions=False)
    clean(result)
    for name in ("pending", "processing", "done", "dead"):
        assert (target / name).is_dir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPOOLQ_DIR", raising=False)
    clean(runner.invoke(main, ["enqueue", "--cmd", "true", "--id", "here"], catch_exceptions=False))
    assert (tmp_path / "spool" / "pending").is_dir(), "DIR defaults to ./spool"
    assert Spool(tmp_path / "spool").find("here").state == "pending"


def test_a_command_that_creates_a_spool_says_where(tmp_path, monkeypatch):
    """A forgotten SPOOLQ_DIR made ./spool wherever enqueue ran, silently: now stderr says so, once."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPOOLQ_DIR", raising=False)
    runner = CliRunner()
    first = clean(runner.invoke(main, ["enqueue", "--cmd", "true"], catch_exceptions=False))
    assert first.stderr == f"spoolq: created a new spool at {tmp_path / 'spool'} (--spool DIR or SPOOLQ_DIR names another)\n"
    assert len(first.stdout.split()) == 1  # the id alone on stdout, for `id=$(spoolq enqueue ...)`
    assert clean(runner.invoke(main, ["enqueue", "--cmd", "true"], catch_exceptions=False)).stderr == ""
    assert "created" not in clean(runner.invoke(main, ["--spool", "other", "init"], catch_exceptions=False)).stderr


def test_a_quoted_tilde_is_the_home_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    runner = CliRunner()
    clean(runner.invoke(main, ["--spool", "~/myspool", "enqueue", "--cmd", "true", "--id", "t"], catch_exceptions=False))
    assert Spool(tmp_path / "home" / "myspool").find("t").state == "pending"
    clean(runner.invoke(main, ["show", "t"], env={"SPOOLQ_DIR": "~/myspool"}, catch_exceptions=False))
    result = clean(runner.invoke(main, ["--spool", "~no-such-user-here/s", "enqueue", "--cmd", "true"]), 2)
    assert "no such user" in result.output
    assert os.listdir(tmp_path) == ["home"]  # never a directory named '~'


@pytest.mark.parametrize("args, hint", [
    (["enqeue", "true"], "did you mean 'enqueue'?"),
    (["retry", "abc"], "`spoolq dlq retry ID...` runs a dead job again, `spoolq requeue ID...` a done or dead one"),
    (["start"], "`spoolq worker start`"),
    (["dlq", "retyr", "abc"], "did you mean 'retry'?"),
    (["worker", "strat"], "did you mean 'start'?"),
    (["frobnicate"], "see `"),
])
def test_an_unknown_command_points_to_the_right_one(cli, spool_dir, args, hint):
    result = clean(cli(*args), 2)
    assert f"Error: no such command {args[1] if args[0] in ('dlq', 'worker') else args[0]!r}; {hint}" in result.output
    assert not os.path.exists(spool_dir)


def every_command(group=main, path=()):
    for name, command in sorted(group.commands.items()):
        yield (*path, name)
        if hasattr(command, "commands"):
            yield from every_command(command, (*path, name))


def test_no_help_shows_a_missing_bound(cli):
    """`--priority INTEGER RANGE ... [x<=None]`: an option without bounds shows none."""
    for name in sorted(main.list_commands(None)):
        main.get_command(None, name)  # loaded on first use
    for command in every_command():
        text = clean(cli(*command, "--help")).output
        assert "None" not in text and "RANGE" not in text.replace("INTEGER RANGE", ""), (command, text)
    assert re.search(r"--priority INTEGER\s+Higher runs first", clean(cli("enqueue", "--help")).output)


def test_worker_list_and_stop_with_no_workers(cli, spool):
    assert clean(cli("worker", "list")).stdout.strip() == "no workers"
    assert cli.json("worker", "list") == []
    clean(cli("worker", "stop", "--wait", "--timeout", "1"))


def test_real_process_never_prints_a_traceback(run, spool_dir):
    """The console entry point, as a user runs it."""
    for args, code in ((["enqueue", "[1]"], 2), (["enqueue", b"echo \xff".decode("utf-8", "surrogateescape")], 2),
                       (["show", "missing"], 1), (["--version"], 0), (["config", "set", "x", "1"], 2)):
        proc = run(*args)
        assert proc.returncode == code, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stdout + proc.stderr
    proc = run("enqueue", "--cmd", "true", "--id", "p")
    assert proc.returncode == 0 and proc.stdout == "p\n"
    # `python -m spoolq` and the console script are the same program.
    proc = subprocess.run([*SPOOLQ, "--spool", spool_dir, "show", "p", "--json"], capture_output=True, text=True)
    assert json.loads(proc.stdout)["id"] == "p"


def test_purge_deletes_finished_jobs_and_frees_their_ids(cli, spool, spool_dir):
    clean(cli("enqueue", "--cmd", "true", "--id", "ok1"))
    clean(cli("enqueue", "--cmd", "echo hi", "--id", "ok2"))
    make_dead(spool, "gone")
    clean(cli("enqueue", "--cmd", "true", "--id", "waiting", "--delay", "3600"))
    drain(spool_dir)
    assert clean(cli("purge", "--older-than", "3600")).stdout.strip() == "purged 0 done jobs"
    assert clean(cli("purge")).stdout.strip() == "purged 2 done jobs"
    assert not os.path.exists(spool.output_path("ok2"))
    clean(cli("show", "ok1"), 1)
    assert cli.json("show", "gone")["state"] == "dead", "purge touches only the state it is asked for"
    assert cli.json("show", "waiting")["state"] == "scheduled"
    assert ids_of(clean(cli("enqueue", "--cmd", "true", "--id", "ok1"))) == ["ok1"], "the id is free again"
    assert clean(cli("purge", "--state", "dead")).stdout.strip() == "purged 1 dead job"
    clean(cli("purge", "--state", "processing"), 2)


def test_ctrl_c_exits_130_with_one_line(spool_dir):
    """Ctrl+C while `wait` blocks: the KeyboardInterrupt is raised from a timer inside the
    command, so the test does not depend on when a signal would land during start-up."""
    Spool(spool_dir).enqueue({"id": "never", "command": "true", "delay": 3600})
    program = (
        "import signal, sys\n"
        "from spoolq.cli import run\n"
        "def interrupt(*_):\n"
        "    raise KeyboardInterrupt\n"
        "signal.signal(signal.SIGALRM, interrupt)\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.2)\n"
        f"sys.argv = ['spoolq', '--spool', {spool_dir!r}, 'wait', 'never']\n"
        "run()\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=30)
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "Error: interrupted"
    assert "Traceback" not in result.stderr and "Aborted" not in result.stderr


def test_an_empty_spool_path_is_refused(tmp_path):
    result = subprocess.run([*SPOOLQ, "--spool", "", "status"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and "--spool" in result.stderr
    assert os.listdir(tmp_path) == [], "the current directory must not become a spool"


def test_a_timed_out_wait_says_what_it_waited_for(cli, spool):
    spool.enqueue({"id": "slowpoke", "command": "true", "delay": 3600})
    result = clean(cli("wait", "slowpoke", "--timeout", "0.05"), 124)
    assert "slowpoke" in result.output and "no worker is running" in result.output


def test_a_dropped_file_is_found_by_id_before_a_worker_takes_it(cli, spool):
    with open(os.path.join(spool.layout.pending, "x.json"), "w") as f:
        f.write('{"id": "inner", "command": "echo dropped"}')
    with open(os.path.join(spool.layout.pending, "byname.json"), "w") as f:
        f.write('{"command": "echo named"}')
    assert cli.json("show", "inner")["state"] == "pending"
    assert cli.json("show", "byname")["command"] == "echo named"
    clean(cli("wait", "inner", "byname", "--timeout", "0.05"), 124)


def test_a_duplicate_of_an_existing_id_in_a_batch_names_its_line(cli, spool):
    spool.enqueue({"id": "taken", "command": "true"})
    batch = '{"id": "new1", "command": "true"}\n\n{"id": "taken", "command": "true"}\n'
    result = clean(cli("enqueue", "--batch", "-", input=batch), 1)
    assert "line 3" in result.output and "taken" in result.output
    clean(cli("show", "new1"), 1)
    assert clean(cli("enqueue", "--batch", "-", input="")).stdout == ""


def test_scheduled_jobs_are_listed_soonest_first(cli, spool):
    spool.enqueue({"id": "late", "command": "true", "delay": 7200, "priority": 9})
    spool.enqueue({"id": "soon", "command": "true", "delay": 60})
    spool.enqueue({"id": "now", "command": "true"})
    assert [d["id"] for d in cli.json("list")] == ["now", "soon", "late"]
    assert [d["id"] for d in cli.json("list", "--state", "scheduled")] == ["soon", "late"]
