"""The CLI's words for queues: `--queue` options read and checked, a name nothing has named
warned about (a typo), and how a pause is said."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

import click

from ..format.job import valid_queue
from ..spool import Spool

if TYPE_CHECKING:
    from ..store.owners import WorkerInfo
    from ..reading.views import JobView
    from .base import Context


def warn_about_queues(spool: Spool, names: Iterable[str]) -> None:
    """A warning line on stderr for each queue name nothing in the spool has named: most likely a
    typo, which would otherwise run or count nothing, silently."""
    from ..running.known_queues import known, unknown

    missing = unknown(spool, names)
    every = known(spool) if missing else []
    for name in missing:
        click.echo(f"Warning: no job, limit, pause or schedule has named queue {name!r}{_typo_hint(name, every, 'known')}",
                   err=True)


def warn_unless_taken(running: list[WorkerInfo], name: str) -> None:
    """A note on stderr when workers run (`running`: the live ones) and none of them takes queue
    `name` (each was started with `--queue` naming others): its jobs would wait, unseen, until one
    that does starts."""
    takers = [w for w in running if not isinstance(w.extra.get("queues"), list) or name in w.extra["queues"]]
    if running and not takers:
        click.echo(f"Note: no running worker takes queue {name!r} (each was started with --queue naming others): "
                   f"its jobs wait until one does (spoolq worker start --queue {name})", err=True)


def warn_unless_paused(name: str, paused: frozenset[str]) -> None:
    """A resume of a queue that was not paused (a typo: the one meant stays paused) says so."""
    if name in paused or "*" in paused:
        return
    click.echo(f"Warning: queue {name!r} was not paused{_typo_hint(name, sorted(paused), 'paused')}", err=True)


def _typo_hint(name: str, names: list[str], what: str) -> str:
    """"; did you mean 'X'?" of the name most like `name`, else the names there are (10 at most)."""
    from difflib import get_close_matches

    close = get_close_matches(name, names, n=1)
    return f"; did you mean {close[0]!r}?" if close else f" ({what}: {', '.join(names[:10]) or 'nothing'})"


def paused_value(names: frozenset[str]) -> Any:
    """As `status --json` says it: false, true (everything), or the paused queues."""
    if not names:
        return False
    return True if "*" in names else sorted(names)


def paused_text(names: frozenset[str]) -> str:
    value = paused_value(names)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return ", ".join(value)


def queue_set(given: tuple[str, ...] | list[str], param_hint: str = "'--queue'") -> frozenset[str] | None:
    """--queue A,B --queue C: the queues named (None when none is), each checked (exit 2)."""
    names = [name.strip() for value in given for name in value.split(",")]
    for name in names:
        if not valid_queue(name):
            raise click.BadParameter(f"invalid queue {name[:80]!r}: use 1-64 characters of A-Z a-z 0-9 . _ -, "
                                     "not starting with '.'", param_hint=param_hint)
    return frozenset(names) if names else None


def queues_option(help: str) -> Callable[[Any], Any]:
    """`--queue Q[,Q...]`, which may be given again, as the parameter `queues`: the queues named
    (None: none), checked before anything is read (exit 2). Given again, every one counts: click's
    own way keeps the last alone, so that `list --queue a --queue b` showed b's jobs as if they
    were all, and `pause --queue a --queue b` paused b alone."""
    from .complete import queue_names

    return click.option("--queue", "queues", multiple=True, metavar="Q[,Q...]", shell_complete=queue_names,
                        callback=lambda ctx, param, value: queue_set(value), help=help)


def queues_shown(queues: frozenset[str]) -> str:
    return f"queue{'s' if len(queues) > 1 else ''} {', '.join(sorted(queues))}"


def of_queues(c: Context, views: list[JobView], queues: frozenset[str] | None,
              limit: int | None = None) -> list[JobView]:
    """`list --queue Q`, `dlq list --queue Q`: the jobs of these queues (a quarantined file is of
    none), at most `limit`; a name nothing has named is warned about, as `worker start --queue` does."""
    if queues is not None:
        warn_about_queues(c.reading, sorted(queues))
        views = [v for v in views if v.job is not None and v.job.queue in queues]
    return views if limit is None else views[:limit]
