"""Which queue names a spool knows: those a job (in any state, or in the attempts log), a
concurrency limit, a pause or a schedule has named. A name none of them has is most likely a typo
(`worker start --queue encod` ran nothing and exited 0); the CLI warns about it. Read-only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from ..format import job
from ..store import attempts_log
from .schedules import Schedules

if TYPE_CHECKING:
    from ..spool import Spool


def unknown(spool: Spool, names: Iterable[str]) -> list[str]:
    """The names no job, limit, pause or schedule of the spool has named, in the order given. The
    cheap sources are asked first; a name they do not know costs a count of every job and a read
    of the attempts log (only a typo pays it)."""
    wanted = [name for name in dict.fromkeys(names) if name != job.DEFAULT_QUEUE]
    # RACE: an enqueue, a pause or a purge between two looks may name or forget a queue the
    # looks miss: the answer is only a warning's, never acted on.
    for source in (_named_by_settings, _named_by_pending_names, _named_by_jobs, _named_by_the_log):
        if not wanted:
            break
        known = source(spool)
        wanted = [name for name in wanted if name not in known]
    return wanted


def known(spool: Spool) -> list[str]:
    """Every queue name the spool knows, sorted (to suggest one)."""
    return sorted({job.DEFAULT_QUEUE} | _named_by_settings(spool) | _named_by_jobs(spool) | _named_by_the_log(spool))


def _named_by_settings(spool: Spool) -> set[str]:
    names = set(spool.slots.limits()) | (spool.paused() - {"*"})
    for schedule in Schedules(spool).all():
        queue = schedule.job.get("queue")
        if isinstance(queue, str):
            names.add(queue)
    return names


def _named_by_pending_names(spool: Spool) -> set[str]:
    return spool.views.pending_queues()  # one listing, no file read: where a worker's queue usually is


def _named_by_jobs(spool: Spool) -> set[str]:  # every file of processing/, waiting/, done/, dead/ read
    return set(spool.views.queue_counts())


def _named_by_the_log(spool: Spool) -> set[str]:
    return {fact.queue for fact in attempts_log.read(spool.layout.dir("events"))}
