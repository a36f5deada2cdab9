"""`spoolq enqueue`: read job objects from whichever form was used, validate all of them, then
publish them all or none."""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
import time
from contextlib import contextmanager
from typing import Any, BinaryIO, Callable, Iterator

import click

from ..format.errors import InvalidJob, JobExists, StorageError, quoted
from ..format.job import MAX_JOB_BYTES, MAX_RETRIES_LIMIT, parse_json_object
from ..spool import Spool
from .complete import job_ids, queue_names
from .quick import Announcement, Unprintable, join_words, warn_of_closed_cwds
from .base import CliError, Context, Duration, Int, Terminated, json_option, main, pass_ctx


MAX_BATCH_LINES = 1_000_000
MAX_BATCH_BYTES = 256 * 1024 * 1024


@contextmanager
def _source(path: str, what: str) -> Iterator[BinaryIO]:
    """An input file, or stdin for '-' (left open), with one-line errors for what can go wrong."""
    if path == "-":
        if sys.stdin is None:
            raise CliError(f"cannot read the {what} from stdin: it is closed", 2)
        yield sys.stdin.buffer
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a fifo with no writer must not hang
        os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb")
    except OSError as e:
        raise CliError(f"cannot read {what} {quoted(path, 1000)}: {e.strerror}", 2) from None
    with f:
        yield f


def _read_file(path: str) -> str:
    """One job object: at most MAX_JOB_BYTES are ever read, whatever the input's size."""
    with _source(path, "file") as f:
        data = _read(f, MAX_JOB_BYTES + 1, "file", path)
    if len(data) > MAX_JOB_BYTES:
        raise CliError(f"file {path!r} is larger than a job may be; the limit is {MAX_JOB_BYTES} bytes", 2)
    return _decode(data, f"file {path!r}")


def _batch_lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of a batch, read a line at a time: a line is cut off at the job limit
    and the whole batch at MAX_BATCH_LINES lines or MAX_BATCH_BYTES, so memory stays bounded."""
    total = 0
    with _source(path, "batch") as f:
        for n in itertools.count(1):
            line = _read(f, MAX_JOB_BYTES + 2, "batch", path, line=True)
            if not line:
                return
            total += len(line)
            if n > MAX_BATCH_LINES or total > MAX_BATCH_BYTES:
                raise CliError(f"the batch is over the limit of {MAX_BATCH_LINES} lines or {MAX_BATCH_BYTES} "
                               "bytes; split it; nothing was enqueued", 2)
            if len(line.rstrip(b"\r\n")) > MAX_JOB_BYTES:
                raise CliError(f"line {n}: longer than the limit of {MAX_JOB_BYTES} bytes for a job; "
                               "nothing was enqueued", 2)
            yield n, _decode(line, f"line {n}")


def _read(f: BinaryIO, size: int, what: str, path: str, *, line: bool = False) -> bytes:
    try:
        return f.readline(size) if line else f.read(size)
    except OSError as e:
        raise CliError(f"cannot read {what} {quoted(path, 1000)}: {e.strerror}", 2) from None


def _decode(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CliError(f"{what} is not UTF-8 (byte {e.start}); nothing was enqueued", 2) from None


# The job fields a flag of `enqueue` sets, each named as format/job.py's FIELDS names it: the
# command's parameters and the flags' fields are made from this table, and tests/test_cli.py checks
# it against FIELDS both ways (every field a caller may set has a flag here or is in JSON_ONLY).
FIELD_FLAGS = (
    ("id", click.option("--id", "id", help="Job id: 1-128 of A-Z a-z 0-9 . _ - (default: generated).")),
    ("max_retries", click.option("--max-retries", type=Int(0, MAX_RETRIES_LIMIT), help="Retries after the first attempt.")),
    ("priority", click.option("--priority", type=Int(), help="Higher runs first (default 0).")),
    ("timeout", click.option("--timeout", type=Duration(low_open=True),
                             help="How long before the job is killed (90, 10m, 2h).")),
    ("delay", click.option("--delay", type=Duration(), help="How long to wait before the job may run (90, 10m, 2h).")),
    ("run_at", click.option("--run-at", help="When the job may run: ISO 8601 or epoch seconds.")),
    ("shell", click.option("--shell", is_flag=True, default=None,
                           help="Always run the command with /bin/sh -c (else a plain one runs directly).")),
    ("queue", click.option("--queue", help="The queue the job belongs to (default: default).",
                           shell_complete=queue_names)),
    ("after", click.option("--after", metavar="ID[,ID...]", multiple=True, shell_complete=job_ids,
                           help="Wait until these jobs are done (dead: this one dies too); may be given again.")),
)
# Fields a caller sets only in a JSON job: `command` is JOB or --cmd; the others have no flag.
JSON_ONLY = ("command", "cwd", "env", "keep_children")


def field_flags(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of FIELD_FLAGS, in the table's order in --help."""
    for _field, option in reversed(FIELD_FLAGS):
        command = option(command)
    return command


