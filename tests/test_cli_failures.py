"""Failures a careless operator or a shell script causes through the CLI: each gets its one-line
error and documented exit status, never a traceback, and changes nothing it should not (the
commands run as real processes, the way a script meets them)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile

import pytest

from conftest import wait_for
from spoolq import Spool
from spools import cli


def entries(root) -> list[str]:
    return sorted(os.listdir(root))


# ---- a spool path that is not a spool ------------------------------------------------------------


@pytest.mark.parametrize("repair", [False, True], ids=["check", "repair"])
def test_fsck_never_makes_a_directory_that_is_not_a_spool_one(tmp_path, repair):
    """`spoolq --spool ~ fsck --repair` scattered pending/, done/, locks/, ... into the home
    directory, which then passed for a spool: init and enqueue refuse such a directory."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine\n")
    (home / "work").mkdir()
    r = cli(str(home), "fsck", *(["--repair"] if repair else []), "--json")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r
    report = json.loads(r.stdout)
    assert [p["kind"] for p in report["problems"]] == ["not-a-spool"], report
    assert entries(home) == ["notes.txt", "work"]
    assert cli(str(home), "status").stderr.startswith(f"Error: no spool at {home} (")  # still not a spool


def test_fsck_still_repairs_a_spool_that_lost_a_directory(tmp_path):
    """What a spool holds of its own makes it one to repair, however much else is in it."""
    root = tmp_path / "spool"
    assert cli(str(root), "init").returncode == 0
    (root / "my-notes.txt").write_text("")
    os.rmdir(root / "pending")
    os.rmdir(root / "log")
    r = cli(str(root), "fsck", "--repair")
    assert r.returncode == 0, r
    assert (root / "pending").is_dir() and (root / "log").is_dir()


@pytest.mark.parametrize("command", [("enqueue", "--cmd", "true"), ("enqueue", "true"), ("config", "set", "max_retries", "1"),
                                     ("schedule", "add", "n", "@daily", "--cmd", "true"), ("fsck",), ("fsck", "--repair")])
def test_a_spool_path_that_is_a_file_is_said_to_be_one(tmp_path, command):
    """These read config.json before looking at the spool, and said only `Not a directory:
    PATH/config.json`, naming a file that does not exist."""
    path = tmp_path / "jobs.txt"
    path.write_text("not a spool\n")
    r = cli(str(path), *command)
    assert r.returncode == 1, r
    said = r.stderr + r.stdout
    assert "config.json" not in said and "Traceback" not in said, said
    if command[0] == "fsck":
        assert r.stdout.startswith("not-a-directory: .: the spool's path is not a directory"), r.stdout
    else:
        assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"Error: refusing to use {path}: it is not a directory"), r.stderr
    assert path.read_text() == "not a spool\n"


# ---- a stdout whose encoding is not UTF-8 --------------------------------------------------------


NOT_UTF_8 = [{"PYTHONIOENCODING": "latin-1"}, {"LC_ALL": "C", "PYTHONIOENCODING": "cp1252"}]


@pytest.mark.parametrize("encoding", NOT_UTF_8, ids=["latin-1", "cp1252"])
def test_text_a_stdout_cannot_encode_is_escaped_and_json_stays_utf_8(tmp_path, encoding):
    """`list`, `show` and every --json ended in a UnicodeEncodeError traceback (exit 1) for a job
    whose command held a character the locale's encoding has not (✓ in Latin-1)."""
    root = str(tmp_path / "spool")
    assert cli(root, "enqueue", "--id", "tick", "--cmd", "echo ✓ done").returncode == 0
    env = {**os.environ, **encoding}
    for args in (("list",), ("show", "tick"), ("dlq", "list"), ("status",)):
        r = cli(root, *args, env=env)
        assert r.returncode == 0 and "Traceback" not in r.stderr, (args, r)
    assert "echo \\u2713 done" in cli(root, "list", env=env).stdout
    for args in (("list", "--json"), ("show", "tick", "--json")):
        r = subprocess.run(cli_argv(root, *args), capture_output=True, env=env, timeout=60)
        assert r.returncode == 0 and b"Traceback" not in r.stderr, (args, r)
        shown = json.loads(r.stdout.decode("utf-8"))  # JSON in UTF-8, whatever the locale
        assert (shown[0] if isinstance(shown, list) else shown)["command"] == "echo ✓ done"


def cli_argv(root: str, *args: str) -> list[str]:
    from conftest import SPOOLQ

    return [*SPOOLQ, "--spool", root, *args]


