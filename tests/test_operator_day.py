"""An operator's day: a spool run as a service for a service user, watched and steered by root and
by its owner, as someone who runs RQ, Sidekiq or Postfix for a living uses it; each test pins a
step that failed, misled or said nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

from conftest import SPOOLQ, required_tool, spoolq, wait_for
from spoolq import Spool
from spools import ROOT_ONLY, cli, dead_owner, tree

SERVICE_USER = 65534  # nobody: the uid a packaged service runs as


def give_to(root: str, uid: int) -> None:
    """Every entry of a spool made by the test, handed to `uid`, as `install -o` and `sudo -u` make it."""
    for path in [root, *(os.path.join(d, n) for d, ds, fs in os.walk(root) for n in ds + fs)]:
        os.lchown(path, uid, uid)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- root looks at a service user's spool in the dashboard ---------------------------------------


@ROOT_ONLY
def test_root_serves_a_service_users_spool_read_only(tmp_path):
    """`spoolq web --read-only` on the service user's spool, as root, refused "only its owner
    changes it" (exit 1), where `status`, `list` and every other read-only command work: a
    dashboard that changes nothing only reads. Served now, and the spool stays as it was."""
    pytest.importorskip("flask", reason="the dashboard needs the web extra")
    root = str(tmp_path / "jobs")
    spool = Spool(root)
    spool.enqueue({"id": "nightly-1", "command": "true"})
    give_to(root, SERVICE_USER)
    before = tree(root)
    port = free_port()
    proc = subprocess.Popen([*SPOOLQ, "--spool", root, "web", "--read-only", "--bind", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def overview() -> dict | None:
            if proc.poll() is not None:
                raise AssertionError(f"spoolq web exited {proc.returncode}: {proc.stderr.read()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/overview", timeout=5) as r:
                    return json.loads(r.read())
            except OSError:
                return None
        assert wait_for(overview, 20, "the dashboard to answer")["counts"]["pending"] == 1
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/job/nightly-1", timeout=5) as r:
            assert json.loads(r.read())["state"] == "pending"
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
    assert tree(root) == before


@ROOT_ONLY
def test_a_dashboard_that_acts_points_root_to_read_only(tmp_path):
    root = str(tmp_path / "jobs")
    Spool(root)
    give_to(root, SERVICE_USER)
    r = cli(root, "web", "--bind", f"127.0.0.1:{free_port()}")
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert f"sudo -u nobody spoolq --spool {root}" in r.stderr and "web --read-only" in r.stderr, r.stderr


# ---- pause and resume a queue ------------------------------------------------------------------


def test_pausing_a_queue_nothing_named_warns_of_a_typo(spool, run):
    """`pause --queue mial` said "paused: mial", exit 0, and the `mail` jobs went on running:
    `worker start --queue` and `stats --queue` warn of such a name; pause does now (and still
    pauses it: a queue may be paused before its first job)."""
    spool.enqueue({"command": "true", "queue": "mail"})
    r = run("pause", "--queue", "mial")
    assert r.returncode == 0 and r.stdout == "paused: mial\n", r.stderr
    assert r.stderr == "Warning: no job, limit, pause or schedule has named queue 'mial'; did you mean 'mail'?\n"
    r = run("pause", "--queue", "mail")
    assert (r.returncode, r.stderr) == (0, ""), r.stderr


def test_resuming_a_queue_that_is_not_paused_says_so(spool, run):
    """`resume --queue mial` with `mail` paused said "paused: mail", exit 0, and nothing else: the
    operator, expecting the queue to run, had to spot that the line still named it."""
    spool.enqueue({"command": "true", "queue": "mail"})
    assert run("pause", "--queue", "mail").returncode == 0
    r = run("resume", "--queue", "mial")
    assert r.returncode == 0 and r.stdout == "paused: mail\n", r.stderr
    assert r.stderr == "Warning: queue 'mial' was not paused; did you mean 'mail'?\n"
    r = run("resume", "--queue", "reports")
    assert r.stderr == "Warning: queue 'reports' was not paused (paused: mail)\n"
    r = run("resume", "--queue", "mail")
    assert (r.returncode, r.stdout, r.stderr) == (0, "not paused\n", "")
    assert run("pause").returncode == 0
    assert run("resume", "--queue", "mail").stderr == ""  # held by the whole spool's pause: paused, said as it is


# ---- sudo -u from root's home: a job that can never start -------------------------------------


def locked_out(tmp_path) -> tuple[str, list[str]]:
    """A directory this test's uid cannot enter (root's home, to the service user), and the words
    that run a command as this uid without the capabilities that let root enter any directory."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to be a uid a directory is closed to")
    closed = tmp_path / "home"
    closed.mkdir(mode=0o700)
    os.chown(closed, SERVICE_USER, SERVICE_USER)
    return str(closed), ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