def _flag_values(values: dict[str, Any]) -> dict[str, Any]:
    """The job fields the flags given set (run_at: epoch seconds when it is a number; after: a list)."""
    flags = {field: values[field] for field, _option in FIELD_FLAGS if values[field] not in (None, ())}
    run_at = flags.get("run_at")
    if run_at is not None and re.fullmatch(r"\s*[0-9]+(\.[0-9]*)?\s*", run_at):
        flags["run_at"] = float(run_at)  # epoch seconds; a flag is always a string
    if "after" in flags:
        # Every --after; an id named again counts once (click kept only the last, so `--after A
        # --after A` was taken before every one counted), the order kept.
        flags["after"] = list(dict.fromkeys(i.strip() for given in flags["after"] for i in given.split(",")))
    return flags


class TakesWords(click.Command):
    """`enqueue [OPTIONS] -- PROGRAM ARG...`, as nq, tsp and pueue take a command: the words after
    the first `--` (its options too) become JOB, each quoted for /bin/sh so that it reaches the
    program as given (a file name with spaces, quotes or `$(...)` stays one argument); one word
    is JOB itself, as without --. An option spoolq does not have (`enqueue grep -r x .`) says
    where a command's own go."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            if len(args) - cut > 2:
                args = [*args[:cut + 1], join_words(args[cut + 1:])]
        given = list(args)  # click's parser consumes the list
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as e:
            if not e.possibilities:  # else click's "did you mean" says more
                e.message = f"{e.message.rstrip('.')}; {_words_hint(given)}"
            raise


def _words_hint(args: list[str]) -> str:
    """Where a command's own options go: after --, shown with the words given when they are the
    command (`enqueue grep -r x .`) and fit one line."""
    example = f"spoolq enqueue -- {join_words(args)}"
    if args[0].startswith("-") or len(example) > 100 or not example.isprintable():
        example = "spoolq enqueue [OPTIONS] -- PROGRAM ARG..."
    return f"a command's own options go after --: {example}"


@main.command(cls=TakesWords)
@click.argument("job", nargs=-1, metavar="[JOB | -- PROGRAM ARG...]")  # more than one: an unquoted command
@click.option("--cmd", help="The command to run (a /bin/sh -c string; see --shell).")
@click.option("--file", "file_path", metavar="F", help="One JSON job object from a file ('-' = stdin).")
@click.option("--batch", metavar="F", help="JSON lines, one job per line ('-' = stdin); all or nothing.")
@field_flags
@click.option("--if-absent", is_flag=True,
              help="If a job with this id exists, in any state, print its id and change nothing.")
@json_option
@pass_ctx
def enqueue(c: Context, job: tuple[str, ...], cmd: str | None, file_path: str | None, batch: str | None,
            if_absent: bool, as_json: bool, **fields: Any) -> None:
    """Add jobs. JOB is a JSON object when it starts with '{' or '[', else the command itself;
    after --, a program and its arguments, each word kept as given.

    \b
    spoolq enqueue 'echo hello'
    spoolq enqueue -- wc -c "$file"
    spoolq enqueue '{"command": "make -C /src", "max_retries": 5}'
    spoolq enqueue --cmd 'backup.sh' --priority 10 --delay 60
    spoolq enqueue --batch jobs.jsonl
    spoolq enqueue --id nightly-2026-11-28 --if-absent 'backup.sh'   # from cron: once
    """
    job = _the_job(job, cmd)
    forms = [name for name, value in (("JOB", job[0] if job else None), ("--cmd", cmd), ("--file", file_path),
                                      ("--batch", batch)) if value is not None]
    if len(forms) != 1:
        raise click.UsageError("give exactly one of JOB, --cmd, --file or --batch"
                               + (f" (got {', '.join(forms)})" if forms else ""))
    if batch is not None and fields["id"] is not None:
        raise click.UsageError("--id cannot be used with --batch: each line names its own id")
    flags = _flag_values(fields)
    where = (lambda n: f"line {n}: ") if batch is not None else (lambda n: "")
    specs = _read_specs(job[0] if job else None, cmd, file_path, batch)
    spool = c.handle()  # validate first: bad input writes nothing at all
    if if_absent:
        _refuse_without_ids(specs, flags, where)
    jobs, line_of = _make_jobs(spool, specs, flags, where)
    if any(job.after for job in jobs):
        try:
            spool.check_after(jobs)
        except InvalidJob as e:
            raise CliError(f"{e}; nothing was enqueued", 2) from None
    c.create()
    existing: set[str] | None = set() if if_absent else None
    announce = Announcement(lambda: _output_lines(spool, jobs, as_json, existing))
    try:
        _publish(spool, jobs, announce, existing)
    except Unprintable as e:
        raise CliError(str(e), 1) from None
    except JobExists as e:
        if batch is None or e.job_id not in line_of:
            raise
        raise CliError(f"{where(line_of[e.job_id])}{e}; nothing was enqueued (with --if-absent: the lines whose id "
                       "exists are skipped)", 1) from None
    except (KeyboardInterrupt, Terminated):
        if not announce.done:
            raise
        # A signal held while the jobs were published (SIGINT as SIGTERM and SIGHUP) arrives
        # here: they are enqueued, and their ids printed, so this enqueue succeeded.


def _the_job(job: tuple[str, ...], cmd: str | None) -> tuple[str, ...]:
    """JOB; several words are an unquoted command, said so; a JOB or --cmd of '-' is stdin
    meant, said so."""
    if len(job) > 1:
        raise click.UsageError(_quote_it(job))
    for form, value in (("JOB", job[0] if job else None), ("--cmd", cmd)):
        if value == "-":  # no program is named "-": stdin was meant
            raise click.UsageError(f"{form} '-' is no command: to read stdin, --file - takes one JSON job and "
                                   "--batch - JSON lines")
    return job


def _quote_it(words: tuple[str, ...]) -> str:
    """The answer to `spoolq enqueue echo hello`, as nq, tsp and pueue take a command: the words
    given, quoted as one argument (a short example instead when they would not fit one line)."""
    words_example = join_words(list(words))
    example = join_words([words_example])
    if len(example) > 80 or not example.isprintable():
        words_example, example = "make -C /src all", "'make -C /src all'"
    return (f"JOB is one argument: quote it, as in spoolq enqueue {example} (unquoted, the shell splits it into "
            f"words), or put them after --: spoolq enqueue -- {words_example}")


def _output_lines(spool: Spool, jobs: list, as_json: bool, existing: set[str] | None) -> list[str]:
    """Every job's id, in input order; with --json its object, and with --if-absent whether it
    existed (then the object is the existing job's, as far as it can be read)."""
    if not as_json:
        return [j.id for j in jobs]
    from ..format.errors import JobNotFound
    from ..reading.views import JobView, waiting_state

    now = time.time()
    lines = []
    for j in jobs:
        view = JobView(j.id, waiting_state(j, now), j, "").to_dict()
        if existing is not None:
            if j.id in existing:
                try:
                    view = spool.find(j.id).to_dict()
                except JobNotFound:  # reserved by an enqueue still writing it
                    view = {"id": j.id, "state": None}
            view["existed"] = j.id in existing
        lines.append(json.dumps(view, ensure_ascii=False))
    return lines


# What a batch of plain command lines (`printf 'make a\nmake b\n' | spoolq enqueue --batch -`) needs.
PLAIN_LINES = "each line is a JSON job object; make one of each plain command line with jq -Rc '{command: .}'"


def _read_specs(job: str | None, cmd: str | None, file_path: str | None,
                batch: str | None) -> list[tuple[int, dict[str, Any]]]:
    """The job objects of whichever enqueue form was used, each with its input line number."""
    if batch is not None:
        specs = []
        for n, line in _batch_lines(batch):
            if line.strip():
                try:
                    specs.append((n, parse_json_object(line, "line")))
                except InvalidJob as e:
                    hint = "" if line.lstrip().startswith("{") else f" ({PLAIN_LINES})"
                    raise CliError(f"line {n}: {e}; nothing was enqueued{hint}", 2) from None
        return specs
    if file_path is not None:
        return [(1, parse_json_object(_read_file(file_path), "file"))]
    if cmd is not None:
        return [(1, {"command": cmd})]
    assert job is not None
    if job.startswith("\ufeff"):
        raise CliError("JOB starts with a byte order mark (BOM): remove it", 2)
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


def _publish(spool: Spool, jobs: list, announce: Announcement, existing: set[str] | None) -> None:
    try:
        if len(jobs) < 2000 or not sys.stderr.isatty():
            spool.enqueue_many(jobs, announce=announce, skip_existing=existing)
        else:
            with click.progressbar(length=len(jobs), label="writing jobs", file=sys.stderr) as bar:
                spool.enqueue_many(jobs, progress=bar.update, announce=announce, skip_existing=existing)
    except StorageError:
        if existing is None or announce.done or not _all_exist(spool, jobs):
            raise
        # --if-absent of jobs that all exist asks nothing to be written: answered as such where
        # nothing can be (a read-only or full spool), as a plain look would answer it.
        existing.update(job.id for job in jobs)
        announce()
    warn_of_closed_cwds(job.cwd for job in jobs if existing is None or job.id not in existing)


def _all_exist(spool: Spool, jobs: list) -> bool:
    """Whether a job of every one's id is in the spool now (in any state)."""
    from ..format.errors import JobNotFound

    try:
        for job in jobs:
            spool.find(job.id)
    except (JobNotFound, StorageError, OSError):
        return False
    return True


def _refuse_without_ids(specs: list[tuple[int, dict[str, Any]]], flags: dict[str, Any], where: Any) -> None:
    """--if-absent asks whether a job exists by its id: a job without one cannot have been enqueued before."""
    if "id" in flags:
        return
    for n, spec in specs:
        if spec.get("id") is None:
            raise CliError(f"{where(n)}--if-absent needs the job's id (--id, or \"id\" in the JSON); "
                           "nothing was enqueued", 2)
