"""Adopting drop-ins: files another program put in pending/ under a name of its own, each taken
in (moves/transitions.py, adopt) by the worker's own thread once it is due."""

from __future__ import annotations

from typing import Callable

from ..format.errors import LostOwnership
from ..format.states import State
from ..moves.transitions import Adopted
from ..pending.index import PendingIndex
from ..pending.rescans import Rescans
from ..spool import Spool


def adopt_due(spool: Spool, index: PendingIndex, rescans: Rescans, owner: str, now: float,
              log: Callable[[str], None]) -> bool:
    """Adopt each drop-in due now; False if `owner` lost its ownership (declared dead elsewhere)."""
    for name in index.dropins_due(now):
        poll = spool.config.poll_interval
        try:
            result = spool.transitions.adopt(name, owner)
        except LostOwnership:
            return False
        except Exception as e:  # a file nobody foresaw must cost a log line, never the worker
            log(f"cannot take dropped file {name!r}: {type(e).__name__}: {e}")
            index.defer_dropin(name, now + poll)
            continue
        if result.outcome is Adopted.WAIT:
            # Look again at the next rescan (or sooner, when its writer closes it); it is
            # quarantined only once drop_grace has passed since its last change.
            index.defer_dropin(name, min(result.retry_at or now + poll, now + poll))
            continue
        index.forget_dropin(name)
        if result.moved is not None and result.moved.state == State.PENDING:
            rescans.remember(result.moved.name)  # before any claim: FIFO by arrival, not by event order
        if result.outcome is Adopted.QUARANTINED:
            log(f"quarantined dropped file {name!r}: {result.reason}")
    return True
