"""The spoolq command line (click's only home): ``main`` is the click group, ``run`` the console
entry point. Each command lives in the module named for what it does; the core never prints.
A plain enqueue is done without loading click at all (quick.py): ``main`` is loaded on first use."""

from __future__ import annotations

import sys

from . import quick
from .quick import Terminated

__all__ = ["main", "run"]


def run() -> None:
    """Console entry point: never a traceback for something a user can cause."""
    quick.unwind_on_termination()
    try:
        code = quick.enqueue(sys.argv[1:])
        if code is None:
            code = _with_click()
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Terminated as e:
        _fail(f"terminated by signal {e.signum}", 128 + e.signum)
    except OSError as e:
        _fail(quick.io_failure(e), 1)
    except Exception as e:  # after a plain enqueue printed its id: only a SpoolError
        from ..format.errors import SpoolError

        if not isinstance(e, SpoolError):
            raise
        _fail(str(e), e.exit_code)
    sys.exit(code)


def _with_click() -> int:
    import click

    from .base import main

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
