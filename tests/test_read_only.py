"""Read-only commands: they never create a spool, and root reading a service user's spool changes
nothing; a command that changes it leaves every file its owner's."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from conftest import SPOOLQ, wait_for
from spoolq import Spool
from spools import cli, ROOT_ONLY, tree


# ---- hardening: 19. read-only commands never create a spool; quarantine never replaces -----------


@pytest.mark.review("hardening 19")
@pytest.mark.parametrize("args", [("status",), ("list",), ("show", "x"), ("wait",), ("logs", "x"),
                                  ("dlq", "list"), ("worker", "list"), ("worker", "stop"), ("config", "show"),
                                  ("purge",)])
def test_read_only_commands_say_there_is_no_spool(tmp_path, args):
    where = tmp_path / "typo"
    r = cli(str(where), *args)
    assert r.returncode == 1 and r.stderr.strip().startswith(f"Error: no spool at {where} ("), r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert not where.exists()


SERVICE_USER = 65534  # nobody: the uid a packaged service runs as


READ_ONLY = [("status",), ("status", "--json"), ("list",), ("show", "ok"), ("logs", "ok"), ("wait", "ok"),
             ("stats", "--since", "1d"), ("dlq", "list"), ("queue", "list"), ("schedule", "list"),
             ("schedule", "show", "nightly"), ("metrics",), ("fsck",), ("worker", "list"), ("config", "show"),
             ("config", "get", "max_retries")]


def a_service_users_spool(root: str, shared: bool) -> None:
    """A spool that has seen some work, with a bit of everything in it, then given to SERVICE_USER."""
    spool = Spool(root)
    spool.set_config("group_access", shared)
    spool.set_config("drop_grace", 0)
    for spec in ({"id": "ok", "command": "echo hi"}, {"id": "bad", "command": "exit 3", "max_retries": 0},
                 {"id": "later", "command": "true", "delay": 3600}, {"id": "mail", "command": "true", "queue": "mail"}):
        spool.enqueue(spec)
    with open(os.path.join(spool.layout.pending, "broken.json"), "w") as f:
        f.write("{not json")
    assert cli(root, "schedule", "add", "nightly", "15 2 * * *", "--cmd", "true").returncode == 0
    assert cli(root, "queue", "set", "mail", "--concurrency", "1").returncode == 0
    assert cli(root, "pause", "--queue", "mail").returncode == 0
    assert cli(root, "worker", "start", "--burst", "-q").returncode == 0
    _a_job_held_by_a_killed_worker(spool, os.path.dirname(root))
    with open(os.path.join(spool.layout.pending, "dropped.json"), "w") as f:
        f.write(json.dumps({"command": "true"}))
    assert spool.find("ok").state == "done" and spool.find("bad").state == "dead"
    for path in [root, *(os.path.join(d, n) for d, ds, fs in os.walk(root) for n in ds + fs)]:
        os.lchown(path, SERVICE_USER, SERVICE_USER)


def _a_job_held_by_a_killed_worker(spool: Spool, scratch: str) -> None:
    """A job in processing/ whose worker was killed (a stale registration, a group to signal):
    what recovery would act on, and a reader must not."""
    pid_file = os.path.join(scratch, "held.pid")
    spool.enqueue({"id": "held", "command": f"echo $$ > {pid_file}; exec sleep 60"})
    proc = subprocess.Popen([*SPOOLQ, "--spool", spool.root, "worker", "start", "-q"], start_new_session=True,
                            stderr=subprocess.DEVNULL)
    wait_for(lambda: os.path.exists(pid_file) and open(pid_file).read().strip(), 15, "the held job to start")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    os.kill(int(open(pid_file).read()), signal.SIGKILL)
    assert spool.find("held").state == "processing"


@pytest.mark.review("hardening 19")
@ROOT_ONLY
@pytest.mark.parametrize("shared", [False, True], ids=["private", "group_access"])
@pytest.mark.slow
def test_root_reads_a_service_users_spool_and_changes_nothing(tmp_path, shared):
    """Every read-only command works for root on a spool it does not own, and nothing in the spool
    is created, chmodded, renamed or deleted (a reader never acts for the owner)."""
    root = str(tmp_path / "jobs")
    a_service_users_spool(root, shared)
    before = tree(root)
    for args in READ_ONLY:
        r = cli(root, *args)
        assert r.returncode in ((0, 1) if args == ("fsck",) else (0,)), (args, r.stderr)
        assert "Traceback" not in r.stderr and "refusing" not in r.stderr + r.stdout, (args, r.stderr)
        assert tree(root) == before, args
    status = json.loads(cli(root, "status", "--json").stdout)
    assert (status["done"], status["processing"]) == (1, 1)  # the killed worker's job: the owner's to recover
    assert "echo hi" in cli(root, "list").stdout and "hi" in cli(root, "logs", "ok").stdout
    assert "nightly" in cli(root, "schedule", "list").stdout


@pytest.mark.review("hardening 19")
@ROOT_ONLY
@pytest.mark.parametrize("args", [("pause",), ("enqueue", "true"), ("cancel", "later"), ("purge",),
                                  ("worker", "start", "--burst"), ("fsck", "--repair"), ("config", "set", "max_retries", "1"),
                                  ("dlq", "retry", "bad"), ("worker", "stop")])
@pytest.mark.slow
def test_a_command_that_changes_a_service_users_spool_stays_its_owners(tmp_path, args):
    root = str(tmp_path / "jobs")
    a_service_users_spool(root, False)
    before = tree(root)
    r = cli(root, *args)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and f"sudo -u nobody spoolq --spool {root}" in r.stderr, r.stderr
    assert tree(root) == before

