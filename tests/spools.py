"""Helpers shared by the tests of trust, drop-ins, enqueue and observing: spools in odd shapes
(a symlinked state directory, a half-made batch, a hostile attempts-log line), the CLI as a real
process, and the uids they play with."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import process_state, spoolq
from spoolq import Spool


ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another uid")


STRANGER = 12345


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(spool_dir: str, *args: str, **kw) -> subprocess.CompletedProcess:
    return spoolq(spool_dir, *args, **kw)


def _symlinked_done(root: str) -> str:
    Spool(root)
    os.rmdir(os.path.join(root, "done"))
    os.makedirs(root + "-elsewhere")
    os.symlink(root + "-elsewhere", os.path.join(root, "done"))
    return os.path.join(root, "done")


def _batch(tmp_path, n: int) -> str:
    path = tmp_path / "batch.jsonl"
    path.write_text("".join(json.dumps({"id": f"b{i}", "command": "true"}) + "\n" for i in range(n)))
    return str(path)


def tree(root: str) -> dict[str, tuple[int, int, int, int, int]]:
    """Every entry under root (and root) with its mode, owner, group, size and mtime."""
    out = {}
    for path in [root, *(os.path.join(d, n) for d, ds, fs in os.walk(root) for n in ds + fs)]:
        st = os.lstat(path)
        out[os.path.relpath(path, root)] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns)
    return out


BIG = 10 * 1024 * 1024


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


def pid_gone(pid: int) -> bool:
    """No such process, or only its zombie is left (PID 1 of a container may never reap it)."""
    return process_state(pid) in (None, "Z", "X")


MEMBER, GROUP = 54321, 54320  # a member of a shared spool's group, not in trusted_uids


def shared_spool(base: str) -> Spool:
    """A group_access spool under `base` (searchable by all) whose group is GROUP, made as an admin does."""
    os.chmod(base, 0o755)
    root = os.path.join(base, "spool")
    os.mkdir(root)
    os.chown(root, -1, GROUP)
    os.chmod(root, 0o2700)
    spool = Spool(root)
    spool.set_config("group_access", True)
    return spool


def as_member(script: str, *args: str, uid: int = MEMBER) -> subprocess.CompletedProcess:
    """`sh -c script` as MEMBER (or another `uid` of the group): its own uid, the spool's group, no capabilities."""
    def become() -> None:
        os.setgroups([GROUP])
        os.setgid(GROUP)
        os.setuid(uid)
    return subprocess.run(["/bin/sh", "-c", script, "member", *args], preexec_fn=become, capture_output=True,
                          text=True, timeout=30)


def dead_owner(spool_dir: str) -> str:
    """The token of an owner registered by a process that has exited: a dead worker of this host.
    (Its token is flushed before os._exit, which writes no buffer: a suite run without
    PYTHONUNBUFFERED got an empty token, which named processing/ itself.)"""
    code = ("import os, sys\nfrom spoolq import Spool\n"
            "sys.stdout.write(Spool(sys.argv[1]).owners.register('worker'))\nsys.stdout.flush()\nos._exit(0)")
    owner = subprocess.run([sys.executable, "-c", code, spool_dir], capture_output=True, text=True, check=True,
                           cwd=REPO).stdout.strip()
    assert owner, "no owner token"
    return owner
