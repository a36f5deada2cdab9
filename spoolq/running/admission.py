"""Admission: what a worker may claim now. Nothing while its heartbeat fails (the lease would run
out under the job, which would then run twice) or while everything it takes is paused; otherwise
any queue it takes but the paused ones (pause.py) and those whose slots are all taken (slots.py).
Each change is said once in the worker's log."""

from __future__ import annotations

from typing import Callable

from ..format import layout
from ..spool import Spool


class Admission:
    def __init__(self, spool: Spool, queues: frozenset[str] | None, healthy: Callable[[], bool],
                 log: Callable[[str], None], *, burst: bool = False):
        self.spool = spool
        self.queues = queues
        self.healthy = healthy
        self.log = log
        self.burst = burst
        self._claiming = True
        self._pause_said: tuple[bool, frozenset[str]] = (False, frozenset())
        self.full: set[str] = set()  # limited queues whose slots were all taken when last tried

    def all_paused(self) -> bool:
        """Everything this worker takes is paused (control/pause: one stat before every claim)."""
        said = self.spool.pauses.for_worker(self.queues)
        if said != self._pause_said:
            self._pause_said = said
            self.log(self.spool.pauses.describe(*said, leaving=self.burst))
        return said[0]

    def blocked(self) -> frozenset[str] | None:
        """The queues to pass over now; None when nothing may be claimed. Asks all_paused() once
        (its answer stays in `everything_paused` for the rest of the loop's turn)."""
        paused = self.all_paused()
        if not self._heartbeat_works() or paused:
            return None
        return self._pause_said[1] | self.full

    def passed_over(self) -> frozenset[str]:
        """The queues blocked() passed over, as they are now (no new look at the pauses)."""
        return self._pause_said[1] | self.full

    @property
    def everything_paused(self) -> bool:
        """What the last all_paused() found (no new look)."""
        return self._pause_said[0]

    @property
    def paused_queues(self) -> frozenset[str]:
        """The paused queues of those it takes, as the last all_paused() found them."""
        return self._pause_said[1]

    def _heartbeat_works(self) -> bool:
        healthy = self.healthy()
        if healthy != self._claiming:
            self._claiming = healthy
            self.log("claiming again: the heartbeat works" if healthy else
                     "not claiming: the heartbeat has failed for half a lease")
        return healthy

    def slot_for(self, name: str, owner: str) -> tuple[bool, str | None]:
        """Before claiming `name`: whether the claim may go on, and the slot taken for it (a
        queue with a concurrency limit). A queue found full is passed over until woke()."""
        limits = self.spool.slots.limits()
        if not limits:
            return True, None  # no queue is limited: nothing to parse
        parsed = layout.parse_pending(name)
        queue = parsed.queue if parsed is not None else layout.DEFAULT_QUEUE
        if queue not in limits:
            return True, None
        held = self.spool.slots.take(queue, owner)
        if held is None:
            self.full.add(queue)
            return False, None
        return True, held

    def give_back(self, held: str | None) -> None:
        if held is not None:
            self.spool.slots.give_back(held)
            self.woke()  # a slot of ours came free: try the full queues again

    def woke(self) -> None:
        """After a wait or a job: slots may have come free elsewhere."""
        self.full.clear()
