"""A shell user's day: what someone used to nq, task-spooler and pueue does with spoolq from a
for-loop, `find | xargs`, a script under `set -e`, cron and jq, with real workers end to end."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SPOOLQ, examples, required_tool, spoolq, wait_for
from spoolq import Spool
from spoolq.cli.enqueue import PLAIN_LINES
from spoolq.cli.quick import join_words
from spoolq.system.shell_words import RESERVED_WORDS
from test_quick_enqueue import NEVER, PROBE


def _burst(spool_dir: str) -> subprocess.CompletedProcess:
    return spoolq(spool_dir, "worker", "start", "--burst", "-q")


def _start_wait(spool_dir: str, *ids: str) -> subprocess.Popen:
    return subprocess.Popen([*SPOOLQ, "--spool", spool_dir, "wait", "--timeout", "60", *ids],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _first_line(proc: subprocess.Popen, timeout: float = 30) -> str:
    """The first line `proc` writes on stderr (a wait says within 2 s that no worker runs)."""
    import select

    ready, _, _ = select.select([proc.stderr], [], [], timeout)
    assert ready, f"nothing on stderr within {timeout}s"
    return proc.stderr.readline()


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
    said = _first_line(waiting)  # it has looked: a burst that ran before its first count was taken
    assert "no worker is running" in said, said  # for one dead before it began (a busy machine)
    assert _burst(spool_dir).returncode == 0
    _out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 1, said + err
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


def test_a_spoolq_command_in_a_job_or_hook_uses_the_jobs_spool(tmp_path):
    """A job that queues its follow-up (`spoolq enqueue 'step2'`), run by a worker started with
    --spool and no SPOOLQ_DIR, made a new ./spool in its own directory that no worker looks at;
    an on_done hook's `spoolq show "$SPOOLQ_JOB_ID"` found no spool at all. Both see SPOOLQ_DIR."""
    spool_dir, elsewhere = str(tmp_path / "spool"), tmp_path / "job-dir"
    elsewhere.mkdir()
    spoolq_line = " ".join(SPOOLQ)
    spool = Spool(spool_dir)
    spool.set_config("on_done", f"{spoolq_line} show --json \"$SPOOLQ_JOB_ID\" > {tmp_path}/hook-$SPOOLQ_JOB_ID.json")
    spool.enqueue({"command": f"{spoolq_line} enqueue --id step2 'echo second'", "id": "step1",
                   "cwd": str(elsewhere), "max_retries": 0})
    env = {k: v for k, v in os.environ.items() if k != "SPOOLQ_DIR"}
    r = subprocess.run([*SPOOLQ, "--spool", spool_dir, "worker", "start", "--burst", "-q"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert not (elsewhere / "spool").exists()
    assert spool.find("step2").state == "done"
    hook = tmp_path / "hook-step1.json"
    wait_for(lambda: hook.exists() and hook.read_text().endswith("\n"), 10, "the hook's output")
    assert json.loads(hook.read_text())["state"] == "done"


ODD_NAMES = ["a b.txt", "it's.txt", 'say "hi".txt', "$(touch pwned).txt", "`touch pwned`.txt", "ünï.txt",
             "new\nline.txt", "semi;colon&amp.txt", "*.txt"]


def test_a_for_loop_hands_each_file_name_over_whole_after_double_dash(spool_dir, tmp_path):
    """`for f in *; do tsp wc -c "$f"; done` is how nq, tsp and pueue take a command: its words.
    spoolq took one shell string only, so `spoolq enqueue "wc -c $f"` split or ran a name with
    spaces, quotes or `$(...)` in it; after --, each word reaches the program as given."""
    files = tmp_path / "files"
    files.mkdir()
    for name in ODD_NAMES:
        (files / name).write_text(f"content of {name}")
    ids = []
    for name in ODD_NAMES:
        r = spoolq(spool_dir, "enqueue", "--max-retries", "0", "--", "cat", name, cwd=files)
        assert r.returncode == 0, r.stderr
        ids.append(r.stdout.strip())
    assert _burst(spool_dir).returncode == 0
    spool = Spool(spool_dir)
    for job_id, name in zip(ids, ODD_NAMES):
        assert spool.find(job_id).state == "done", (name, spoolq(spool_dir, "logs", job_id).stdout)
        assert f"content of {name}" in spoolq(spool_dir, "logs", job_id).stdout
    assert not (files / "pwned").exists()
    one = spoolq(spool_dir, "enqueue", "--id", "one", "--", "echo hi; echo there")  # one word: JOB, as without --
    assert one.returncode == 0 and spool.find("one").job.command == "echo hi; echo there"


def test_a_commands_own_option_says_to_put_its_words_after_double_dash(spool_dir):
    """`spoolq enqueue wc -c "$f"` answered only "No such option '-c'"."""
    r = spoolq(spool_dir, "enqueue", "wc", "-c", "a b.txt")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == ("Error: No such option '-c'; a command's own options go after --: "
                                                 "spoolq enqueue -- wc -c 'a b.txt'")
    assert not os.path.exists(spool_dir)


def test_logs_follow_says_when_nothing_will_run_the_job(spool_dir, tmp_path):
    """`spoolq logs -f ID` (pueue follow, tail -f) with no worker running printed nothing and
    waited for good, where `wait` says in a line that nothing will run the job. It says so too,
    on stderr, and still prints the output once a worker runs the job."""
    Spool(spool_dir).enqueue({"command": "echo followed", "id": "later"})
    err = tmp_path / "stderr"
    with open(err, "w") as stderr:
        follow = subprocess.Popen([*SPOOLQ, "--spool", spool_dir, "logs", "-f", "later"], stdout=subprocess.PIPE,
                                  stderr=stderr, text=True)
    try:
        wait_for(lambda: "nothing will run it: no worker is running" in err.read_text(), 15, "the stalled line")
        assert _burst(spool_dir).returncode == 0
        out, _ = follow.communicate(timeout=30)
    finally:
        follow.kill()
    assert follow.returncode == 0
    assert "followed" in out


@pytest.mark.parametrize("lines", ["make a\nmake b\n", '"make a"\n'])
def test_a_batch_of_plain_command_lines_is_told_how_to_make_them_jobs(spool_dir, lines):
    """`cat commands.txt | spoolq enqueue --batch -` (a file of commands, as `tsp` takes them one
    by one) was refused with only "line is not valid JSON"; the line says what would do it, and
    what it says works."""
    r = spoolq(spool_dir, "enqueue", "--batch", "-", input=lines)
    assert r.returncode == 2
    error = r.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: line 1: ") and error.endswith(f"nothing was enqueued ({PLAIN_LINES})"), error
    assert not os.path.exists(spool_dir)
    jq = required_tool("jq", "SPOOLQ_REQUIRE_JQ", "jq")
    made = subprocess.run([jq, "-Rc", "{command: .}"], input="make a\nmake b\n", capture_output=True, text=True)
    r = spoolq(spool_dir, "enqueue", "--batch", "-", input=made.stdout)
    assert r.returncode == 0 and len(r.stdout.split()) == 2, r.stderr
    assert sorted(v.job.command for v in Spool(spool_dir).list_jobs()) == ["make a", "make b"]


@pytest.mark.parametrize("words", [("--cmd", "-"), ("--", "-")])
def test_a_command_read_from_stdin_is_refused_saying_where_stdin_goes(spool_dir, words):
    """`echo make | spoolq enqueue --cmd -` enqueued a job whose command is '-', which can never
    run (JOB '-' was refused already): it says that --file - and --batch - read stdin."""
    r = spoolq(spool_dir, "enqueue", *words, input="make\n")
    assert r.returncode == 2
    assert "'-' is no command: to read stdin, --file - takes one JSON job" in r.stderr.strip().splitlines()[-1]
    assert not os.path.exists(spool_dir)


def test_list_says_when_a_scheduled_job_runs_and_what_a_waiting_one_waits_for(spool_dir):
    """`enqueue --delay 1h` or `--run-at "$(date -d tomorrow +%s)"`, then `spoolq list` to check it:
    it said only "scheduled" (or "waiting"), not when (or for what), so a --run-at read in
    another zone than meant went unseen until it ran."""
    assert spoolq(spool_dir, "enqueue", "--id", "later", "--run-at", "4102444800", "true").returncode == 0
    assert spoolq(spool_dir, "enqueue", "--id", "then", "--after", "later", "true").returncode == 0
    lines = spoolq(spool_dir, "list").stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["ID", "later", "then"]
    assert lines[1].endswith("true [due 2100-01-01T00:00:00Z]"), lines
    assert lines[2].endswith("true [after later]"), lines


def test_a_for_loops_double_dash_enqueue_takes_the_plain_path(tmp_path):
    """`spoolq enqueue -- wc -c "$f"` once per file is a loop's enqueue: it loaded click, 2-4 x the
    time of a quoted one; it takes the plain enqueue's path, loading none of the costly modules."""
    spool = str(tmp_path / "s")
    subprocess.run([*SPOOLQ, "--spool", spool, "init"], check=True, capture_output=True)
    done = subprocess.run([sys.executable, "-c", PROBE, "--spool", spool, "enqueue", "--queue", "q", "--",
                           "wc", "-c", "it's a file"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert sorted(set(done.stderr.splitlines()[-1].split()).intersection(NEVER)) == []
    [view] = Spool(spool).list_jobs()
    assert (view.job.command, view.job.queue) == ("wc -c 'it'\"'\"'s a file'", "q")


@settings(max_examples=examples(400))
@given(st.lists(st.text(), min_size=2, max_size=6))
def test_words_are_quoted_as_shlex_quotes_them(words):
    """shlex.join's quoting, and a first word the shell would not take as a name (an assignment,
    a reserved word) quoted as well; either way the shell's words are the words given."""
    joined = join_words(words)
    assert shlex.split(joined) == words
    if "=" not in words[0] and words[0] not in RESERVED_WORDS:
        assert joined == shlex.join(words)
    else:
        assert joined.startswith("'")


@pytest.mark.parametrize("program", ["X=1", "done"])
def test_a_first_word_the_shell_would_not_run_runs_as_a_program_after_double_dash(spool_dir, tmp_path, program):
    """`enqueue -- X=1 arg` enqueued `X=1 arg`, which /bin/sh reads as an assignment before the
    command `arg`; `enqueue -- done` was a syntax error. The words after -- name a program."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "ran"
    script = bin_dir / program
    script.write_text(f"#!/bin/sh\necho \"$@\" > {shlex.quote(str(marker))}\n")
    script.chmod(0o755)
    assert spoolq(spool_dir, "enqueue", "--", program, "arg one").returncode == 0
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    assert spoolq(spool_dir, "worker", "start", "--burst", "-q", env=env).returncode == 0
    assert marker.read_text() == "arg one\n"


def test_list_takes_several_states_in_the_listings_own_order(spool_dir):
    """`list --state scheduled --state dead` listed the dead jobs alone: click kept only the last
    --state, as it did --after's."""
    spool = Spool(spool_dir)
    spool.enqueue({"command": "exit 3", "max_retries": 0, "id": "failed"})
    assert _burst(spool_dir).returncode == 0
    spool.enqueue({"command": "true", "id": "later", "delay": 3600})
    spool.enqueue({"command": "true", "id": "now"})
    listed = json.loads(spoolq(spool_dir, "list", "--state", "dead", "--state", "scheduled", "--json").stdout)
    assert [(d["id"], d["state"]) for d in listed] == [("later", "scheduled"), ("failed", "dead")]
    one = json.loads(spoolq(spool_dir, "list", "--state", "dead", "--state", "scheduled", "--limit", "1", "--json").stdout)
    assert [d["id"] for d in one] == ["later"]
    none = spoolq(spool_dir, "list", "--state", "processing", "--state", "waiting")
    assert none.returncode == 0 and "no waiting or processing jobs" in none.stdout + none.stderr


@pytest.mark.parametrize("command", [["cancel", "j", "j"], ["wait", "--timeout", "5", "j", "j"]])
def test_an_id_given_twice_counts_once(spool_dir, command):
    """A script's list of ids with a repeat: `cancel X X` cancelled X and then exited 1 saying it
    was already dead; `wait X X` named it twice."""
    spool = Spool(spool_dir)
    spool.enqueue({"command": "true", "id": "j", "delay": 3600})
    if command[0] == "wait":
        spool.cancel(["j"])
    r = spoolq(spool_dir, *command)
    if command[0] == "cancel":
        assert r.returncode == 0 and r.stdout.count("j: cancelled") == 1, r.stdout + r.stderr
    else:
        assert r.returncode == 1 and "dead: j\n" in r.stderr, r.stderr
