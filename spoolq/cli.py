"""The spoolq command line: parsing, output (human and --json), exit codes (click's only home).

Exit status: 0 success; 1 the operation failed; 2 invalid input or usage (nothing written);
124 a --timeout ran out.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from typing import Any, Iterable

import click

from .errors import InvalidJob, JobExists, SpoolError, WaitTimeout
from .spool import JobView, Spool, waiting_state

STATE_CHOICES = ("pending", "scheduled", "processing", "done", "dead")


class CliError(click.ClickException):
    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def fail(e: SpoolError) -> CliError:
    return CliError(str(e), e.exit_code)


class Context:
    """What every command shares: the spool path, opened (and created) only when first needed."""

    def __init__(self, path: str):
        self.path = path
        self._spool: Spool | None = None

    @property
    def spool(self) -> Spool:
        if self._spool is None:
            try:
                self._spool = Spool(self.path)
            except SpoolError as e:
                raise fail(e) from None
        return self._spool


pass_ctx = click.make_pass_decorator(Context)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output: JSON.")


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--spool", "spool_dir", envvar="SPOOLQ_DIR", default="./spool", show_default=True,
              metavar="DIR", help="The spool directory (default: $SPOOLQ_DIR, else ./spool).")
@click.version_option(package_name="spoolq", prog_name="spoolq")
@click.pass_context
def main(ctx: click.Context, spool_dir: str) -> None:
    """spoolq: a background job queue that is nothing but a directory."""
    if not spool_dir.strip():
        raise click.BadParameter("must name a directory (an empty value would make the current "
                                 "directory a spool)", param_hint="--spool")
    ctx.obj = Context(spool_dir)


@main.command()
@pass_ctx
def init(c: Context) -> None:
    """Create the spool layout (every command also creates it on demand)."""
    click.echo(f"spool ready at {c.spool.root}")


# ---- enqueue ---------------------------------------------------------------------------------


def _read_source(path: str, what: str) -> str:
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except OSError as e:
        raise CliError(f"cannot read {what} {path!r}: {e.strerror}", 2) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CliError(f"{what} {path!r} is not UTF-8 (byte {e.start})", 2) from None


def _flag_fields(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


@main.command()
@click.argument("job", required=False)
@click.option("--cmd", help="The command to run (a /bin/sh -c string).")
@click.option("--id", "job_id", help="Job id: 1-128 of A-Z a-z 0-9 . _ - (default: generated).")
@click.option("--max-retries", type=click.IntRange(0, 1000), help="Retries after the first attempt.")
@click.option("--priority", type=int, help="Higher runs first (default 0).")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), help="Seconds before the job is killed.")
@click.option("--delay", type=click.FloatRange(0), help="Seconds to wait before the job may run.")
@click.option("--run-at", help="When the job may run: ISO 8601 or epoch seconds.")
@click.option("--file", "file_path", metavar="F", help="One JSON job object from a file ('-' = stdin).")
@click.option("--batch", metavar="F", help="JSON lines, one job per line ('-' = stdin); all or nothing.")
@json_option
@pass_ctx
def enqueue(c: Context, job: str | None, cmd: str | None, job_id: str | None, max_retries: int | None,
            priority: int | None, timeout: float | None, delay: float | None, run_at: str | None,
            file_path: str | None, batch: str | None, as_json: bool) -> None:
    """Add jobs. JOB is a JSON object when it starts with '{' or '[', else the command itself.

    \b
    spoolq enqueue 'echo hello'
    spoolq enqueue '{"command": "make -C /src", "max_retries": 5}'
    spoolq enqueue --cmd 'backup.sh' --priority 10 --delay 60
    spoolq enqueue --batch jobs.jsonl
    """
    forms = [name for name, value in (("JOB", job), ("--cmd", cmd), ("--file", file_path), ("--batch", batch))
             if value is not None]
    if len(forms) != 1:
        raise click.UsageError("give exactly one of JOB, --cmd, --file or --batch"
                               + (f" (got {', '.join(forms)})" if forms else ""))
    if batch is not None and job_id is not None:
        raise click.UsageError("--id cannot be used with --batch: each line names its own id")
    if run_at is not None and re.fullmatch(r"\s*\d+(\.\d*)?\s*", run_at):
        run_at = float(run_at)  # type: ignore[assignment]  # epoch seconds; a flag is always a string
    flags = _flag_fields({"id": job_id, "max_retries": max_retries, "priority": priority, "timeout": timeout,
                          "delay": delay, "run_at": run_at})
    where = (lambda n: f"line {n}: ") if batch is not None else (lambda n: "")
    try:
        specs = _read_specs(job, cmd, file_path, batch)
        spool = Spool(c.path, create=False)  # validate first: bad input writes nothing at all
        jobs, line_of = _make_jobs(spool, specs, flags, where)
        spool.init()
        try:
            jobs = _publish(spool, jobs)
        except JobExists as e:
            if batch is None or e.job_id not in line_of:
                raise
            raise CliError(f"{where(line_of[e.job_id])}{e}; nothing was enqueued", 1) from None
    except SpoolError as e:
        raise fail(e) from None
    now = time.time()
    if as_json:
        lines = [json.dumps(JobView(j.id, waiting_state(j, now), j, "").to_dict(), ensure_ascii=False)
                 for j in jobs]
    else:
        lines = [j.id for j in jobs]
    if lines:
        click.echo("\n".join(lines))  # one write: a 100,000-line batch should not pay per line


def _read_specs(job: str | None, cmd: str | None, file_path: str | None,
                batch: str | None) -> list[tuple[int, dict[str, Any]]]:
    """The job objects of whichever enqueue form was used, each with its input line number."""
    from . import job as job_mod

    if batch is not None:
        specs = []
        for n, line in enumerate(_read_source(batch, "batch").splitlines(), 1):
            if line.strip():
                try:
                    specs.append((n, job_mod.parse_json_object(line, "line")))
                except InvalidJob as e:
                    raise CliError(f"line {n}: {e}; nothing was enqueued", 2) from None
        return specs
    if file_path is not None:
        return [(1, job_mod.parse_json_object(_read_source(file_path, "file"), "file"))]
    if cmd is not None:
        return [(1, {"command": cmd})]
    assert job is not None
    if job.lstrip().startswith(("{", "[")):
        return [(1, job_mod.parse_json_object(job, "JOB"))]
    return [(1, {"command": job})]


def _make_jobs(spool: Spool, specs: list[tuple[int, dict[str, Any]]], flags: dict[str, Any],
               where: Any) -> tuple[list, dict[str, int]]:
    """Validate every spec (flags override, cwd defaults to ours) before anything is written;
    returns the jobs and the input line of each id."""
    jobs = []
    line_of: dict[str, int] = {}
    for n, spec in specs:
        spec = {"cwd": os.getcwd(), **spec, **flags}
        try:
            job = spool.make_job(spec)
        except InvalidJob as e:
            raise CliError(f"{where(n)}{e}; nothing was enqueued", 2) from None
        if job.id in line_of:
            raise CliError(f"{where(n)}id {job.id!r} already appears on line {line_of[job.id]}; "
                           "nothing was enqueued", 2)
        line_of[job.id] = n
        jobs.append(job)
    return jobs, line_of


def _publish(spool: Spool, jobs: list) -> list:
    if len(jobs) < 2000 or not sys.stderr.isatty():
        return spool.enqueue_many(jobs)
    with click.progressbar(length=len(jobs), label="writing jobs", file=sys.stderr) as bar:
        return spool.enqueue_many(jobs, progress=bar.update)


# ---- reading ---------------------------------------------------------------------------------


@main.command()
@json_option
@pass_ctx
def status(c: Context, as_json: bool) -> None:
    """Counts of jobs per state, and live workers."""
    counts = c.spool.counts().to_dict()
    if as_json:
        emit_json(counts)
        return
    for key, value in counts.items():
        click.echo(f"{key:<11} {value}")


@main.command("list")
@click.option("--state", type=click.Choice(STATE_CHOICES), help="Only jobs in this state.")
@click.option("--limit", type=click.IntRange(0), help="At most this many jobs.")
@json_option
@pass_ctx
def list_jobs(c: Context, state: str | None, limit: int | None, as_json: bool) -> None:
    """List jobs: pending in run order, then scheduled, processing, done and dead."""
    _print_views(c.spool.list(state=state, limit=limit), as_json)


def _print_views(views: Iterable[JobView], as_json: bool) -> None:
    views = list(views)
    if as_json:
        emit_json([v.to_dict() for v in views])
        return
    if not views:
        click.echo("no jobs")
        return
    click.echo(f"{'ID':<20} {'STATE':<10} {'TRIES':>5} {'PRIO':>5}  COMMAND / LAST ERROR")
    for v in views:
        d = v.to_dict()
        tries = f"{d['attempts']}/{d['max_retries'] + 1}" if d.get("max_retries") is not None else "-"
        text = d.get("command") or ""
        if v.state == "dead" and d.get("last_error"):
            text = f"{text}  [{d['last_error']}]" if text else f"[{d['last_error']}]"
        prio = d.get("priority")
        click.echo(f"{v.id:<20} {v.state:<10} {tries:>5} {'-' if prio is None else prio:>5}  "
                   f"{_one_line(text, 90)}")


def _check_ids(job_ids: Iterable[str]) -> None:
    """Refuse a malformed id (exit 2) before the spool is opened: bad input writes nothing."""
    from . import job as job_mod

    for job_id in job_ids:
        if not job_mod.valid_id(job_id[1:] if job_id.startswith("+") else job_id):  # '+': quarantined
            raise CliError(f"invalid job id {job_id!r}: use 1-128 characters of A-Z a-z 0-9 . _ -, "
                           "not starting with '.'", 2)


def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


@main.command()
@click.argument("job_id", metavar="ID")
@json_option
@pass_ctx
def show(c: Context, job_id: str, as_json: bool) -> None:
    """Everything about one job."""
    _check_ids([job_id])
    try:
        view = c.spool.find(job_id)
    except SpoolError as e:
        raise fail(e) from None
    d = view.to_dict()
    if as_json:
        emit_json(d)
        return
    for key, value in d.items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value, ensure_ascii=False)
        if isinstance(value, bool):
            value = json.dumps(value)
        click.echo(f"{key + ':':<13} {'-' if value is None else value}")
    if os.path.exists(c.spool.output_path(view.id)):
        click.echo(f"{'output:':<13} {c.spool.output_path(view.id)}")


@main.command()
@click.argument("job_id", metavar="ID")
@pass_ctx
def logs(c: Context, job_id: str) -> None:
    """The job's captured stdout and stderr, every attempt, each marked."""
    _check_ids([job_id])
    try:
        view = c.spool.find(job_id)
    except SpoolError as e:
        raise fail(e) from None
    try:
        with open(c.spool.output_path(view.id), "rb") as f:
            while chunk := f.read(65536):
                sys.stdout.buffer.write(chunk)
    except FileNotFoundError:
        click.echo(f"(no output yet: job {view.id} is {view.state})", err=True)


