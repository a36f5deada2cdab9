"""`spoolq enqueue`: read job objects from whichever form was used, validate all of them, then
publish them all or none."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from typing import Any

import click

from ..errors import InvalidJob, JobExists
from ..job import parse_json_object
from ..spool import Spool
from ..views import JobView, waiting_state
from .base import CliError, Context, json_option, main, pass_ctx


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
    specs = _read_specs(job, cmd, file_path, batch)
    spool = c.open(create=False)  # validate first: bad input writes nothing at all
    jobs, line_of = _make_jobs(spool, specs, flags, where)
    c.open()
    try:
        jobs = _publish(spool, jobs)
    except JobExists as e:
        if batch is None or e.job_id not in line_of:
            raise
        raise CliError(f"{where(line_of[e.job_id])}{e}; nothing was enqueued", 1) from None
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
    if batch is not None:
        specs = []
        for n, line in enumerate(_read_source(batch, "batch").splitlines(), 1):
            if line.strip():
                try:
                    specs.append((n, parse_json_object(line, "line")))
                except InvalidJob as e:
                    raise CliError(f"line {n}: {e}; nothing was enqueued", 2) from None
        return specs
    if file_path is not None:
        return [(1, parse_json_object(_read_source(file_path, "file"), "file"))]
    if cmd is not None:
        return [(1, {"command": cmd})]
    assert job is not None
    if job.lstrip().startswith(("{", "[")):
        return [(1, parse_json_object(job, "JOB"))]
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
