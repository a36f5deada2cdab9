"""Spool locks: a holder killed while holding one lets the next taker in at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from spoolq.format import layout as L
from spoolq.format.errors import LockBusy
from spoolq.system import locks


# ---- hardening: races an adversarial review found in the first designs ---------------------------


@pytest.mark.review("hardening first designs")
@pytest.mark.parametrize("host", [None, "elsewhere"])
def test_a_holder_killed_holding_a_lock_lets_the_next_taker_in_at_once(spool, host):
    """A holder SIGKILLed while it holds a lock (here a `dlq retry` stand-in) leaves nothing that
    blocks: the kernel lets its flock go with it, and the next taker neither waits nor judges, so
    a holder calling itself another host (SPOOLQ_HOST), whose pid means nothing here, is no
    different."""
    lock = spool.layout.lock("dlq")
    env = {**os.environ, **({"SPOOLQ_HOST": host} if host else {})}
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from spoolq.system import locks\n"
                               "with locks.locked(sys.argv[1], mode=0o600):\n    print('held', flush=True); time.sleep(60)",
                               lock], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline() == "held\n"
        assert locks.holder(lock).pid == holder.pid
        with pytest.raises(LockBusy, match=f"held by pid {holder.pid} on host {host or L.host_name()}"):
            with locks.locked(lock, mode=0o600, timeout=0.2):
                pass
    finally:
        holder.kill()
        holder.wait()
    started = time.monotonic()
    with locks.locked(lock, mode=0o600, timeout=0):  # one try: it is free at once
        assert locks.holder(lock).pid == os.getpid()
    assert time.monotonic() - started < 1
    assert locks.holder(lock) is None