@main.command()
@click.argument("job_ids", metavar="[ID]...", nargs=-1)
@click.option("--timeout", type=click.FloatRange(0), help="Give up after S seconds (exit 124).")
@pass_ctx
def wait(c: Context, job_ids: tuple[str, ...], timeout: float | None) -> None:
    """Block until the jobs are done or dead (exit 1 if any is dead); with no ids, until nothing is
    pending, scheduled or processing."""
    _check_ids(job_ids)
    spool = c.spool
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = 0.01
    try:
        while True:
            if job_ids:
                states = [spool.find(j).state for j in job_ids]
                if all(s in ("done", "dead") for s in states):
                    if "dead" in states:
                        dead = [j for j, s in zip(job_ids, states) if s == "dead"]
                        raise CliError(f"dead: {' '.join(dead)}", 1)
                    return
            else:
                n = spool.counts()
                if n.pending + n.scheduled + n.processing == 0:
                    return
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(_unfinished(spool, job_ids, timeout))
            time.sleep(pause if deadline is None else max(0.0, min(pause, deadline - time.monotonic())))
            pause = min(pause * 1.5, 0.2)
    except SpoolError as e:
        raise fail(e) from None


def _unfinished(spool: Spool, job_ids: tuple[str, ...], timeout: float | None) -> str:
    """What a timed-out wait was still waiting for, and whether anyone is working on it."""
    if job_ids:
        left = [j for j in job_ids if spool.find(j).state not in ("done", "dead")]
        what = f"{len(left)} job{'s' if len(left) != 1 else ''} not finished: {' '.join(left[:10])}"
        what += " …" if len(left) > 10 else ""
    else:
        n = spool.counts()
        what = f"{n.pending} pending, {n.scheduled} scheduled, {n.processing} processing"
    workers = len(spool.workers(role="worker"))
    hint = "no worker is running" if not workers else f"{workers} worker{'s' if workers != 1 else ''} running"
    return f"timed out after {timeout:g}s; {what} ({hint})"


