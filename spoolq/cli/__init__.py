"""The spoolq command line (click's only home): ``main`` is the click group, ``run`` the console
entry point. Each command lives in the module named for what it does; the core never prints.
A plain enqueue is done without loading click at all (quick.py): ``main`` is loaded on first use."""

from __future__ import annotations

import errno
import os
import sys

from . import quick
from .quick import Terminated

__all__ = ["main", "run"]


def run() -> None:
    """Console entry point: never a traceback for something a user can cause."""
    _hold_closed_standard_fds()
    quick.unwind_on_termination()
    try:
        code = quick.enqueue(sys.argv[1:])
        if code is None:
            code = _with_click()
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Terminated as e:
        _fail(f"terminated by signal {e.signum}", 128 + e.signum)
    except OSError as e:  # a full disk, a read-only or vanished spool: what, not where in the code
        from ..system.disk_full import in_words

        _fail(in_words(e), 1)
    except Exception as e:  # after a plain enqueue printed its id: only a SpoolError
        from ..format.errors import SpoolError

        if not isinstance(e, SpoolError):
            raise
        _fail(str(e), e.exit_code)
    sys.exit(code)


def _with_click() -> int:
    import click

    from .base import main

    if sys.stdout is None:  # fd 1 closed (`spoolq list >&-`): click would print nothing and exit 0
        sys.stdout = ClosedStdout()
    _escape_what_stdout_cannot_encode()
    try:
        # Not standalone: click would turn Ctrl+C into "Aborted!" and exit 1, which `wait`
        # uses for "a job is dead"; the errors are shown here instead, the same way click would.
        code = main.main(prog_name="spoolq", standalone_mode=False)
    except click.exceptions.Abort:
        raise KeyboardInterrupt from None
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    return code if isinstance(code, int) else 0


def _hold_closed_standard_fds() -> None:
    """A standard descriptor the caller closed (`spoolq ... >&-`) is held on /dev/null: else the
    next file opened takes its number, and what goes to "stdout" lands in it (a detached
    supervisor closed its own log that way, and its workers never started). sys.stdout stays
    None, for ClosedStdout."""
    while (fd := os.open(os.devnull, os.O_RDWR)) <= 2:  # each open takes the lowest free number
        os.set_inheritable(fd, True)  # and a child's stdout is then /dev/null too, not closed
    os.close(fd)
    if sys.stderr is None:  # (`2>&-`): errors go where the caller sent them, nowhere; without a
        # stream, an error's line ended in an AttributeError (exit 1, not 124 or 2), and click
        # printed its own to stdout, into what a script captures
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)


class ClosedStdout:
    """Stands in for a closed stdout, so that what a command prints fails as a write to it would
    (EBADF: exit 1, saying so) instead of vanishing under click, which skips a missing stdout."""

    encoding = "utf-8"
    errors = "strict"

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError("a text stream")  # click asks whether a stream takes bytes
        if text:
            raise OSError(errno.EBADF, "stdout is closed")
        return 0

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        return 1


def _escape_what_stdout_cannot_encode() -> None:
    """Text a stdout's encoding cannot hold (a job's `✓` where PYTHONIOENCODING or the locale says
    Latin-1) is printed as a backslash escape, as stderr's is, instead of ending the command in a
    traceback. (JSON is written in UTF-8 whatever the encoding: base.emit_json.)"""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="backslashreplace")


def _fail(message: str, code: int) -> None:
    """Said as click says an error, without loading click on the plain enqueue's path."""
    sys.stderr.write(f"Error: {message}\n")
    sys.stderr.flush()
    sys.exit(code)


def __getattr__(name: str) -> object:
    if name == "main":  # the click group, loaded when first asked for
        from .base import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
