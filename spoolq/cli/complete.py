"""Shell completion (click's, for bash, zsh and fish): job ids, queue and schedule names from the
spool named on the command line (or $SPOOLQ_DIR), bounded: a completion reads at most SCAN
directory entries and offers at most LIMIT words. A completion never fails: at worst it offers
nothing."""

from __future__ import annotations

import os
from typing import Callable

import click

LIMIT = 50
SCAN = 5000


def _spool(ctx: click.Context):  # -> Spool | None
    from ..spool import Spool

    root = ctx.find_root()
    path = root.params.get("spool_dir") or os.environ.get("SPOOLQ_DIR") or "./spool"
    spool = Spool(path, create=False)
    return spool if spool.store.is_spool() else None


def _offer(find: Callable[[object, str], list[str]]) -> Callable[..., list]:
    def complete(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list:
        from click.shell_completion import CompletionItem  # loaded only when completing

        try:
            spool = _spool(ctx)
            return [CompletionItem(word) for word in find(spool, incomplete)] if spool is not None else []
        except Exception:  # a completion offers nothing rather than print a traceback into a prompt
            return []
    return complete


job_ids = _offer(lambda spool, prefix: spool.views.some_ids(prefix, LIMIT, SCAN))
queue_names = _offer(lambda spool, prefix: sorted(
    {*spool.views.some_queues(prefix, LIMIT, SCAN), *(q for q in spool.paused() - {"*"} if q.startswith(prefix))})[:LIMIT])
schedule_names = _offer(lambda spool, prefix: [s.name for s in _schedules(spool) if s.name.startswith(prefix)][:LIMIT])


def _schedules(spool) -> list:
    from ..running.schedules import Schedules

    return Schedules(spool).all()
