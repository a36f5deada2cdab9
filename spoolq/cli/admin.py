"""The operator's commands: the dead-letter queue, settings, purge and fsck."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

import click

from ..format.states import State
from ..store.config import check_key, parse_value
from .complete import job_ids
from .base import CliError, Context, Duration, check_ids, emit_json, emit_pairs, id_width, json_option, main, one_line, pass_ctx, print_views, report_each, shown, shown_id, tries, warn_about_config, distinct
from .queue_names import of_queues, queues_option, queues_shown

if TYPE_CHECKING:
    from ..spool import Spool


@main.group()
def dlq() -> None:
    """Inspect and retry dead jobs."""


@dlq.command("list")
@queues_option("Only dead jobs of these queues (may be given again).")
@json_option
@pass_ctx
def dlq_list(c: Context, queues: frozenset[str] | None, as_json: bool) -> None:
    """Dead jobs, with why they died."""
    views = of_queues(c, c.reading.list_jobs(state=State.DEAD), queues)
    if as_json or not views:
        print_views(views, as_json, f"no dead jobs of {queues_shown(queues)}" if queues else "no jobs")
        return
    rows = [v.to_dict() for v in views]
    width = id_width(rows)
    # The error last: it is the long one, and a column after it would be pushed about.
    click.echo(f"{'ID':<{width}}  {'TRIES':>5}  {'COMMAND':<40}  LAST ERROR")
    for d in rows:
        click.echo(f"{shown_id(d):<{width}}  {tries(d):>5}  {one_line(d.get('command') or '(quarantined file)', 40):<40}  "
                   f"{one_line(d.get('last_error') or '-', 200)}")


@dlq.command("retry")
@click.argument("job_ids", metavar="ID...", nargs=-1, callback=distinct, shell_complete=job_ids)
@click.option("--all", "all_", is_flag=True, help="Retry every dead job.")
@json_option
@pass_ctx
def dlq_retry(c: Context, job_ids: tuple[str, ...], all_: bool, as_json: bool) -> None:
    """Make dead jobs pending again, with their attempts reset."""
    if bool(job_ids) == all_:
        raise click.UsageError("give job ids or --all (not both)")
    check_ids(job_ids)
    done = c.spool.retry_dead(None if all_ else list(job_ids))
    if as_json:  # as requeue --json says it: a job that moved meanwhile (another retry) is not retried
        retried = set(done)
        report_each({job_id: None if job_id in retried else f"job {job_id} moved meanwhile"
                     for job_id in (done if all_ else dict.fromkeys(job_ids))}, "pending again", as_json)
        return
    for job_id in done:
        click.echo(job_id)
    if all_ and not done:
        click.echo("no dead jobs to retry", err=True)


@main.group()
def config() -> None:
    """Show and change the spool's settings."""


@config.command("show")
@json_option
@pass_ctx
def config_show(c: Context, as_json: bool) -> None:
    """Every key with its value."""
    warn_about_config(c.reading.config)
    emit_pairs(c.reading.config.as_dict(), as_json, 17, json.dumps)


@config.command("get")
@click.argument("key")
@pass_ctx
def config_get(c: Context, key: str) -> None:
    """One key's value."""
    check_key(key)
    warn_about_config(c.reading.config)
    click.echo(json.dumps(c.reading.config.as_dict()[key]))


@config.command("set", context_settings={"ignore_unknown_options": True})  # VALUE may be -1
@click.argument("key")
@click.argument("value")
@pass_ctx
def config_set(c: Context, key: str, value: str) -> None:
    """Change one key (unknown keys and ill-typed values are refused)."""
    parsed = parse_value(key, value)
    c.create().set_config(key, parsed)
    click.echo(f"{key} = {json.dumps(parsed)}")
    if key == "metrics_textfile" and parsed:
        _warn_if_unwritable(parsed)


def _warn_if_unwritable(path: str) -> None:
    """The workers write the textfile as the spool's owner, the uid that sets it: one it cannot
    write was only said in the workers' log, every 15 s, without the path."""
    from ..running.metrics import textfile_unwritable

    why = textfile_unwritable(path)
    if why:
        click.echo(f"Warning: metrics_textfile: {why}: the workers cannot write the textfile until they can "
                   "(under systemd, the unit's ReadWritePaths= must name the directory too)", err=True)