# ---- workers ---------------------------------------------------------------------------------


@main.group()
def worker() -> None:
    """Start, stop and list worker processes."""


@worker.command("start")
@click.option("--count", type=click.IntRange(1, 256), default=1, show_default=True, help="Worker processes.")
@click.option("--detach", is_flag=True, help="Run in the background; return once the workers are running.")
@click.option("--burst", is_flag=True, help="Exit when no job is ready.")
@pass_ctx
def worker_start(c: Context, count: int, detach: bool, burst: bool) -> None:
    """Run workers: in the foreground until Ctrl+C or SIGTERM (running jobs finish first)."""
    from . import supervisor

    spool = c.spool
    if not detach:
        sys.exit(supervisor.Supervisor(spool, count, burst=burst).run())
    pid = supervisor.detach(spool, count, burst=burst)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        mine = [w for w in spool.workers(role="worker") if w.extra.get("supervisor") == pid]
        if len(mine) >= count:
            click.echo(f"started {count} worker{'s' if count > 1 else ''} (supervisor pid {pid}; "
                       f"log in {spool.worker_log()})")
            return
        if not _pid_alive(pid):
            if burst:
                click.echo(f"supervisor pid {pid} already finished (burst)")
                return
            raise CliError(f"the workers did not start; see {spool.worker_log()}")
        time.sleep(0.02)
    raise CliError(f"the workers did not register within 15s; see {spool.worker_log()}")


