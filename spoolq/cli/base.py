"""The CLI's shared parts: the top-level group, the spool context, errors turned into exit codes
in one place, and the output helpers every command uses.

Exit status: 0 success; 1 the operation failed; 2 invalid input or usage (nothing written);
124 a --timeout ran out.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterable

import click

from ..format.states import State
from ..format import durations
from ..format.errors import JobExists, NoSpool, SpoolError, quoted
from ..format.job import valid_id
from ..spool import Spool
from .quick import Terminated, write_utf_8  # noqa: F401  (the commands import Terminated from here)

if TYPE_CHECKING:
    from ..reading.views import JobView


class CliError(click.ClickException):
    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class _Plain:
    """A number as a person writes one: digits 0-9, a sign, a point, an exponent. int() and
    float() also read other scripts' digits ('٣' is 3), '1_0', 'nan' and 'inf' ('purge
    --older-than nan' purged everything), none of which anyone means in a job queue's options."""

    pattern = r"[+-]?[0-9]+"  # compiled on first use (re caches it): most calls never parse a number
    what = "integer"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not re.fullmatch(self.pattern, value.strip()):
            self.fail(f"{quoted(value)} is not a valid {self.what} (digits 0-9)", param, ctx)  # type: ignore[attr-defined]
        return super().convert(value, param, ctx)  # type: ignore[misc]


class Int(_Plain, click.IntRange):
    """An integer option (within bounds, if given)."""

    def _describe_range(self) -> str:
        # click would print "[x<=None]" in the help of an option without bounds
        return "" if self.min is None and self.max is None else super()._describe_range()

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str | None:
        return "INTEGER" if self.min is None and self.max is None else None


class Duration(click.ParamType):
    """A length of time in durations.py's one syntax (90, 90s, 10m, 1.5h, 1h30m, 2d), as seconds,
    from `low` (excluded with `low_open`) to `high`."""

    name = "duration"

    def __init__(self, low: float = 0, high: float = 3650 * 86400.0, *, low_open: bool = False):
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return durations.parse_within(value, self.low, self.high, low_open=self.low_open)
        except ValueError as e:
            self.fail(str(e), param, ctx)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "DURATION"


# The module of spoolq.cli that defines each command, imported when the command is used: one
# `enqueue` from a cron line or a loop does not pay for loading every other command.
COMMAND_MODULES = {
    "enqueue": "enqueue",
    "status": "reading", "list": "reading", "show": "reading", "logs": "reading", "wait": "reading",
    "worker": "workers",
    "dlq": "admin", "config": "admin", "purge": "admin", "fsck": "admin",
    "pause": "steering", "resume": "steering", "cancel": "steering", "requeue": "steering",
    "queue": "steering",
    "stats": "observing", "metrics": "observing",
    "web": "dashboard",
    "schedule": "scheduling",
}


# Words a newcomer types for what spoolq calls otherwise, and where each points.
POINTERS = {
    "retry": "`spoolq dlq retry ID...` runs a dead job again, `spoolq requeue ID...` a done or dead one",
    "start": "`spoolq worker start`", "run": "`spoolq worker start`", "stop": "`spoolq worker stop`",
    "kill": "`spoolq cancel --kill ID...`", "add": "`spoolq enqueue`", "submit": "`spoolq enqueue`",
    "ls": "`spoolq list`", "log": "`spoolq logs ID`",
    # nq, task-spooler, pueue, RQ and Sidekiq's words (docs/cli.md, "Coming from another queue")
    "restart": "`spoolq requeue ID...`", "push": "`spoolq enqueue`", "cat": "`spoolq logs ID`",
    "follow": "`spoolq logs -f ID`", "tail": "`spoolq logs -f ID`", "jobs": "`spoolq list`", "ps": "`spoolq list`",
    "info": "`spoolq status` (the spool) or `spoolq show ID` (a job)", "failed": "`spoolq dlq list`",
    **dict.fromkeys(("clean", "clear"), "`spoolq purge --state done`"),
    "parallel": "`spoolq queue set Q --concurrency N`, or `spoolq worker start --slots N`",
    "group": "`spoolq queue list`", "cron": "`spoolq schedule add NAME CRON --cmd CMD`", "dashboard": "`spoolq web`",
    **dict.fromkeys(("rm", "remove", "delete"), "`spoolq cancel ID...` (not finished) or `spoolq purge ID...` (finished)"),
}
# The same within a group, where the closest name can be the wrong one (`schedule remove`: resume).
GROUP_POINTERS = {
    "schedule": {**dict.fromkeys(("remove", "delete", "del"), "`spoolq schedule rm NAME`"),
                 **dict.fromkeys(("run", "trigger", "now", "start"), "`spoolq schedule fire NAME`"),
                 **dict.fromkeys(("edit", "update", "set", "change"), "`spoolq schedule add NAME CRON ... --replace`"),
                 "enable": "`spoolq schedule resume NAME`", "disable": "`spoolq schedule pause NAME`",
                 "stop": "`spoolq schedule pause NAME`", "next": "`spoolq schedule list` (NEXT)"},
}


class Suggesting(click.Group):
    """A group that answers a command it does not have with the one most like it, or with where
    a familiar word's command is (POINTERS)."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            from difflib import get_close_matches

            close = get_close_matches(name, self.list_commands(ctx), n=1)
            words = POINTERS if ctx.parent is None else GROUP_POINTERS.get(ctx.info_name or "", {})
            pointer = words.get(name)
            hint = (f"; {pointer}" if pointer else
                    f"; did you mean {close[0]!r}?" if close else f"; see `{ctx.command_path} --help`")
            raise click.UsageError(f"no such command {name!r}{hint}", ctx)
        return super().resolve_command(ctx, args)


