"""Steering the queue: pause, resume, cancel and requeue."""

from __future__ import annotations

import sys

import click

from .base import Context, check_ids, emit_json, json_option, main, pass_ctx, paused_value, report_each


def _say(names: frozenset[str], as_json: bool) -> None:
    if as_json:
        emit_json({"paused": paused_value(names)})
    elif not names:
        click.echo("not paused")
    else:
        click.echo(f"paused: {'every queue' if '*' in names else ', '.join(sorted(names))}")


@main.command()
@json_option
@pass_ctx
def pause(c: Context, as_json: bool) -> None:
    """Workers everywhere stop claiming jobs (within about one poll_interval on other hosts).

    Running jobs finish; enqueue and drop-ins are still accepted. `resume` undoes it."""
    _say(c.spool.pause(), as_json)


@main.command()
@json_option
@pass_ctx
def resume(c: Context, as_json: bool) -> None:
    """Workers claim jobs again."""
    _say(c.spool.resume(), as_json)


_SAID = {
    "cancelled": "cancelled",
    "killed": "killed by its worker: cancelled",
    "requested": "running: its worker was asked to kill it and has not yet (another host?); it will when it next looks",
    "running": "running: left alone (--kill kills it)",
    "finished": "already {state}: not cancelled",
    "unknown": "no such job",
    "busy": "being taken by a worker at this moment: not cancelled; try again",
}


@main.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
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
        emit_json([{"id": r.job_id, "outcome": r.outcome.value, "state": r.state} for r in results])
    else:
        for r in results:
            line = f"{r.job_id}: {_SAID[r.outcome.value].format(state=r.state)}"
            click.echo(line if r.ok else f"Error: {line}", err=not r.ok)
    if not all(r.ok for r in results):
        sys.exit(1)


@main.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
@json_option
@pass_ctx
def requeue(c: Context, job_ids: tuple[str, ...], as_json: bool) -> None:
    """Run finished (done or dead) jobs again: pending, attempts reset, at the back of their
    priority. Their output log keeps what earlier runs wrote. Exit 1 if any is not finished."""
    check_ids(list(job_ids))
    report_each(c.spool.requeue(list(job_ids)), "pending again", as_json)
