"""A newcomer's first hour: what someone used to nq, task-spooler, pueue, RQ or Sidekiq types
first, and the one line that tells them what spoolq wants instead."""

from __future__ import annotations

import os
import re
import shlex

import pytest

from conftest import spoolq
from spools import REPO
from spoolq import Spool


@pytest.mark.parametrize("words, example", [
    (["echo", "hello", "world"], "spoolq enqueue 'echo hello world'"),
    (["cp", "a b", "c"], "spoolq enqueue 'cp '\"'\"'a b'\"'\"' c'"),  # the words as they were given
])
def test_an_unquoted_command_is_told_to_quote_it(spool_dir, words, example):
    """`nq echo hello`, `tsp echo hello` and `pueue add echo hello` take the command's words; spoolq
    takes one argument, and said only "Got unexpected extra arguments (hello world)"."""
    r = spoolq(spool_dir, "enqueue", *words)
    assert r.returncode == 2, r.stderr
    error = r.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: JOB is one argument"), r.stderr
    assert example in error
    assert not os.path.exists(spool_dir)  # nothing written, as for every usage error


def test_a_long_or_multiline_command_gets_a_short_example(spool_dir):
    r = spoolq(spool_dir, "enqueue", "printf", "a\nb", *["x"] * 60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("Error: JOB is one argument: quote it, as in spoolq enqueue '")
    assert len(r.stderr.strip().splitlines()[-1]) < 200


def test_one_quoted_command_still_enqueues(spool_dir):
    r = spoolq(spool_dir, "enqueue", "--id", "q", "echo hello world")
    assert (r.returncode, r.stdout) == (0, "q\n"), r.stderr


@pytest.mark.parametrize("word, pointer", [
    ("restart", "`spoolq requeue ID...`"),             # pueue restart
    ("follow", "`spoolq logs -f ID`"),                 # pueue follow
    ("tail", "`spoolq logs -f ID`"),
    ("cat", "`spoolq logs ID`"),                       # tsp -c
    ("info", "`spoolq status` (the spool) or `spoolq show ID` (a job)"),  # rq info, tsp -i
    ("jobs", "`spoolq list`"),
    ("ps", "`spoolq list`"),
    ("clean", "`spoolq purge --state done`"),          # pueue clean, tsp -C
    ("clear", "`spoolq purge --state done`"),
    ("push", "`spoolq enqueue`"),
    ("failed", "`spoolq dlq list`"),                   # RQ's failed job registry
    ("parallel", "`spoolq queue set Q --concurrency N`"),  # pueue parallel
    ("group", "`spoolq queue list`"),                  # pueue group
    ("cron", "`spoolq schedule add NAME CRON --cmd CMD`"),
    ("dashboard", "`spoolq web`"),
])
def test_a_word_of_another_queue_points_to_spoolqs(cli, spool_dir, word, pointer):
    """These were answered with a command merely spelled alike (`restart`: did you mean 'stats'?,
    `push`: 'pause'?) or with no hint at all."""
    result = cli(word)
    assert result.exit_code == 2
    assert f"Error: no such command {word!r}; {pointer}" in result.output
    assert not os.path.exists(spool_dir)


def test_the_unsafe_file_system_refusal_names_a_page_that_exists(gluster, tmp_path):
    """`worker start` on GlusterFS at its defaults refused "see the README (Running on several
    hosts)": the README has no such section; docs/hosts.md is that page."""
    path = os.path.join(gluster.mount("stock", "A"), gluster.new_dir("stock", os.path.basename(tmp_path)))
    Spool(path)
    env = {k: v for k, v in os.environ.items() if k != "SPOOLQ_ALLOW_UNSAFE_FS"}
    r = spoolq(path, "worker", "start", "--burst", env=env)
    assert r.returncode == 1, r.stderr
    named = re.search(r"see (\S+\.md) \(([^)]+)\)", r.stderr)
    assert named, r.stderr
    page, section = named.groups()
    with open(os.path.join(REPO, page), encoding="utf-8") as f:
        assert re.search(rf"^#+ {re.escape(section)}$", f.read(), re.M), (page, section)


@pytest.mark.parametrize("job", ["echo hi", "true", "backup.sh /home"])
def test_a_command_given_as_a_schedules_job_is_sent_to_cmd(cli, spool_dir, job):
    """`enqueue 'echo hi'` takes a command; `schedule add x @daily 'echo hi'` said "job is not valid
    JSON: Expecting value at line 1 column 1" (and for `true`, "must be a JSON object, not a boolean")."""
    result = cli("schedule", "add", "nightly", "15 2 * * *", job)
    assert result.exit_code == 2
    assert ("Error: JOB is a JSON object; a command goes in --cmd, as in "
            f"spoolq schedule add nightly '15 2 * * *' --cmd {shlex.quote(job)}") in result.output
    assert not os.path.exists(spool_dir)


def test_a_schedules_json_job_is_still_taken(cli):
    result = cli("schedule", "add", "nightly", "@daily", '{"command": "echo hi"}')
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("args", [("status",), ("list",), ("worker", "stop")])
def test_no_spool_says_how_to_name_one(tmp_path, args):
    """The first command in a new directory, without SPOOLQ_DIR, said "no spool at /abs/spool" and
    no more: not that --spool or SPOOLQ_DIR names another, as the enqueue that creates one says."""
    where = tmp_path / "spool"
    r = spoolq(str(where), *args)
    assert r.returncode == 1
    assert r.stderr == (f"Error: no spool at {where} (--spool DIR or SPOOLQ_DIR names another; "
                        "spoolq init makes one there)\n"), r.stderr
    assert not where.exists()
