"""Steering the queue: pause, resume, cancel, requeue, and queues."""

from __future__ import annotations

import sys
import time

import click

from ..format.job import iso
from ..format.states import State
from ..store.slots import MAX_LIMIT
from .complete import job_ids, queue_names
from .base import Context, Int, check_ids, emit_json, emit_rows, json_option, main, pass_ctx, report_each, distinct
from .queue_names import paused_value, queue_set, queues_option, warn_about_queues, warn_unless_paused


def _say(names: frozenset[str], as_json: bool) -> None:
    if as_json:
        emit_json({"paused": paused_value(names)})
    elif not names:
        click.echo("not paused")
    else:
        click.echo(f"paused: {'every queue' if '*' in names else ', '.join(sorted(names))}")


@main.command()
@queues_option("Pause only these queues (may be given again).")
@json_option
@pass_ctx
def pause(c: Context, queues: frozenset[str] | None, as_json: bool) -> None:
    """Workers everywhere stop claiming jobs (of these queues, or all), within about one
    poll_interval on other hosts. Running jobs finish; enqueue and drop-ins are still accepted."""
    if queues is None:
        _say(c.spool.pause(None), as_json)
        return
    warn_about_queues(c.spool, sorted(queues))  # a typo would hold nothing and leave the meant queue running, silently
    for name in sorted(queues):  # every queue named: `--queue a --queue b` paused b alone, as click keeps the last
        paused = c.spool.pause(name)
    _say(paused, as_json)


@main.command()
@queues_option("Resume only these queues (may be given again; each stays paused while the whole spool is).")
@json_option
@pass_ctx
def resume(c: Context, queues: frozenset[str] | None, as_json: bool) -> None:
    """Workers claim jobs again (of these queues, or of every queue paused)."""
    if queues is None:
        _say(c.spool.resume(None), as_json)
        return
    before = c.spool.paused()
    for name in sorted(queues):
        warn_unless_paused(name, before)
        paused = c.spool.resume(name)
    _say(paused, as_json)


_SAID = {
    "cancelled": "cancelled",
    "killed": "killed by its worker: cancelled",
    "recorded": ("recorded as cancelled: its worker{on} could not be reached, and its lease ran out; that worker "
                 "kills the job itself before its lease ends, by {by} at the latest, unless its host is frozen"),
    "requested": "running: its worker was asked to kill it and has not yet (another host?); it will when it next looks",
    "running": "running: left alone (--kill kills it)",
    "finished": "already {state}: not cancelled",
    "unknown": "no such job",
    "busy": "being taken by a worker at this moment: not cancelled; try again",
}


@main.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, callback=distinct, required=True, shell_complete=job_ids)
@click.option("--kill", is_flag=True, help="Also kill running jobs: their worker, on any host, kills the job.")
@json_option
@pass_ctx
def cancel(c: Context, job_ids: tuple[str, ...], kill: bool, as_json: bool) -> None:
    """Cancel jobs: one that has not started goes to dead with last_error "cancelled" and is never
    retried. A running job is left alone unless --kill; then this waits (up to 30 s) for its
    worker to kill it. Exit 1 if any job was not cancelled (unknown, finished, running)."""
    check_ids(list(job_ids))
    results = c.spool.cancel(list(job_ids), kill=kill)
    if as_json:
        emit_json([{"id": r.job_id, "outcome": r.outcome.value, "state": r.state,
                    **({"host": r.host, "stopped_by": iso(r.stopped_by)} if r.outcome.value == "recorded" else {})}
                   for r in results])
    else:
        for r in results:
            by = time.strftime("%H:%M:%S", time.localtime(r.stopped_by)) if r.stopped_by else "the end of its lease"
            said = _SAID[r.outcome.value].format(state=r.state, on=f" on {r.host}" if r.host else "", by=by)
            line = f"{r.job_id}: {said}"
            click.echo(line if r.ok else f"Error: {line}", err=not r.ok)
    if not all(r.ok for r in results):
        sys.exit(1)


@main.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, callback=distinct, required=True, shell_complete=job_ids)
@json_option
@pass_ctx
def requeue(c: Context, job_ids: tuple[str, ...], as_json: bool) -> None:
    """Run finished (done or dead) jobs again: pending, attempts reset, at the back of their
    priority. Their output log keeps what earlier runs wrote. Exit 1 if any is not finished."""
    check_ids(list(job_ids))
    report_each(c.spool.requeue(list(job_ids)), "pending again", as_json)


@main.group()
def queue() -> None:
    """Queues: counts by state, which are paused, and concurrency limits."""


@queue.command("list")
@json_option
@pass_ctx
def queue_list(c: Context, as_json: bool) -> None:
    """Every queue that has jobs, is paused or has a limit: jobs by state, whether it is paused,
    its concurrency limit (null: none) and the slots in use."""
    from ..reading.counts import Counts

    paused, limits, in_use = c.reading.paused(), c.reading.slots.limits(), c.reading.slots.in_use()
    counts = c.reading.views.queue_counts()
    rows = []
    for name in sorted(set(counts) | (paused - {"*"}) | set(limits)):
        n = counts.get(name, Counts()).to_dict()
        n.pop("workers", None)
        n.pop("quarantined", None)  # a quarantined file is of no queue: status counts them
        rows.append({"queue": name, **n, "paused": "*" in paused or name in paused,
                     "concurrency": limits.get(name), "slots_in_use": in_use.get(name, 0)})
    emit_rows(rows, as_json, empty="no queues",
              header=f"{'QUEUE':<20} {'PENDING':>8} {'SCHEDULED':>9} {'RUNNING':>8} {'DONE':>8} {'DEAD':>8}  "
                     "PAUSED  LIMIT",
              line=lambda r: f"{r['queue']:<20} {r[State.PENDING]:>8} {r[State.SCHEDULED]:>9} {r[State.PROCESSING]:>8} "
                             f"{r[State.DONE]:>8} {r[State.DEAD]:>8}  {'yes' if r['paused'] else 'no ':<6}  "
                             f"{r['concurrency'] or '-'}")


@queue.command("set")
@click.argument("name", shell_complete=queue_names)
@click.option("--concurrency", type=Int(0, MAX_LIMIT), required=True,
              help="At most N jobs of the queue run at once, on all hosts together; 0 removes the limit.")
@pass_ctx
def queue_set_command(c: Context, name: str, concurrency: int) -> None:
    """Set a queue's concurrency limit."""
    if "," in name or queue_set([name], "'NAME'") is None:
        raise click.BadParameter("name one queue", param_hint="'NAME'")
    c.create().set_concurrency(name, concurrency)
    click.echo(f"{name}: at most {concurrency} at once" if concurrency else f"{name}: no limit")