@main.command()
@click.argument("job_ids", metavar="[ID]...", nargs=-1, callback=distinct, shell_complete=job_ids)
@click.option("--state", type=click.Choice((State.DONE.value, State.DEAD.value, State.PENDING.value)),
              help="Jobs of this state (default: done); pending: every job not started, scheduled too.")
@click.option("--older-than", type=Duration(), help="Only jobs finished this long ago (90, 10m, 2h, 7d).")
@json_option
@pass_ctx
def purge(c: Context, job_ids: tuple[str, ...], state: str | None, older_than: float | None, as_json: bool) -> None:
    """Delete jobs and their output, freeing their ids: the jobs named (finished, or not started),
    or every done (or --state dead, or --state pending) job, --older-than S seconds. Needs no free
    space: the way to clear a full disk. Exit 1 if a named job is running or waiting."""
    if job_ids:
        if state is not None or older_than is not None:
            raise click.UsageError("give job ids, or --state/--older-than, not both")
        check_ids(list(job_ids))
        report_each(c.spool.purge_ids(list(job_ids)), "purged", as_json)
        return
    state = state or State.DONE
    n = c.spool.purge(state, older_than=older_than or 0.0)
    kept, left = c.spool.finished.kept, c.spool.finished.left
    if as_json:
        emit_json({"purged": n, "state": state, "kept": kept, **({"left": left} if left else {})})
    else:
        click.echo(f"purged {n} {state} job{'s' if n != 1 else ''}"
                   + (f"; kept {kept} that other jobs still wait for" if kept else "")
                   + (f"; left {len(left)} directory another user filled (remove by hand): {', '.join(left)}"
                      if left else ""))


def _what_repair_does(problems: list, spool: Spool) -> str:
    """The summary's advice: --repair only where it would fix something, and by whom (root
    checking a service user's spool is refused --repair: it is the owner's to run)."""
    repairable = sum(1 for p in problems if p.repairable)
    if not repairable:
        return ("; --repair leaves it alone: it is" if len(problems) == 1 else "; --repair leaves them alone: each is") \
            + " its writer's or yours to fix"
    run = (f"run {spool.store.owners_command('fsck --repair')}" if spool.store.another_owner() is not None
           else "run with --repair")
    return f"; {run} to fix what is safe" + ("" if repairable == len(problems) else f" ({repairable} of them)")


@main.command()
@click.option("--repair", is_flag=True, help="Fix what can be fixed safely, and say what was done.")
@click.option("--stale-after", type=Duration(), default="1h", show_default=True,
              help="Temp and marker files older than this count as crash leftovers.")
@json_option
@pass_ctx
def fsck(c: Context, repair: bool, stale_after: float, as_json: bool) -> None:
    """Check every invariant of the spool's on-disk format (exit 0 clean, 1 problems found; with
    --repair, exit 0 once every problem found was repaired)."""
    from .. import fsck as checker

    spool = c.handle()  # fsck reports an unsafe or broken spool rather than refuse it
    if not repair:
        spool.store.read_as_owner()  # root may check a service user's spool; only its owner repairs it
    elif spool.store.another_owner() is not None:
        raise CliError(f"{spool.root} is another user's spool: only its owner repairs it; run "
                       f"{spool.store.owners_command()}")
    problems = checker.check(spool, repair=repair, stale_after=stale_after)
    fixed = sum(1 for p in problems if p.repaired)
    if as_json:
        emit_json({"spool": spool.root, "clean": not problems, "repaired": fixed,
                   "problems": [p.to_dict() for p in problems]})
    else:
        for p in problems:
            where = os.path.relpath(p.path, spool.root) if p.path.startswith(spool.root) else p.path
            click.echo(f"{p.kind}: {shown(where)}: {shown(p.detail)}")
            if p.repair:
                click.echo(f"    {'repaired' if p.repaired else 'not repaired'}: {shown(p.repair)}")
        if not problems:
            click.echo(f"{spool.root}: clean")
        else:
            click.echo(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} found"
                       + (f", {fixed} repaired" if repair else _what_repair_does(problems, spool))
                       + ("; the spool is clean now" if fixed == len(problems) else ""))
    if fixed < len(problems):
        sys.exit(1)
