"""The reading commands: status, list, show, logs and wait."""

from __future__ import annotations

import json
import os
import sys
import time

import click

from ..format.states import FINISHED, STATES, State
from ..store import output
from ..reading import waits
from ..format.errors import WaitTimeout
from ..spool import Spool
from .live import ProgressBar, watch_status
from .complete import job_ids
from .base import CliError, Context, Duration, Int, check_ids, emit_json, emit_pairs, json_option, main, pass_ctx, print_views, shown, distinct
from .queue_names import of_queues, paused_text, paused_value, queues_option, queues_shown


@main.command()
@click.option("--watch", is_flag=True, help="Redraw counts, rates and running jobs until Ctrl+C.")
@click.option("--interval", type=Duration(0.1, 3600), default="2s", show_default=True,
              help="With --watch: the time between redraws.")
@json_option
@pass_ctx
def status(c: Context, watch: bool, interval: float, as_json: bool) -> None:
    """Counts of jobs per state, live workers, and whether the spool is paused."""
    if watch:
        if as_json:
            raise click.UsageError("--watch draws for a person; use --json without it, in a loop")
        watch_status(c.reading, interval)
        return
    paused = c.reading.paused()
    counts = c.reading.counts()
    values = {**counts.to_dict(), "paused": paused_value(paused)}
    strays = c.reading.strays()
    if strays:  # only then: a spool without any reads as it always did
        values["never_picked_up"] = len(strays)
    orphans = c.reading.owners.held_by_gone() if counts.processing else []
    if orphans and as_json:  # (in text a line on stderr says it, below: the counts keep their lines)
        values["held_by_gone_workers"] = len(orphans)
    emit_pairs(values, as_json, max(map(len, values)) + 1, lambda v: paused_text(paused) if isinstance(v, (bool, list)) else str(v))
    if orphans and not as_json:
        more = f" and {len(orphans) - 5} more" if len(orphans) > 5 else ""
        click.echo(f"held by workers that are gone (killed, or a reboot): {', '.join(map(shown, orphans[:5]))}{more}; "
                   "the next worker to start takes them back (`spoolq fsck` names their workers)", err=True)
    if strays and not as_json:
        named = ", ".join(shown(os.path.relpath(s.path, c.reading.root)) for s in strays[:3])
        more = f" and {len(strays) - 3} more" if len(strays) > 3 else ""
        click.echo(f"never picked up: {named}{more} (`spoolq fsck` says why)", err=True)


@main.command("list")
@click.option("--state", type=click.Choice(STATES), multiple=True, help="Only jobs in this state (repeat it for several).")
@queues_option("Only jobs of these queues (may be given again).")
@click.option("--limit", type=Int(0), help="At most this many jobs.")
@json_option
@pass_ctx
def list_jobs(c: Context, state: tuple[str, ...], queues: frozenset[str] | None, limit: int | None,
              as_json: bool) -> None:
    """List jobs: pending in run order, then scheduled, waiting, processing, done and dead."""
    states = [s for s in STATES if s in state]  # in the listing's own order, whatever the options' order
    empty = "no jobs shown (--limit 0)" if limit == 0 else f"no {' or '.join(states)} jobs" if states else "no jobs"
    views = [v for s in states or [None] for v in c.reading.list_jobs(state=s, limit=None if queues else limit)]
    print_views(of_queues(c, views, queues, limit), as_json,
                empty + (f" of {queues_shown(queues)}" if queues and limit != 0 else ""))


SHOW_OUTPUT_BYTES = 1024 * 1024  # `show --json` gives the log's last MiB (`logs` gives all of it)


