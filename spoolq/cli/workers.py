"""`spoolq worker start|stop|list`: run workers here, stop them everywhere, list them."""

from __future__ import annotations

import os
import sys
import time

import click

from ..format.errors import StorageError
from ..format.job import iso
from ..format.layout import MAX_SLOTS
from ..system.liveness import alive, started_at
from .base import CliError, Context, Duration, Int, emit_rows, json_option, main, pass_ctx
from .queue_names import queues_option, warn_about_queues

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..spool import Spool


@main.group()
def worker() -> None:
    """Start, stop and list worker processes."""


@worker.command("start")
@click.option("--count", type=Int(1, 256), default=1, show_default=True, help="Worker processes.")
@click.option("--slots", type=Int(1, MAX_SLOTS), default=1, show_default=True,
              help="Jobs each worker process runs at once (many I/O-bound jobs: one process, many slots).")
@click.option("--detach", is_flag=True, help="Run in the background; return once the workers are running.")
@click.option("--burst", is_flag=True, help="Exit when no job is ready and no retry of a job it ran is left.")
@click.option("--allow-unsafe-fs", is_flag=True, envvar="SPOOLQ_ALLOW_UNSAFE_FS",
              help="Start even where the file system's caches make leases unsafe across hosts.")
@queues_option("Take jobs only from these queues (default: every queue).")
@click.option("-q", "--quiet", is_flag=True, help="No line per job claimed and finished (foreground only).")
@click.option("--log-format", type=click.Choice(("text", "json")), default="text", show_default=True,
              help="Log lines as text, or as one JSON object each.")
@pass_ctx
def worker_start(c: Context, count: int, slots: int, detach: bool, burst: bool, allow_unsafe_fs: bool,
                 queues: frozenset[str] | None, quiet: bool, log_format: str) -> None:
    """Run workers: in the foreground until Ctrl+C or SIGTERM (running jobs finish first),
    saying on stderr what each job did; --detach: in the background, logging to the spool's log/."""
    from ..pending import dealing
    from ..running import supervisor, log_lines

    if queues is not None and len(queues) > dealing.MAX_QUEUES:
        raise click.BadParameter(f"{len(queues)} queues; a worker takes at most {dealing.MAX_QUEUES}",
                                 param_hint="'--queue'")
    log = log_lines.LOGS[log_format]
    _make_room_for(slots)
    spool = c.create()
    spool.check_filesystem(allow_unsafe=allow_unsafe_fs)  # refused here, in one line, before any fork
    warn_about_queues(spool, queues or ())
    # When the user asked: a `worker stop` from then on stops these workers.
    since = spool.owners.since(started_at(os.getpid()) or time.time())
    if not detach:
        job_lines = None if quiet else log_lines.JobLines(log_format)
        sys.exit(supervisor.Supervisor(spool, count, burst=burst, since=since, allow_unsafe_fs=allow_unsafe_fs,
                                       queues=queues, log=log, job_lines=job_lines, slots=slots).run())
    _refuse_a_second_set(spool, queues)
    pid = supervisor.detach(spool, count, burst=burst, since=since, allow_unsafe_fs=allow_unsafe_fs, queues=queues,
                            log=log, slots=slots)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        mine = [w for w in spool.workers(role="worker") if w.extra.get("supervisor") == pid]
        if len(mine) >= count:
            click.echo(f"started {count} worker{'s' if count > 1 else ''} (supervisor pid {pid}; "
                       f"log in {spool.worker_log()})")
            return
        if not alive(pid):
            if burst:
                click.echo(f"supervisor pid {pid} already finished (burst)")
                return
            if spool.owners.stop_requested(since):
                click.echo(f"supervisor pid {pid} stopped at once: a worker stop came while it started")
                return
            raise CliError(f"the workers did not start; see {spool.worker_log()}")
        time.sleep(0.02)
    raise CliError(f"the workers did not register within 15s; see {spool.worker_log()}")


def _refuse_a_second_set(spool: Spool, queues: frozenset[str] | None) -> None:
    """A detached start beside workers of this host for the same queues is refused (exit 1)."""
    from ..running import supervisor

    # RACE: two starts at once each find none, and both start: this catches a start repeated (a
    # boot script, a cron @reboot), not a race; a second set of workers is harmless, only not asked for.
    running = supervisor.running_here(spool, queues)
    if running is None:
        return
    pid, supervised = running  # (its supervisor killed: its workers run on, none that ends replaced)
    whose = f" (supervisor pid {pid})" if supervised else \
        f", without their supervisor (it was pid {pid}, and is gone: a worker that ends is not replaced)"
    raise CliError(f"workers of this spool for {'queues ' + ','.join(sorted(queues)) if queues else 'every queue'} "
                   f"already run on this host{whose}; not starting a second set: "
                   "`spoolq worker stop` them first, or start more in the foreground")


