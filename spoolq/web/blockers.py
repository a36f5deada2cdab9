"""What keeps jobs from running, said where the operator looks first: ready jobs and no worker
(or none that takes their queue), a pause, a queue at its concurrency limit, jobs waiting for a
dead job. Each is a line and the list it concerns; plain data, no Flask."""

from __future__ import annotations

from typing import Any

from ..reading.counts import CountsByQueue
from ..spool import Spool
from ..format.states import State

DEPENDENCIES_LOOKED_AT = 1_000  # jobs waited for, looked up in dead/ at most per overview (a lookup each: on
# NFS or GlusterFS, where one costs up to a millisecond, a refresh stays under a second)


def _jobs(n: int) -> str:
    return "1 ready job waits" if n == 1 else f"{n} ready jobs wait"


def _line(text: str, state: str, queue: str = "") -> dict[str, str]:
    return {"text": text, "state": state, "queue": queue}


def found(spool: Spool, census: CountsByQueue, workers: list[dict[str, Any]], paused: frozenset[str]) -> list[dict[str, str]]:
    """Every reason progress is blocked now, most sweeping first."""
    ready = {q: c.pending for q, c in census.queues.items() if c.pending}
    total = census.totals.pending
    out = []
    if total and not workers:
        out.append(_line(f"no worker is running: {_jobs(total)}", State.PENDING))
    if total and "*" in paused:
        out.append(_line(f"every queue is paused: {_jobs(total)}", State.PENDING))
    limits, in_use = spool.slots.limits(), None
    for queue, n in ready.items():
        if queue in paused:
            out.append(_line(f"queue {queue} is paused: {_jobs(n)}", State.PENDING, queue))
        if workers and not any(w["queues"] is None or queue in w["queues"] for w in workers):
            out.append(_line(f"no worker takes queue {queue}: {_jobs(n)}", State.PENDING, queue))
        if queue in limits:
            in_use = spool.slots.in_use() if in_use is None else in_use
            if in_use.get(queue, 0) >= limits[queue]:
                out.append(_line(f"queue {queue} is at its concurrency limit ({limits[queue]} running): "
                                 f"{_jobs(n)}", State.PENDING, queue))
    stuck = _waiting_for_dead(spool) if census.totals.waiting else 0
    if stuck:
        out.append(_line(f"{stuck} waiting job{' waits' if stuck == 1 else 's wait'} for a dead job "
                         "(they go dead at the next recovery sweep; fsck says which)", State.WAITING))
    return out


def _waiting_for_dead(spool: Spool) -> int:
    """Waiting jobs one of whose dependencies is dead: they can never run."""
    return len(spool.deps.waiting_for_dead(DEPENDENCIES_LOOKED_AT))


def on_list(spool: Spool, state: str, queue: str) -> str | None:
    """What a list of jobs not started says of what keeps them from starting: a pause, or no
    worker at all."""
    if state not in (State.PENDING, State.SCHEDULED):
        return None
    paused = spool.paused()
    if "*" in paused:
        return "every queue is paused: no job starts"
    if queue and queue in paused:
        return f"queue {queue} is paused: none of its jobs starts"
    if not spool.workers(role="worker"):
        return "no worker is running: no job starts"
    if paused and not queue:
        return f"paused: {', '.join(sorted(paused))} (their jobs do not start)"
    return None