@pytest.mark.parametrize("form", [("--id", "j", "pwd"), ("--id", "j", "--json", "pwd"), ("--batch", "-")],
                         ids=["plain", "click", "batch"])
def test_a_job_enqueued_where_its_owner_cannot_go_is_said_at_once(spool_dir, tmp_path, form):
    """`sudo -u spoolq spoolq enqueue CMD` typed in /root enqueued, exit 0, a job whose cwd is
    /root: its worker (the same uid) failed every attempt with "cannot start: /bin/sh:
    Permission denied", blaming the shell. The enqueue warns now (the job is still enqueued: a
    worker on another host may reach that path), and the attempt names the directory."""
    closed, uncapable = locked_out(tmp_path)
    Spool(spool_dir)
    r = subprocess.run([*uncapable, *SPOOLQ, "--spool", spool_dir, "enqueue", "--max-retries", "0", *form],
                       cwd=closed, capture_output=True, text=True, timeout=60,
                       input='{"id": "j", "command": "pwd", "max_retries": 0}\n')
    assert r.returncode == 0, r.stderr
    assert r.stderr == (f"Warning: the job runs in {closed}, which uid 0 cannot enter: it cannot start there; "
                        "enqueue from a directory it can (cd /), or give its \"cwd\"\n")
    r = subprocess.run([*uncapable, *SPOOLQ, "--spool", spool_dir, "worker", "start", "--burst", "-q"], cwd="/",
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    job = json.loads(cli(spool_dir, "show", "j", "--json").stdout)
    assert (job["state"], job["last_error"]) == ("dead", f"cannot start: cwd {closed!r}: Permission denied")


def test_a_job_enqueued_where_its_owner_can_go_says_nothing_more(spool_dir, tmp_path):
    _, uncapable = locked_out(tmp_path)
    Spool(spool_dir)
    r = subprocess.run([*uncapable, *SPOOLQ, "--spool", spool_dir, "enqueue", "--id", "j", "pwd"], cwd="/",
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, "j\n", "")


# ---- the metrics textfile ----------------------------------------------------------------------


def test_a_textfile_its_workers_cannot_write_is_said_when_it_is_set(tmp_path):
    """The docs' recipe (`mkdir -p /var/lib/node_exporter/textfile` as root, then `config set
    metrics_textfile …` as the service user) said `metrics_textfile = "…"`, exit 0; the workers
    then said "cannot write metrics_textfile: Permission denied" in their log, naming no path,
    and node_exporter had nothing."""
    closed, uncapable = locked_out(tmp_path)
    os.chmod(closed, 0o755)  # root's directory, as mkdir made it: readable, not writable, by the service user
    root = str(tmp_path / "jobs")
    Spool(root)
    r = subprocess.run([*uncapable, *SPOOLQ, "--spool", root, "config", "set", "metrics_textfile", f"{closed}/spoolq.prom"],
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (0, f'metrics_textfile = "{closed}/spoolq.prom"\n'), r.stderr
    assert r.stderr == (f"Warning: metrics_textfile: uid 0 cannot write into {closed}: the workers cannot write the "
                        "textfile until they can (under systemd, the unit's ReadWritePaths= must name the directory too)\n")


def test_a_textfile_in_no_directory_is_said_and_a_good_one_is_not(spool, run, tmp_path):
    r = run("config", "set", "metrics_textfile", f"{tmp_path}/missing/spoolq.prom")
    assert r.returncode == 0 and r.stderr.startswith(f"Warning: metrics_textfile: {tmp_path}/missing is not a directory: ")
    r = run("config", "set", "metrics_textfile", f"{tmp_path}/spoolq.prom")
    assert (r.returncode, r.stderr) == (0, "")


def test_a_worker_that_cannot_write_the_textfile_names_it(spool_dir, run, tmp_path, workers):
    path = f"{tmp_path}/missing/spoolq.prom"
    assert run("config", "set", "metrics_textfile", path).returncode == 0
    w = workers(1)
    w.wait_for(lambda: "cannot write metrics_textfile" in w.output, 15, "the worker to say it cannot write it")
    assert f"cannot write metrics_textfile {path}: No such file or directory" in w.output


# ---- the dead-letter queue from a script ---------------------------------------------------------


def test_dlq_retry_says_what_it_retried_in_json(spool, run):
    """Every listing and per-id command has --json (requeue, cancel, purge say per id what they
    did); `dlq retry --json`, which a script runs after `dlq list --json`, was "No such option"
    (exit 2)."""
    for job_id in ("a", "b"):
        spool.enqueue({"id": job_id, "command": "true"})
    assert run("cancel", "a", "b").returncode == 0  # dead, "cancelled": what dlq retry runs again
    r = run("dlq", "retry", "b", "--json")
    assert (r.returncode, json.loads(r.stdout)) == (0, [{"id": "b", "ok": True, "error": None}]), r.stderr
    r = run("dlq", "retry", "--all", "--json")
    assert (r.returncode, json.loads(r.stdout)) == (0, [{"id": "a", "ok": True, "error": None}]), r.stderr
    assert json.loads(run("dlq", "retry", "--all", "--json").stdout) == []
    assert spool.find("a").state == spool.find("b").state == "pending"


# ---- fsck of a service user's spool, as root -----------------------------------------------------


@ROOT_ONLY
def test_root_checking_a_service_users_spool_is_told_who_repairs_it(tmp_path):
    """root's `fsck` of the service user's spool ended "run with --repair to fix what is safe";
    root's `fsck --repair` is refused (only the owner repairs it). The advice names the command
    that works."""
    root = str(tmp_path / "jobs")
    Spool(root)
    dead_owner(root)  # a worker killed with -9: its directory in processing/ is recovery's to take back
    give_to(root, SERVICE_USER)
    r = cli(root, "fsck")
    assert r.returncode == 1, r.stderr
    assert r.stdout.splitlines()[-1] == (f"1 problem found; run sudo -u nobody spoolq --spool {root} fsck --repair "
                                         "to fix what is safe"), r.stdout
    assert cli(root, "fsck", "--repair").returncode == 1  # still the owner's alone


# ---- one queue's jobs --------------------------------------------------------------------------


def test_list_and_dlq_list_show_one_queue(spool, run):
    """`rq info mail` or Sidekiq's queue page: the jobs of one queue. `list` and `dlq list` had no
    --queue ("No such option", exit 2): an operator whose mail jobs died beside a thousand others
    had to read every dead job, or filter JSON with jq."""
    for job_id, queue in (("m1", "mail"), ("r1", "reports"), ("m2", "mail")):
        spool.enqueue({"id": job_id, "command": "true", "queue": queue})
    assert run("cancel", "m2", "r1").returncode == 0  # dead
    r = run("list", "--queue", "mail", "--json")
    assert (r.returncode, [j["id"] for j in json.loads(r.stdout)]) == (0, ["m1", "m2"]), r.stderr
    assert [j["id"] for j in json.loads(run("list", "--queue", "mail", "--limit", "1", "--json").stdout)] == ["m1"]
    assert [j["id"] for j in json.loads(run("dlq", "list", "--queue", "mail", "--json").stdout)] == ["m2"]
    r = run("dlq", "list", "--queue", "mial")
    assert (r.returncode, r.stdout) == (0, "no dead jobs of queue mial\n"), r.stderr
    assert r.stderr == "Warning: no job, limit, pause or schedule has named queue 'mial'; did you mean 'mail'?\n"
    assert run("list", "--queue", "a b").returncode == 2


@pytest.mark.parametrize("key, meaning", [("keep_done", "0 = kept for good"), ("job_timeout", "0 = no limit")])
def test_a_duration_that_is_no_duration_is_told_what_0_means(spool_dir, key, meaning):
    """`config set keep_done forever` was refused with the duration syntax alone: what says
    "for good" here (0) was left for the reader to find."""
    r = spoolq(spool_dir, "config", "set", key, "forever")
    assert r.returncode == 2 and meaning in r.stderr and "90s" in r.stderr, r.stderr


def test_pause_and_resume_take_every_queue_named(spool_dir):
    """`pause --queue a --queue b` paused b alone (click keeps the last value), and said so in a
    line easy to misread: a went on running. Every queue named is paused, and resumed, as
    `worker start --queue` takes them (again, or `a,b`)."""
    for queue in ("a", "b", "c"):
        assert spoolq(spool_dir, "enqueue", "--queue", queue, "--cmd", "true").returncode == 0
    r = spoolq(spool_dir, "pause", "--queue", "a", "--queue", "b", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == {"paused": ["a", "b"]}, r
    r = spoolq(spool_dir, "pause", "--queue", "c,a", "--json")
    assert json.loads(r.stdout) == {"paused": ["a", "b", "c"]}
    r = spoolq(spool_dir, "resume", "--queue", "a", "--queue", "c", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == {"paused": ["b"]}, r


def test_cli_mds_recipe_retries_one_queues_dead_jobs(spool_dir):
    """The pipeline docs/cli.md gives for retrying one queue's dead jobs, run as written there."""
    required_tool("jq", "SPOOLQ_REQUIRE_JQ", "jq")
    with open(os.path.join(os.path.dirname(__file__), "..", "docs", "cli.md"), encoding="utf-8") as f:
        recipe = re.search(r"`(spoolq dlq list --queue Q --json [^`]*)`", f.read()).group(1).replace("\\|", "|")
    spool = Spool(spool_dir)
    for job_id, queue in (("m1", "mail"), ("m2", "mail"), ("o1", "other")):
        spool.enqueue({"id": job_id, "queue": queue, "command": "true", "delay": 3600})
    spool.cancel(["m1", "m2", "o1"])
    env = {**os.environ, "SPOOLQ_DIR": spool_dir,
           "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    r = subprocess.run(["sh", "-c", recipe.replace(" Q ", " mail ")], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert [spool.find(i).state for i in ("m1", "m2", "o1")] == ["pending", "pending", "dead"]


# ---- a setup step run again -----------------------------------------------------------------------


def test_setting_group_access_again_keeps_finish_times(tmp_path):
    """A setup script (or a careful operator) runs `config set group_access true` on every
    deploy. Each run chmodded every file spoolq made, modes unchanged or not, and a chmod sets a
    file's ctime, which is where a finished job's finish time is read: every done job "finished"
    at the last deploy, and retention counted their age from it. A mode already right is now left
    alone, so a repeat changes nothing."""
    root = str(tmp_path / "jobs")
    Spool(root).enqueue({"id": "earlier", "command": "true"})
    assert cli(root, "worker", "start", "--burst", "-q").returncode == 0
    assert cli(root, "config", "set", "group_access", "true").returncode == 0  # the first turn changes modes
    before = json.loads(cli(root, "show", "earlier", "--json").stdout)["finished_at"]
    ctime = os.lstat(os.path.join(root, "done", "earlier.json")).st_ctime
    wait_for(lambda: time.time() > ctime + 0.05, timeout=5)  # past the file system's coarse clock
    for value in ("true", "true"):
        assert cli(root, "config", "set", "group_access", value).returncode == 0
    assert json.loads(cli(root, "show", "earlier", "--json").stdout)["finished_at"] == before
    assert os.lstat(os.path.join(root, "done", "earlier.json")).st_ctime == ctime
