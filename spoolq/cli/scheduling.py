"""`spoolq schedule add|list|show|rm|pause|resume`: periodic jobs, fired by the running workers."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from ..format.job import MAX_RETRIES_LIMIT, parse_json_object
from ..running.cron import expression, host_zone
from ..running.schedules import CATCH_UP, OVERLAP, Schedule, Schedules, check_name, ignored_by
from .complete import queue_names, schedule_names
from .queue_names import warn_unless_taken
from .base import Context, Duration, Int, emit_json, emit_rows, json_option, main, pass_ctx


@main.group()
def schedule() -> None:
    """Periodic jobs: a cron expression and a job, fired once per slot across all hosts."""


@schedule.command("add")
@click.argument("name")
@click.argument("cron")
@click.argument("job", nargs=-1, metavar="[JOB]")  # more than one: an unquoted CRON, said so below
@click.option("--cmd", help="The command to run (else JOB, a JSON object).")
@click.option("--tz", help="The time zone the expression is read in.  [default: UTC]")
@click.option("--catch-up", type=click.Choice(CATCH_UP), default="last", show_default=True,
              help="A slot missed while no worker ran: fire it once when one starts, or skip it.")
@click.option("--overlap", type=click.Choice(OVERLAP), default="allow", show_default=True,
              help="A slot due while the last slot's job is unfinished: fire it (as cron), or hold it until "
                   "that job ends.")
@click.option("--max-retries", type=Int(0, MAX_RETRIES_LIMIT), help="Retries after the first attempt.")
@click.option("--priority", type=Int(), help="Higher runs first (default 0).")
@click.option("--timeout", type=Duration(low_open=True), help="How long before the job is killed (90, 10m, 2h).")
@click.option("--queue", help="The queue its jobs belong to.", shell_complete=queue_names)
@click.option("--shell", is_flag=True, default=None, help="Always run the command with /bin/sh -c.")
@click.option("--replace", is_flag=True, help="Replace a schedule of that name.")
@json_option
@pass_ctx
def schedule_add(c: Context, name: str, cron: str, job: tuple[str, ...], cmd: str | None, catch_up: str, overlap: str,
                 max_retries: int | None, priority: int | None, timeout: float | None, queue: str | None,
                 shell: bool | None, replace: bool, as_json: bool, tz: str | None = None) -> None:
    """Add schedule NAME: CRON is five fields (minute hour day-of-month month day-of-week) or
    @hourly, @daily, @weekly, @monthly, @yearly. Each slot's job has the id NAME.YYYYMMDDTHHMMZ.

    \b
    spoolq schedule add nightly-backup '15 2 * * *' --cmd /usr/local/bin/backup.sh
    spoolq schedule add report @hourly '{"command": "make report", "queue": "reports"}'
    """
    if job and len(cron.split()) == 1 and not cron.startswith("@"):
        raise click.UsageError("CRON is one argument: quote it, as in '15 2 * * *' (unquoted, the shell splits "
                               "it into words and expands each *)")
    if len(job) > 1 or bool(job) == (cmd is not None):
        raise click.UsageError("give exactly one of JOB (a JSON object) or --cmd")
    template: dict[str, Any] = {"command": cmd} if cmd is not None else _object(name, cron, job[0])
    flags = {"max_retries": max_retries, "priority": priority, "timeout": timeout, "queue": queue, "shell": shell}
    template.update({k: v for k, v in flags.items() if v is not None})
    check_name(name)
    expression(cron)  # exit 2 naming the field, before anything is written
    now = time.time()
    new = Schedule(name, cron, template, tz=tz or "UTC", catch_up=catch_up, overlap=overlap,
                   created_at=now, active_from=now).check()
    spool = c.handle()
    job = spool.make_job({**template, "id": f"{name}.x"})  # the template must make a job: exit 2 if not
    c.create()
    schedules = Schedules(spool)
    schedules.add(new, replace=replace)
    running = spool.workers(role="worker")  # read once, for every word said of them below
    warn_unless_taken(running, job.queue)
    _say_older_workers(ignored_by(new, running))
    if tz is None:
        _say_utc(host_zone())
    _print([new], spool_schedules=schedules, as_json=as_json, one=True, running=running)


def _say_older_workers(older: list[Any]) -> None:
    """Workers of an older spoolq (a host not upgraded yet) fire every slot, --overlap or not."""
    if older:
        hosts = ", ".join(sorted({w.host for w in older}))
        click.echo(f"Warning: {len(older)} running worker(s) on {hosts} predate --overlap and fire every slot of "
                   "this schedule, the last one's job unfinished or not: upgrade those hosts first", err=True)


def _say_utc(local: str | None) -> None:
    """Cron reads an expression in the host's zone, spoolq in --tz's (UTC): said when they differ."""
    if local is not None:
        zone_is = f"this host's zone ({local})" if local else "this host's zone, which is not UTC"
        click.echo(f"Note: CRON is read in UTC, where cron reads it in {zone_is}: to match cron, add it again "
                   f"with --tz {local or 'and its IANA name'} --replace", err=True)


def _object(name: str, cron: str, text: str) -> dict[str, Any]:
    """JOB's object (InvalidJob: exit 2, saying why); a command given as JOB, as `enqueue` takes
    one, is told that it goes in --cmd here."""
    if not text.lstrip().startswith(("{", "[", "\ufeff")):
        import shlex

        example = shlex.join(["spoolq", "schedule", "add", name, cron, "--cmd", text])
        raise click.UsageError("JOB is a JSON object; a command goes in --cmd, as in "
                               + (example if len(example) <= 120 and example.isprintable() else "--cmd 'backup.sh /home'"))
    return parse_json_object(text)


@schedule.command("list")
@json_option
@pass_ctx
def schedule_list(c: Context, as_json: bool) -> None:
    """Every schedule, with its next and last fire times and the id of its last job."""
    schedules = Schedules(c.reading)
    _print(schedules.all(), spool_schedules=schedules, as_json=as_json)


@schedule.command("show")
@click.argument("name", shell_complete=schedule_names)
@json_option
@pass_ctx
def schedule_show(c: Context, name: str, as_json: bool) -> None:
    """One schedule: its expression, zone, catch-up, job template, next and last slots."""
    schedules = Schedules(c.reading)
    _print([schedules.get(check_name(name))], spool_schedules=schedules, as_json=as_json, one=True)


@schedule.command("fire")
@click.argument("name", shell_complete=schedule_names)
@json_option
@pass_ctx
def schedule_fire(c: Context, name: str, as_json: bool) -> None:
    """Enqueue its job now, as this minute's slot (at most one a minute); prints the job's id.

    \b
    spoolq schedule fire nightly-backup      # as systemctl start does a timer's service
    """
    fired = Schedules(c.spool).fire_now(check_name(name), time.time())
    if not fired.created:
        click.echo(f"schedule {name} has fired this minute already (job {fired.job_id}): nothing more is made",
                   err=True)
    if as_json:
        emit_json({"id": fired.job_id, "created": fired.created})
    else:
        click.echo(fired.job_id)


@schedule.command("rm")
@click.argument("name", shell_complete=schedule_names)
@pass_ctx
def schedule_rm(c: Context, name: str) -> None:
    """Remove a schedule (the jobs it fired stay)."""
    Schedules(c.spool).remove(check_name(name))
    click.echo(f"removed schedule {name}")


@schedule.command("pause")
@click.argument("name", shell_complete=schedule_names)
@pass_ctx
def schedule_pause(c: Context, name: str) -> None:
    """Fire no slot of it until it is resumed (slots passed meanwhile are not fired)."""
    _set_paused(c, name, True)


@schedule.command("resume")
@click.argument("name", shell_complete=schedule_names)
@pass_ctx
def schedule_resume(c: Context, name: str) -> None:
    """Fire its slots again, from the next one."""
    _set_paused(c, name, False)


def _set_paused(c: Context, name: str, paused: bool) -> None:
    Schedules(c.spool).set_paused(check_name(name), paused, now=time.time())
    click.echo(f"{'paused' if paused else 'resumed'} schedule {name}")


def _print(found: list[Schedule], *, spool_schedules: Schedules, as_json: bool, one: bool = False,
           running: list[Any] | None = None) -> None:
    """The schedules as a table (or one as pairs), or JSON; `running`: the live workers, if read."""
    now = time.time()
    working = bool(spool_schedules.spool.workers(role="worker") if running is None else running)
    rows = [spool_schedules.row(s, now, working=working) for s in found]
    if found and not working and not as_json:  # --json says it in each row: "fires": false
        click.echo("Note: no worker is running, and only workers fire schedules: nothing fires until one "
                   "starts (spoolq worker start)", err=True)
    if one and as_json:
        emit_json(rows[0])
        return
    if one:
        for key, value in rows[0].items():
            shown = json.dumps(value) if isinstance(value, (bool, dict)) else value
            click.echo(f"{key + ':':<11} {'-' if value is None else shown}")
        return
    titles = ("NAME", "CRON", "TZ", "NEXT", "LAST JOB", "LAST STATE", "PAUSED")
    widths = [max(map(len, column)) for column in zip(titles, *map(_cells, rows))]  # a long name keeps its line in line

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(f"{cell:<{width}}" for cell, width in zip(cells, widths)).rstrip()

    emit_rows(rows, as_json, empty="no schedules", header=line(titles), line=lambda r: line(_cells(r)))


def _cells(row: dict[str, Any]) -> tuple[str, ...]:
    return (row["name"], row["cron"], row["tz"], _next(row), row["last_job"] or "-", row["last_state"] or "-",
            "yes" if row["paused"] else "no")


def _next(row: dict[str, Any]) -> str:
    if row["next"] is None:
        return "-"
    return row["next"] if row["fires"] else f"({row['next']})"  # due, but no worker to fire it