def _pid_alive(pid: int) -> bool:
    from .liveness import alive

    return alive(pid)


@worker.command("stop")
@click.option("--wait", "wait_", is_flag=True, help="Block until every worker has exited.")
@click.option("--timeout", type=click.FloatRange(0), help="With --wait: give up after S seconds (exit 124).")
@pass_ctx
def worker_stop(c: Context, wait_: bool, timeout: float | None) -> None:
    """Ask every worker of this spool, on every host, to finish its current job and exit."""
    spool = c.spool
    before = spool.workers(role="worker")
    spool.request_stop()
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


@worker.command("list")
@json_option
@pass_ctx
def worker_list(c: Context, as_json: bool) -> None:
    """Live workers of this spool, on every host."""
    from .job import iso

    workers = c.spool.workers(role="worker")
    rows = [{"pid": w.pid, "host": w.host, "job": w.job, "worker": w.owner, "started_at": w.started_at,
             "heartbeat": iso(w.heartbeat)} for w in workers]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no workers")
        return
    click.echo(f"{'HOST':<20} {'PID':>7}  {'JOB':<20} STARTED")
    for r in rows:
        click.echo(f"{r['host']:<20} {r['pid']:>7}  {r['job'] or '-':<20} {r['started_at']}")


# ---- dead-letter queue -----------------------------------------------------------------------


@main.group()
def dlq() -> None:
    """Inspect and retry dead jobs."""


@dlq.command("list")
@json_option
@pass_ctx
def dlq_list(c: Context, as_json: bool) -> None:
    """Dead jobs, with why they died."""
    views = c.spool.list(state="dead")
    if as_json or not views:
        _print_views(views, as_json)
        return
    click.echo(f"{'ID':<20} {'TRIES':>5}  {'LAST ERROR':<48} COMMAND")
    for v in views:
        d = v.to_dict()
        tries = f"{d['attempts']}/{d['max_retries'] + 1}" if d.get("max_retries") is not None else "-"
        click.echo(f"{v.id:<20} {tries:>5}  {_one_line(d.get('last_error') or '-', 48):<48} "
                   f"{_one_line(d.get('command') or '(quarantined file)', 60)}")