# ---- the dashboard's token ------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["option", "blank option", "variable"])
def test_an_empty_dashboard_token_is_refused_not_served_as_none(tmp_path, how):
    """`spoolq web --bind 0.0.0.0:8765 --token "$TOKEN"` with TOKEN unset served the dashboard to
    anyone with no token at all (an empty one counted as none)."""
    root = str(tmp_path / "spool")
    assert cli(root, "init").returncode == 0
    args = {"option": ["--token", ""], "blank option": ["--token", "  "], "variable": []}[how]
    env = {**os.environ, "SPOOLQ_WEB_TOKEN": ""} if how == "variable" else None
    try:
        r = cli(root, "web", "--bind", "127.0.0.1:18791", *args, env=env, timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail("the dashboard was served with an empty token")
    assert r.returncode == 2, r
    assert r.stderr.splitlines()[-1].startswith("Error: Invalid value for '--token': the token is empty"), r.stderr


# ---- a value a script got wrong, megabytes long ---------------------------------------------------


LONG = "a" * 5000
LONG_VALUES = [("show", LONG), ("cancel", LONG), ("requeue", LONG), ("dlq", "retry", LONG), ("purge", LONG),
               ("wait", LONG), ("enqueue", "--cmd", "true", "--id", LONG), ("enqueue", "--cmd", "true", "--after", LONG),
               ("enqueue", "--cmd", "true", "--priority", LONG), ("enqueue", "--cmd", "true", "--timeout", LONG),
               ("enqueue", "--file", LONG), ("enqueue", "--batch", LONG), ("list", "--limit", LONG),
               ("stats", "--since", LONG), ("fsck", "--stale-after", LONG), ("config", "get", LONG),
               ("config", "set", LONG, "1"), ("config", "set", "max_retries", LONG), ("config", "set", "job_timeout", LONG),
               ("web", "--bind", LONG)]


@pytest.mark.parametrize("args", LONG_VALUES, ids=[" ".join(a[:-1] if a[-1] == LONG else a[:-2]) for a in LONG_VALUES])
def test_a_long_wrong_value_is_quoted_cut_not_echoed_whole(cli, args):
    """Each of these echoed the whole 5,000 characters back in its error (a `$(cat file)` where
    an id was meant): the message is cut after 80 and says how long the value was."""
    cli("init")
    result = cli(*args)
    assert result.exit_code == 2, result.output
    error = result.output.strip().splitlines()[-1]
    assert error.startswith("Error:") and "… (5000 characters)" in error, error
    assert len(result.output) < 1500, result.output


# ---- a closed stdout ------------------------------------------------------------------------------


def closed_stdout(root: str, *args: str) -> subprocess.CompletedProcess:
    """The CLI run as `spoolq ... >&-` runs it: descriptor 1 closed."""
    return subprocess.run(cli_argv(root, *args), stderr=subprocess.PIPE, text=True, timeout=60,
                          preexec_fn=lambda: os.close(1))


@pytest.mark.parametrize("args", [("list",), ("list", "--json"), ("status",), ("show", "one"), ("config", "show")])
def test_a_listing_to_a_closed_stdout_fails_saying_so(tmp_path, args):
    """These printed nothing and exited 0, as if the spool were empty: click skips a missing stdout."""
    root = str(tmp_path / "spool")
    assert cli(root, "enqueue", "--id", "one", "--cmd", "true").returncode == 0
    r = closed_stdout(root, *args)
    assert r.returncode == 1 and r.stderr == "Error: stdout is closed\n", r


@pytest.mark.parametrize("args, status", [(("wait", "later", "--timeout", "0.2"), 124), (("show", "nosuch"), 1),
                                          (("--bogus",), 2), (("list", "--limit", "x"), 2)])
def test_a_failure_with_stderr_closed_keeps_its_exit_status_and_stdout_clean(tmp_path, args, status):
    """`spoolq ... 2>&-`: an error's line had no stream to go to, so a timeout ended in an
    AttributeError (exit 1, not 124), and click printed its own errors to stdout instead, into
    what a script captures."""
    root = str(tmp_path / "spool")
    assert cli(root, "enqueue", "--id", "later", "--delay", "3600", "--cmd", "true").returncode == 0
    r = subprocess.run(cli_argv(root, *args), stdout=subprocess.PIPE, text=True, timeout=60,
                       preexec_fn=lambda: os.close(2))
    assert (r.returncode, r.stdout) == (status, ""), r


def test_detached_workers_start_with_stdout_closed(tmp_path):
    """`worker start --detach >&-` said "the workers did not start": the log the supervisor's
    output goes to took descriptor 1, and was closed again by the very redirection meant to fill it."""
    root = str(tmp_path / "spool")
    assert cli(root, "enqueue", "--id", "one", "--cmd", "true").returncode == 0
    r = closed_stdout(root, "worker", "start", "--detach", "--burst")
    assert r.returncode == 1 and r.stderr == "Error: stdout is closed\n", r  # workers started; it could not say so
    wait_for(lambda: cli(root, "show", "one", "--json").stdout.count('"state": "done"'), 30, "the job to be done")


# ---- the dashboard stopped by its service manager ----------------------------------------------


def test_the_dashboard_stopped_by_sigterm_exits_0(tmp_path):
    """`systemctl stop spoolq-web` (SIGTERM) ended it "terminated by signal 15", exit 143, which
    systemd counts as a failure of the unit; Ctrl+C already ended it with 0."""
    root = str(tmp_path / "spool")
    assert cli(root, "init").returncode == 0
    proc = subprocess.Popen(cli_argv(root, "web", "--bind", "127.0.0.1:18792"), stderr=subprocess.PIPE, text=True)
    try:
        assert "spoolq dashboard on" in proc.stderr.readline()  # serving: the signal handlers are in place
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, proc.stderr.read()
        assert "Error" not in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()


# ---- a spool its owner cannot look into ------------------------------------------------------------


NOBODY = 65534


def searchable_base() -> str:
    """A scratch directory another uid can reach (tmp_path is under root's private directory)."""
    for base in ("/var/tmp", "/tmp", "/dev/shm"):
        if os.path.isdir(base) and os.stat(base).st_mode & 0o001:
            return tempfile.mkdtemp(prefix="spoolq-cli-", dir=base)
    pytest.skip("no directory every uid can search")


@pytest.fixture
def nobodys_spool():
    """A spool of NOBODY's with a pending job `one` and a dead job `two`, where NOBODY can reach it."""
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another uid")
    base = searchable_base()
    root = os.path.join(base, "spool")
    spool = Spool(root)
    spool.enqueue({"id": "one", "command": "true"})
    spool.enqueue({"id": "two", "command": "true"})
    spool.cancel(["two"])
    for path in [root, *(os.path.join(d, n) for d, ds, fs in os.walk(root) for n in ds + fs)]:
        os.lchown(path, NOBODY, NOBODY)
    os.chmod(base, 0o755)
    yield root
    shutil.rmtree(base, ignore_errors=True)


def as_nobody(cli, root: str, *args: str):
    """The CLI in-process as NOBODY (what it imports on demand is imported first: where Python
    lives under root's private home, NOBODY could not read it)."""
    import secrets  # noqa: F401  (filelock's, on taking a lock)

    cli.spool_dir = root
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        return cli(*args)
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.mark.parametrize("args", [("status",), ("list",), ("show", "one"), ("wait",), ("purge",), ("worker", "stop")])
def test_a_spool_its_owner_cannot_look_into_is_not_called_missing(cli, nobodys_spool, args):
    """`chmod 000 spool` made every command say "no spool at PATH", which sends its owner to
    `init` or to look for a typo in SPOOLQ_DIR."""
    os.chmod(nobodys_spool, 0)
    result = as_nobody(cli, nobodys_spool, *args)
    assert result.exit_code == 1, result.output
    assert result.output == (f"Error: cannot look into {nobodys_spool}: Permission denied; its owner needs to read "
                             "and search it (chmod u+rwx)\n"), result.output


@pytest.mark.parametrize("args", [("show", "one"), ("show", "nosuch"), ("cancel", "one"), ("dlq", "retry", "two"),
                                  ("requeue", "two")])
def test_a_job_directory_its_owner_cannot_look_into_is_said_to_be_that(cli, nobodys_spool, args):
    """With done/ at mode 000, every id, known or not, was shown as a done job; `cancel` of a
    pending one said it had already finished, `dlq retry` of a dead one that it was done."""
    done = os.path.join(nobodys_spool, "done")
    os.chmod(done, 0)
    result = as_nobody(cli, nobodys_spool, *args)
    assert result.exit_code == 1, result.output
    assert f"Error: cannot look into {done}: Permission denied" in result.output, result.output
    assert "done" not in result.output.replace(done, ""), result.output


# ---- worker stop --timeout without --wait ----------------------------------------------------------


def test_worker_stop_refuses_a_timeout_without_wait(tmp_path, workers, spool_dir):
    """`spoolq worker stop --timeout 60` in a script returned at once, exit 0, with the workers
    still running: --timeout only bounds --wait, and without it was dropped without a word."""
    w = workers()
    r = cli(spool_dir, "worker", "stop", "--timeout", "60")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == (
        "Error: --timeout bounds --wait: give both (worker stop --wait --timeout S)"), r
    assert len(w.live()) == 1  # nothing was asked of them
