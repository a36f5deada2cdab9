"""A worker's heartbeat: the thread that keeps its lease by touching its registration, and says
whether it can (a worker whose heartbeat fails must not claim: its lease would run out under the
job, and the job would run twice)."""

from __future__ import annotations

import threading
import time
from typing import Callable

from ..spool import Spool


class Heartbeat:
    """The thread that touches a worker's registration every heartbeat_interval. Whatever goes
    wrong in one beat (a config.json caught half-written, a full disk) is logged and tried again
    at the next; the worker asks `healthy()` before each claim and stops claiming while its
    beats fail, since its lease would run out under a job."""

    def __init__(self, spool: Spool, log: Callable[[str], None]):
        self.spool = spool
        self.log = log
        self.owner = ""
        self.lost = False  # the registration is gone: this owner was declared dead elsewhere
        self._stop = threading.Event()
        self._last_ok = time.monotonic()
        self._failing: str | None = None

    def start(self, owner: str) -> None:
        self.owner, self.lost, self._last_ok = owner, False, time.monotonic()
        threading.Thread(target=self._loop, name="heartbeat", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def healthy(self) -> bool:
        try:
            lease = self.spool.config.lease_timeout
        except Exception:
            lease = 30.0
        return time.monotonic() - self._last_ok < lease / 2

    def _loop(self) -> None:
        last_beat = time.monotonic()
        while not self._stop.wait(0.25):  # 4 looks a second: a shorter lease set meanwhile applies at once
            try:
                if time.monotonic() - last_beat < self.spool.owners.heartbeat_interval():
                    continue
                last_beat = time.monotonic()
                if not self.spool.owners.heartbeat(self.owner):
                    self.lost = True
                self._last_ok = time.monotonic()
                if self._failing:
                    self.log(f"heartbeat works again (it failed: {self._failing})")
                    self._failing = None
            except Exception as e:  # never let the thread die: a dead heartbeat means a lost lease
                if self._failing is None:
                    self.log(f"heartbeat failed: {type(e).__name__}: {e}; trying again, not claiming meanwhile")
                self._failing = f"{type(e).__name__}: {e}"