@main.command()
@click.argument("job_id", metavar="ID", shell_complete=job_ids)
@json_option
@pass_ctx
def show(c: Context, job_id: str, as_json: bool) -> None:
    """Everything about one job."""
    check_ids([job_id])
    view = c.reading.find(job_id)
    d = view.to_dict()
    if as_json:
        log = output.read_tail(c.reading.output_path(view.id), SHOW_OUTPUT_BYTES,
                               owner=c.reading.store.uid)
        d["output"], d["output_cut"] = log if log is not None else (None, False)
        emit_json(d)
        return
    for key, value in d.items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value, ensure_ascii=False)
        if isinstance(value, bool):
            value = json.dumps(value)
        click.echo(f"{key + ':':<13} {'-' if value is None else shown(str(value))}")
    if os.path.exists(c.reading.output_path(view.id)):
        click.echo(f"{'output:':<13} {c.reading.output_path(view.id)}")
    gone = c.reading.owners.why_gone(view.owner) if view.state == State.PROCESSING and view.owner else None
    if gone:  # nothing runs it: it waits to be taken back
        click.echo(f"Note: its worker {shown(view.owner or '')} is gone ({gone}): the next worker to start, or "
                   "`spoolq fsck --repair`, takes the job back", err=True)


@main.command()
@click.argument("job_id", metavar="ID", shell_complete=job_ids)
@click.option("-f", "--follow", is_flag=True,
              help="Print output as it is written until the job is finished; exit as `wait` would.")
@pass_ctx
def logs(c: Context, job_id: str, follow: bool) -> None:
    """The job's captured stdout and stderr, every attempt, each marked."""
    check_ids([job_id])
    view = c.reading.find(job_id)
    if follow:
        _follow(c.reading, view.id)
        return
    if _copy_output(c.reading, view.id, 0) is None:
        click.echo(_no_log(view.id, view.state, view.last_attempt.output_bytes), err=True)


def _no_log(job_id: str, state: str, wrote: int | None) -> str:
    """What `logs` says of a job without a log. A done one (store/output.py): its first attempt
    succeeded at once and wrote nothing, or its log could not be made (the attempts log counts
    what it wrote)."""
    if state != State.DONE:
        return f"(no output{'' if state in FINISHED else ' yet'}: job {job_id} is {state})"
    if wrote:
        return f"(no output: job {job_id} is done; the {wrote} bytes it wrote could not be kept: the worker's log says why)"
    return f"(no output: job {job_id} is done; {'it wrote nothing' if wrote == 0 else 'it left no log'})"


def _follow(spool: Spool, job_id: str) -> None:
    """Print the log as it grows, through retries, until the job is done (exit 0) or dead (1);
    saying on stderr, as `wait` does, when nothing will run it."""
    offset = 0
    stalled = Stalled(spool, ProgressBar(False))
    for _ in waits.looks(None):
        state = spool.find(job_id).state  # looked at first: a job seen finished has all its output written
        offset = _copy_output(spool, job_id, offset) or offset
        if state == State.DEAD:
            raise CliError(f"dead: {job_id}", 1)
        if state == State.DONE:
            return
        stalled.check(1, [job_id], state == State.PROCESSING)


def _copy_output(spool: Spool, job_id: str, offset: int) -> int | None:
    """Copy the log from `offset` to stdout; the offset reached, or None if there is no log."""
    f = output.open_log(spool.output_path(job_id), owner=spool.store.uid)  # never through a symlink, nor a fifo
    if f is None:
        return None
    with f:
        if os.fstat(f.fileno()).st_size < offset:
            offset = 0  # purged and begun again
        f.seek(offset)
        while chunk := f.read(65536):
            sys.stdout.buffer.write(chunk)
            offset += len(chunk)
        sys.stdout.flush()
    return offset


@main.command()
@click.argument("job_ids", metavar="[ID]...", nargs=-1, callback=distinct, shell_complete=job_ids)
@click.option("--timeout", type=Duration(), help="Give up after this long (90, 10m, 2h; exit 124).")
@click.option("--progress/--no-progress", default=None,
              help="A progress bar on stderr (default: when stderr is a terminal; never on a pipe).")