@dlq.command("retry")
@click.argument("job_ids", metavar="ID...", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Retry every dead job.")
@pass_ctx
def dlq_retry(c: Context, job_ids: tuple[str, ...], all_: bool) -> None:
    """Make dead jobs pending again, with their attempts reset."""
    if bool(job_ids) == all_:
        raise click.UsageError("give job ids or --all (not both)")
    _check_ids(job_ids)
    try:
        done = c.spool.retry_dead(None if all_ else list(job_ids))
    except SpoolError as e:
        raise fail(e) from None
    for job_id in done:
        click.echo(job_id)
    if all_ and not done:
        click.echo("no dead jobs to retry", err=True)


# ---- config ----------------------------------------------------------------------------------


@main.group()
def config() -> None:
    """Show and change the spool's settings."""


@config.command("show")
@json_option
@pass_ctx
def config_show(c: Context, as_json: bool) -> None:
    """Every key with its value."""
    values = c.spool.config.as_dict()
    if as_json:
        emit_json(values)
        return
    for key, value in values.items():
        click.echo(f"{key:<17} {json.dumps(value)}")


@config.command("get")
@click.argument("key")
@pass_ctx
def config_get(c: Context, key: str) -> None:
    """One key's value."""
    from . import config as config_mod

    try:
        config_mod.check_key(key)
    except SpoolError as e:
        raise fail(e) from None
    click.echo(json.dumps(c.spool.config.as_dict()[key]))


@config.command("set", context_settings={"ignore_unknown_options": True})  # VALUE may be -1
@click.argument("key")
@click.argument("value")
@pass_ctx
def config_set(c: Context, key: str, value: str) -> None:
    """Change one key (unknown keys and ill-typed values are refused)."""
    from . import config as config_mod

    try:
        parsed = config_mod.parse_value(key, value)
        c.spool.set_config(key, parsed)
    except SpoolError as e:
        raise fail(e) from None
    click.echo(f"{key} = {json.dumps(parsed)}")


# ---- maintenance -----------------------------------------------------------------------------


@main.command()
@click.option("--state", type=click.Choice(("done", "dead")), default="done", show_default=True)
@click.option("--older-than", type=click.FloatRange(0), default=0, help="Only jobs finished S seconds ago.")
@pass_ctx
def purge(c: Context, state: str, older_than: float) -> None:
    """Delete finished jobs and their output, freeing their ids."""
    try:
        n = c.spool.purge(state, older_than=older_than)
    except SpoolError as e:
        raise fail(e) from None
    click.echo(f"purged {n} {state} job{'s' if n != 1 else ''}")


@main.command()
@click.option("--repair", is_flag=True, help="Fix what can be fixed safely, and say what was done.")
@click.option("--stale-after", type=click.FloatRange(0), default=3600, show_default=True, metavar="S",
              help="Temp, lock and marker files older than S seconds count as crash leftovers.")
@json_option
@pass_ctx
def fsck(c: Context, repair: bool, stale_after: float, as_json: bool) -> None:
    """Check every invariant of the spool's on-disk format (exit 0 clean, 1 problems found)."""
    from . import fsck as fsck_mod

    try:
        spool = Spool(c.path)
    except SpoolError:  # e.g. an unreadable config.json: fsck reports it rather than stop there
        spool = Spool(c.path, create=False)
    try:
        problems = fsck_mod.check(spool, repair=repair, stale_after=stale_after)
    except SpoolError as e:
        raise fail(e) from None
    fixed = sum(1 for p in problems if p.repaired)
    if as_json:
        emit_json({"spool": spool.root, "clean": not problems, "repaired": fixed,
                   "problems": [p.to_dict() for p in problems]})
    else:
        for p in problems:
            where = os.path.relpath(p.path, spool.root) if p.path.startswith(spool.root) else p.path
            click.echo(f"{p.kind}: {where!r}: {p.detail}" if "\n" in where else f"{p.kind}: {where}: {p.detail}")
            if p.repair:
                click.echo(f"    {'repaired' if p.repaired else 'not repaired'}: {p.repair}")
        if not problems:
            click.echo(f"{spool.root}: clean")
        else:
            click.echo(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} found"
                       + (f", {fixed} repaired" if repair else "; run with --repair to fix what is safe"))
    if problems:
        sys.exit(1)


def run() -> None:
    """Console entry point: never a traceback for something a user can cause."""
    try:
        # Not standalone: click would turn Ctrl+C into "Aborted!" and exit 1, which `wait`
        # uses for "a job is dead"; the errors are shown here instead, the same way click would.
        code = main.main(prog_name="spoolq", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("Error: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except OSError as e:  # a full disk, a read-only or vanished spool: say what, not where in the code
        from .fsio import is_disk_full

        cause = "the file system is full" if is_disk_full(e) else e.strerror or "I/O error"
        click.echo(f"Error: {cause}" + (f": {e.filename}" if e.filename else ""), err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