class SpoolqGroup(Suggesting):
    """The top-level group: a SpoolError from any command becomes its one-line message and exit
    code here, in one place. Commands are loaded on first use (COMMAND_MODULES)."""

    group_class = Suggesting  # `spoolq dlq retyr` is answered as `spoolq retyr` is

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMAND_MODULES})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(name)
        if module is not None and name not in self.commands:
            importlib.import_module(f"{__package__}.{module}")  # its decorators register it on main
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NoSpool as e:  # most likely a forgotten SPOOLQ_DIR, or a first command before any enqueue
            raise CliError(f"{e} (--spool DIR or SPOOLQ_DIR names another; spoolq init makes one there)", 1) from None
        except JobExists as e:  # a second run of a cron line, most likely: --if-absent is made for it
            hint = " (with --if-absent: print its id, change nothing, exit 0)" if e.job_id else ""
            raise CliError(f"{e}{hint}", e.exit_code) from None
        except SpoolError as e:
            raise CliError(str(e), e.exit_code) from None


class Context:
    """What every command shares: the spool path, opened only when first needed."""

    def __init__(self, path: str):
        self.path = path
        self._spool: Spool | None = None
        self._checked = False

    def handle(self) -> Spool:
        """The spool, with nothing on disk looked at yet (input is validated against it first)."""
        if self._spool is None:
            self._spool = Spool(self.path, create=False)
        return self._spool

    def create(self, *, announce: bool = True) -> Spool:
        """For the commands that write (init, enqueue, worker start, config set): the spool,
        its layout created where missing, and said on stderr when it was (a forgotten
        SPOOLQ_DIR otherwise makes a ./spool no worker ever looks at)."""
        spool = self.handle()
        if not self._checked:
            new = not spool.store.is_spool()
            spool.init()
            self._checked = True
            if new and announce:
                click.echo(f"spoolq: created a new spool at {os.path.abspath(spool.root)} "
                           "(--spool DIR or SPOOLQ_DIR names another)", err=True)
        return spool

    @property
    def reading(self) -> Spool:
        """For the commands that only read: an existing spool, which anyone the file system lets
        read it may read (root on a service user's spool); such a reader writes nothing in it."""
        spool = self.handle()
        if not self._checked:
            spool.store.open_for_reading()
            self._checked = True
        return spool

    @property
    def spool(self) -> Spool:
        """For every other command: an existing spool ("no spool at PATH" otherwise)."""
        spool = self.handle()
        if not self._checked:
            spool.store.open_existing()
            self._checked = True
        return spool


pass_ctx = click.make_pass_decorator(Context)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output: JSON.")


def emit_json(value: Any) -> None:
    """One JSON document on stdout in UTF-8, whatever the locale (as `enqueue --json` writes it):
    a stdout in ASCII or Latin-1 cannot hold a command's own characters."""
    write_utf_8(json.dumps(value, ensure_ascii=False) + "\n")


@click.group(cls=SpoolqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--spool", "spool_dir", envvar="SPOOLQ_DIR", default="./spool", show_default=True,
              metavar="DIR", help="The spool directory (default: $SPOOLQ_DIR, else ./spool).")
@click.version_option(package_name="spoolq", prog_name="spoolq")
@click.pass_context
def main(ctx: click.Context, spool_dir: str) -> None:
    """spoolq: a background job queue that is nothing but a directory."""
    if not spool_dir.strip():
        raise click.BadParameter("must name a directory (an empty value would make the current "
                                 "directory a spool)", param_hint="--spool")
    ctx.obj = Context(home_expanded(spool_dir))


def home_expanded(path: str) -> str:
    """A leading ~ or ~user as the shell would have expanded it (a quoted '~/spool', or one in
    SPOOLQ_DIR from a unit file, would otherwise make a directory named '~')."""
    if not path.startswith("~"):
        return path
    expanded = os.path.expanduser(path)
    if expanded.startswith("~"):
        raise click.BadParameter(f"{path!r}: no such user's home to expand it to", param_hint="--spool")
    return expanded