@pass_ctx
def wait(c: Context, job_ids: tuple[str, ...], timeout: float | None, progress: bool | None) -> None:
    """Block until the jobs are done or dead (exit 1 if any is dead); with no ids, until nothing is
    pending, scheduled, waiting or processing (exit 1 if a job went dead meanwhile)."""
    check_ids(job_ids)
    spool = c.reading
    deadline = None if timeout is None else time.monotonic() + timeout
    bar = ProgressBar(progress)
    stalled = Stalled(spool, bar)
    # RACE: a worker may finish a job dead while dead/ is listed (a large dead/ takes a while):
    # listed before the first count, such a job is reported (it went dead while this wait ran),
    # never counted unfinished at the start and then taken for one dead before it began.
    dead_before = None if job_ids else _dead_ids(spool)
    start = spool.counts()
    try:
        for _ in waits.looks(deadline):
            if job_ids:
                states = [spool.find(j).state for j in job_ids]
                finished, total = sum(s in FINISHED for s in states), len(job_ids)
                left: list[str] | None = [j for j, s in zip(job_ids, states) if s not in FINISHED]
                running = State.PROCESSING in states
            else:
                n = spool.counts()
                finished = max(0, n.done + n.dead - start.done - start.dead)
                total = finished + n.pending + n.scheduled + n.waiting + n.processing
                left, running = None, n.processing > 0
            bar.update(finished, total, force=finished == total)
            if finished == total:
                if job_ids:  # each of the ids given, as a script that gave them reads them back
                    dead = [j for j, s in zip(job_ids, states) if s == State.DEAD]
                else:  # every job that went dead while it waited (one dead before is not its failure)
                    dead = sorted(_dead_ids(spool) - (dead_before or set()))
                    dead = dead[:10] + [f"… ({len(dead)} jobs)"] if len(dead) > 10 else dead
                if dead:
                    raise CliError(f"dead: {' '.join(dead)}", 1)
                return
            stalled.check(total - finished, left, running)
        raise WaitTimeout(_unfinished(spool, job_ids, timeout))
    finally:
        bar.close()


def _dead_ids(spool: Spool) -> set[str]:
    """The ids in dead/ now, from its listing (quarantined files too: a drop-in that can never run)."""
    return waits.dead_ids(spool.layout)


class Stalled:
    """Says on stderr, once per cause, when nothing can finish what `wait` waits for: no live
    worker, or every job's queue paused. It keeps waiting (a worker may yet start: `--timeout`
    bounds it); the cause must have held for GRACE seconds (workers starting in the background)."""

    GRACE = 2.0
    EVERY = 1.0  # seconds between looks at the registrations and the pause file

    def __init__(self, spool: Spool, bar: ProgressBar):
        self.spool, self.bar = spool, bar
        self.looked = 0.0
        self.since: tuple[str | None, float] = (None, time.monotonic())
        self.said: str | None = None

    def check(self, left: int, unfinished: list[str] | None, running: bool) -> None:
        now = time.monotonic()
        if now - self.looked < self.EVERY:
            return
        self.looked = now
        cause = self.cause(unfinished, running)
        if cause != self.since[0]:
            self.since = (cause, now)
        if now - self.since[1] < self.GRACE:
            return
        if cause is not None and cause != self.said:
            self.bar.note(f"{left} job{'s' if left != 1 else ''} not finished, and nothing will run "
                          f"{'them' if left != 1 else 'it'}: {cause}; still waiting")
        self.said = cause

    def cause(self, unfinished: list[str] | None, running: bool) -> str | None:
        if not self.spool.workers(role="worker"):
            return "no worker is running (start one: spoolq worker start)"
        paused = self.spool.paused()
        if running or not paused:
            return None  # a running job finishes, paused or not
        if "*" in paused:
            return "the spool is paused (spoolq resume)"
        if unfinished:
            queues = {view.job.queue for view in map(self.spool.find, unfinished) if view.job is not None}
            if queues and queues <= paused:
                return f"queue {', '.join(sorted(queues))} paused (spoolq resume --queue Q)"
        return None


def _unfinished(spool: Spool, job_ids: tuple[str, ...], timeout: float | None) -> str:
    """What a timed-out wait was still waiting for, and whether anyone is working on it."""
    if job_ids:
        left = [j for j in job_ids if spool.find(j).state not in FINISHED]
        what = f"{len(left)} job{'s' if len(left) != 1 else ''} not finished: {' '.join(left[:10])}"
        what += " …" if len(left) > 10 else ""
    else:
        n = spool.counts()
        what = f"{n.pending} pending, {n.scheduled} scheduled, {n.waiting} waiting, {n.processing} processing"
    workers = len(spool.workers(role="worker"))
    hint = "no worker is running" if not workers else f"{workers} worker{'s' if workers != 1 else ''} running"
    return f"timed out after {timeout:g}s; {what} ({hint})"
