"""The one enqueue a shell loop or a cron line runs, done without loading click (which is most
of such a call's time): `spoolq [--spool DIR] enqueue (--cmd CMD | CMD | -- PROGRAM ARG...)` with
any of --queue Q, --id ID, --priority N, --max-retries N and --shell, each given once. This module only
recognises those words: anything else (another command or option, --help, a JSON job, an
option twice, a value that starts with '-') and any refusal before the job is published is
handed to the click command, which parses the same words from the start and says what is
wrong; nothing has been written then, so it is as if this module had not run. The parts
the click CLI shares with it live here too: Terminated, the signal handlers, the messages."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Iterable

# The options this path knows, each taking a value, and the job field each sets.
VALUED = {"--cmd": "command", "--queue": "queue", "--id": "id", "--priority": "priority",
          "--max-retries": "max_retries"}


class Terminated(BaseException):
    """SIGTERM or SIGHUP: unwinds like Ctrl+C does (a BaseException, so that no `except
    Exception` swallows it), so that whatever a command was writing is taken back."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def unwind_on_termination() -> None:
    """SIGTERM and SIGHUP raise Terminated, as SIGINT raises KeyboardInterrupt: a killed
    `enqueue --batch` then takes back what it wrote instead of leaving it behind. (`worker
    start` installs its own handlers: there they mean "stop after the running jobs".)"""
    from ..system.signals import signal_calls

    signal = signal_calls()  # without the signal module's enums: `enum` is not worth loading here

    def terminate(signum: int, _frame: object) -> None:
        raise Terminated(signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) == signal.SIG_DFL:  # an ignored SIGHUP (nohup) stays ignored
            signal.signal(signum, terminate)


class Announcement:
    """Prints the ids before the jobs are published (enqueue_many's `announce`): if they cannot
    be printed (stdout closed, on a full disk, a closed pipe), Unprintable is raised and nothing
    is published, so the exit status tells the truth. `done`: they were printed."""

    def __init__(self, lines: Callable[[], list[str]]):
        self.lines = lines  # made when called: only then is it known which ids existed (--if-absent)
        self.done = False

    def __call__(self) -> None:
        if sys.stdout is None:
            raise Unprintable("cannot print the new ids (stdout is closed); nothing was enqueued")
        try:
            lines = self.lines()
            if lines:
                write_utf_8("\n".join(lines) + "\n")  # one write: a 100,000-line batch should not pay per line
            sys.stdout.flush()
        except OSError as e:
            forget_stdout()
            raise Unprintable(f"cannot print the new ids ({e.strerror}); nothing was enqueued") from None
        self.done = True


def write_utf_8(text: str) -> None:
    """`text` on stdout in UTF-8 (as JSON is, and as click.echo writes where the locale says
    ASCII), whatever encoding the text stream was given: a --json line holds a command's own
    characters, which an ASCII or Latin-1 stdout cannot encode."""
    binary = getattr(sys.stdout, "buffer", None)
    if binary is None:
        sys.stdout.write(text)
        return
    sys.stdout.flush()  # anything written as text before goes first
    binary.write(text.encode("utf-8"))
    binary.flush()


def warn_of_closed_cwds(cwds: "Iterable[str | None]") -> None:
    """A line on stderr for each directory jobs will run in that this user cannot enter: its worker,
    of the same uid, could not start them (`sudo -u spoolq spoolq enqueue` run from /root). Said
    after the jobs are in and their ids printed: a stderr that is closed (`2>&-`) or gone leaves
    it unsaid, never turning an enqueue that succeeded into a failure (retried: a job twice)."""
    for cwd in sorted({cwd for cwd in cwds if cwd}):
        if not os.access(cwd, os.X_OK):
            try:
                sys.stderr.write(f"Warning: the job runs in {cwd}, which uid {os.geteuid()} cannot enter: it "
                                 "cannot start there; enqueue from a directory it can (cd /), or give its \"cwd\"\n")
                sys.stderr.flush()
            except (AttributeError, OSError, ValueError):  # None (fd 2 closed at start), a closed pipe
                return


