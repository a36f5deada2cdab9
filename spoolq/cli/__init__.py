"""The spoolq command line (click's only home): ``main`` is the click group, ``run`` the console
entry point. Each command lives in the module named for what it does; the core never prints."""

from __future__ import annotations

import sys

import click

from .base import Terminated, main

__all__ = ["main", "run"]


def run() -> None:
    """Console entry point: never a traceback for something a user can cause."""
    _unwind_on_termination()
    try:
        # Not standalone: click would turn Ctrl+C into "Aborted!" and exit 1, which `wait`
        # uses for "a job is dead"; the errors are shown here instead, the same way click would.
        code = main.main(prog_name="spoolq", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("Error: interrupted", err=True)
        sys.exit(130)
    except Terminated as e:
        click.echo(f"Error: terminated by signal {e.signum}", err=True)
        sys.exit(128 + e.signum)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except OSError as e:  # a full disk, a read-only or vanished spool: say what, not where in the code
        from ..system.fsio import is_disk_full

        cause = "the file system is full" if is_disk_full(e) else e.strerror or "I/O error"
        click.echo(f"Error: {cause}" + (f": {e.filename}" if e.filename else ""), err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _unwind_on_termination() -> None:
    """SIGTERM and SIGHUP raise Terminated, as SIGINT raises KeyboardInterrupt: a killed
    `enqueue --batch` then takes back what it wrote instead of leaving it behind. (`worker
    start` installs its own handlers: there they mean "stop after the running jobs".)"""
    import signal

    def terminate(signum: int, _frame: object) -> None:
        raise Terminated(signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) == signal.SIG_DFL:  # an ignored SIGHUP (nohup) stays ignored
            signal.signal(signum, terminate)