def _make_room_for(slots: int) -> None:
    """Raise the open-files limit to what `slots` running jobs need, or refuse the option."""
    from ..running import slot_threads
    from ..system import open_files

    needed = slot_threads.open_files_needed(slots)
    hard = open_files.make_room(needed)
    if hard is None:
        return
    limit = f"this process may open at most {hard} (`ulimit -Hn`): raise it"
    if slots == 1:  # no option to blame, and no fewer slots to run: the limit is the cause
        raise CliError(f"cannot start a worker: it needs about {needed} open files; {limit}")
    raise click.BadParameter(f"{slots} slots: about {needed} open files are needed; {limit}, or run fewer slots "
                             "(and more --count)", param_hint="'--slots'")


@worker.command("stop")
@click.option("--wait", "wait_", is_flag=True, help="Block until every worker has exited.")
@click.option("--timeout", type=Duration(), help="With --wait: give up after this long (90, 10m; exit 124).")
@click.option("--now", is_flag=True, help="Kill the running jobs too (their attempts count).")
@pass_ctx
def worker_stop(c: Context, wait_: bool, timeout: float | None, now: bool) -> None:
    """Ask every worker of this spool, on every host, to finish its current job and exit."""
    if timeout is not None and not wait_:  # a script's `worker stop --timeout 60` went on at once
        raise click.UsageError("--timeout bounds --wait: give both (worker stop --wait --timeout S)")
    spool = c.spool
    before = spool.workers(role="worker")
    try:
        spool.request_stop(kill_jobs=now, at=started_at(os.getpid()))  # when the user asked
    except StorageError as e:  # a read-only spool: the request cannot be written, a signal still stops them
        raise CliError(f"{e}{_by_signal(before, now)}") from None
    if not before:
        click.echo("no workers running (a stop request was left for any that are starting)")
        return
    click.echo(f"stop requested for {len(before)} worker{'s' if len(before) != 1 else ''}")
    if not wait_:
        return
    deadline = None if timeout is None else time.monotonic() + timeout
    owners = {w.owner for w in before}
    while True:
        left = [w for w in spool.workers() if w.owner in owners]
        if not left:
            click.echo("all workers stopped")
            return
        if deadline is not None and time.monotonic() >= deadline:
            raise CliError(f"{len(left)} worker(s) still running after {timeout:g}s", 124)
        time.sleep(0.05)


def _by_signal(workers: list, now: bool) -> str:
    """How to stop this host's workers without writing into the spool: a signal to each
    supervisor, or to a worker whose supervisor is gone (never to the pid a dead one had)."""
    from ..running.supervisor import signalled_here

    pids = signalled_here(workers)
    if not pids:
        return ""
    thrice = " three times (the third kills their running jobs)" if now else ""
    return f"; stop this host's workers with a signal instead: kill -TERM {' '.join(map(str, pids))}{thrice}"


@worker.command("list")
@json_option
@pass_ctx
def worker_list(c: Context, as_json: bool) -> None:
    """Live workers of this spool, on every host."""
    workers = c.reading.workers(role="worker")
    rows = [{"pid": w.pid, "host": w.host, "job": w.job, "jobs": list(w.jobs), "slots": w.slots,
             "worker": w.owner, "started_at": w.started_at, "heartbeat": iso(w.heartbeat),
             "queues": w.extra.get("queues")} for w in workers]
    emit_rows(rows, as_json, empty="no workers",
              header=f"{'HOST':<20} {'PID':>7}  {'JOB':<20} {'STARTED':<24}  QUEUES",
              line=lambda r: f"{r['host']:<20} {r['pid']:>7}  {_jobs(r['jobs']):<20} {r['started_at']:<24}  "
                             f"{','.join(r['queues']) if r['queues'] else '(all)'}")


def _jobs(jobs: list[str]) -> str:
    """The JOB column: the job it runs; a worker of several slots: the first, and how many more."""
    if not jobs:
        return "-"
    return jobs[0] if len(jobs) == 1 else f"{jobs[0]} +{len(jobs) - 1}"