class Unprintable(Exception):
    pass


def forget_stdout() -> None:
    """What could not be written must not be tried again at exit (exit status 120): as Python's
    documentation advises for a broken pipe, stdout goes to /dev/null."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def plain_enqueue(args: list[str], environ: dict[str, str]) -> tuple[str, dict[str, object]] | None:
    """(spool directory, job fields) of a command line this path takes, else None."""
    from ..format.job import MAX_RETRIES_LIMIT  # the click option's range too
    spool_dir = environ.get("SPOOLQ_DIR", "./spool")
    if args[:1] == ["--spool"] and len(args) > 1:
        spool_dir, args = args[1], args[2:]
    if args[:1] != ["enqueue"] or not spool_dir.strip() or spool_dir.startswith("~"):
        return None
    fields: dict[str, object] = {}
    words = iter(args[1:])
    for word in words:
        if word == "--":  # the rest is the command's words (several), or JOB itself (one)
            rest = list(words)
            if "command" in fields or not rest or (len(rest) == 1 and rest[0].startswith("-")):
                return None
            word = join_words(rest) if len(rest) > 1 else rest[0]
            if len(rest) == 1 and word.lstrip().startswith(("{", "[", "\ufeff")):
                return None
            fields["command"] = word
            break
        field = VALUED.get(word)
        value = next(words, None) if field else word
        if word == "--shell":
            field, value = "shell", True
        elif field is None:  # the job's command itself, or a word for click to judge
            if word.startswith("-") or word.lstrip().startswith(("{", "[", "\ufeff")):
                return None
            field = "command"
        if value is None or field in fields or (isinstance(value, str) and value.startswith("-")):
            return None
        fields[field] = value
    for field in ("priority", "max_retries"):
        value = fields.get(field)
        if isinstance(value, str):
            if not (value.isascii() and value.isdigit()) or (field == "max_retries" and int(value) > MAX_RETRIES_LIMIT):
                return None
            fields[field] = int(value)
    return (spool_dir, fields) if "command" in fields else None


# The characters shlex.quote leaves a word bare with (its `[^\w@%+=:,./-]`, ASCII): shlex loads re.
BARE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-")


def join_words(words: list[str]) -> str:
    """A program and its arguments as one /bin/sh command line in which each word stays as given
    (`enqueue -- PROGRAM ARG...`): shlex.join's quoting, without loading re; and a first word
    the shell would read as more than a program's name (`NAME=value`: an assignment; `if`, `do`:
    a reserved word) quoted too, which keeps it a name."""
    from ..system.shell_words import RESERVED_WORDS

    def named(w: str, first: bool) -> str:
        if w and BARE.issuperset(w) and not (first and ("=" in w or w in RESERVED_WORDS)):
            return w
        return "'" + w.replace("'", "'\"'\"'") + "'"

    return " ".join(named(w, i == 0) for i, w in enumerate(words))


def enqueue(args: list[str]) -> int | None:
    """Enqueue the job of a plain command line and say its id: the exit status, or None when the
    click command is to do it (nothing has been written then)."""
    found = plain_enqueue(args, dict(os.environ))
    if found is None or sys.stdout is None:
        return None
    from ..spool import Spool

    spool_dir, fields = found
    announce = Announcement(lambda: [job.id])
    try:
        spool = Spool(spool_dir, create=False)
        if not spool.store.is_spool():
            return None  # the click command creates it and says so
        job = spool.make_job({"cwd": os.getcwd(), **fields})
        spool.init()  # as the click command does: a missing directory of the layout is made
        spool.enqueue_many([job], announce=announce)
        warn_of_closed_cwds([job.cwd])
    except (KeyboardInterrupt, Terminated):
        if announce.done:
            return 0  # a signal held while the job was published: it is enqueued, its id printed
        raise
    except Unprintable as e:
        sys.stderr.write(f"Error: {e}\n")
        return 1
    except Exception:
        if announce.done:
            raise
        return None  # refused before anything was published: the click command says why
    return 0
