"""Telling a live owner from a dead one on this machine."""

from __future__ import annotations

import os

from conftest import wait_for
from spoolq.system import liveness


def test_a_zombie_is_dead():
    """A SIGKILLed worker whose parent has not reaped it (a container's pid 1 may never) must not
    keep its job: the pid still answers signals, but the process is gone."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        wait_for(lambda: liveness._stat_fields(pid)[0] == b"Z", 10, "the child to exit")
        assert not liveness.alive(pid)
    finally:
        os.waitpid(pid, 0)
    assert not liveness.alive(pid)


def test_a_reused_pid_is_not_the_owner_we_knew():
    me = os.getpid()
    token = liveness.start_token(me)
    assert liveness.alive(me, token)
    assert not liveness.alive(me, str(int(token) + 1)), "same pid, another start time: another process"
    assert not liveness.alive(0) and not liveness.alive("12")


def test_the_boot_id_is_stable_within_a_boot():
    assert liveness.boot_id() == liveness.boot_id()