@main.command()
@pass_ctx
def init(c: Context) -> None:
    """Create the spool layout (enqueue, worker start and config set also create it)."""
    click.echo(f"spool ready at {c.create(announce=False).root}")


def emit_pairs(values: dict[str, Any], as_json: bool, width: int, show: Callable[[Any], str] = str) -> None:
    """A mapping: one JSON object, or a `key  value` line per key (keys padded to `width`)."""
    if as_json:
        emit_json(values)
        return
    for key, value in values.items():
        click.echo(f"{key:<{width}} {show(value)}")


def emit_rows(rows: list[dict[str, Any]], as_json: bool, *, empty: str, header: str,
              line: Callable[[dict[str, Any]], str]) -> None:
    """A listing: one JSON array of the rows, or `empty` when there are none, or a header and a
    line per row."""
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo(empty)
        return
    click.echo(header)
    for row in rows:
        click.echo(line(row))


def print_views(views: Iterable[JobView], as_json: bool, empty: str = "no jobs") -> None:
    rows = [v.to_dict() for v in views]
    width = id_width(rows)
    emit_rows(rows, as_json, empty=empty,
              header=f"{'ID':<{width}}  {'STATE':<10} {'TRIES':>5} {'PRIO':>5}  COMMAND / LAST ERROR",
              line=lambda d: _job_line(d, width))


def _job_line(d: dict[str, Any], width: int) -> str:
    text, note = d.get("command") or "", _job_note(d)
    if note:  # the command is cut to leave the note room
        text = f"{one_line(text, max(20, 88 - len(note)))}  [{note}]" if text else f"[{note}]"
    prio = d.get("priority")
    return (f"{shown_id(d):<{width}}  {d['state']:<10} {tries(d):>5} {'-' if prio is None else prio:>5}  "
            f"{one_line(text, 90)}")


def _job_note(d: dict[str, Any]) -> str:
    """What a line of `list` adds to a job's command: why it died; when a scheduled one is due
    (after a failed attempt, why it failed); what a waiting one waits for."""
    notes = []
    if d.get("last_error") and (d["state"] == State.DEAD or d["state"] == State.SCHEDULED and d.get("attempts")):
        notes.append(d["last_error"])
    if d["state"] == State.SCHEDULED and d.get("run_at"):
        notes.append(f"due {d['run_at'][:19]}Z")
    if d["state"] == State.WAITING and d.get("after"):
        notes.append(f"after {' '.join(d['after'])}")
    return "; ".join(notes)


def shown_id(d: dict[str, Any]) -> str:
    return d["id"] or "(drop-in)"  # a dropped file without an id, until a worker adopts it


def id_width(rows: list[dict[str, Any]]) -> int:
    """The ID column as wide as its longest id (ids are never cut: they are copied into commands)."""
    return max([20, *(len(shown_id(d)) for d in rows)])


def tries(d: dict[str, Any]) -> str:
    return f"{d['attempts']}/{d['max_retries'] + 1}" if d.get("max_retries") is not None else "-"


def warn_about_config(config: Any) -> None:
    """What config.json holds that is ignored, one warning line each on stderr."""
    for problem in config.problems:
        click.echo(f"Warning: {problem}", err=True)


def distinct(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """ID... given twice (`cancel X X`, a script's list with repeats) counts once, in the order
    first given: a second cancel of X said it was already dead, and exited 1."""
    return tuple(dict.fromkeys(values))


def check_ids(job_ids: Iterable[str]) -> None:
    """Refuse a malformed id (exit 2) before the spool is opened: bad input writes nothing."""
    for job_id in job_ids:
        if not valid_id(job_id[1:] if job_id.startswith("+") else job_id):  # '+': quarantined
            raise CliError(f"invalid job id {quoted(job_id)}: use 1-128 characters of A-Z a-z 0-9 . _ -, "
                           "not starting with '.'", 2)


def shown(text: str) -> str:
    """Text read from a spool, for a terminal: each character that is not printable (an escape
    sequence's ESC, a newline, a byte that was not UTF-8) as its backslash escape. Whoever may
    drop a file (a member of a shared spool's group) names it and writes its command: that text
    must never drive the owner's terminal nor fake a line of what spoolq says."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def one_line(text: str, width: int) -> str:
    text = shown(" ".join(text.split()))
    return text if len(text) <= width else text[: width - 1] + "…"


def report_each(why: dict[str, str | None], did: str, as_json: bool) -> None:
    """Per id, what a command did (None) or why not; exit 1 if it did not do them all. Text: a
    line on stdout for each done, an error line on stderr for each not."""
    if as_json:
        emit_json([{"id": job_id, "ok": reason is None, "error": reason} for job_id, reason in why.items()])
    else:
        for job_id, reason in why.items():
            if reason is None:
                click.echo(f"{job_id}: {did}")
            else:
                click.echo(f"Error: {reason}", err=True)
    if any(reason is not None for reason in why.values()):
        sys.exit(1)
