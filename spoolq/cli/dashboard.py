"""`spoolq web`: the dashboard (the optional extra spoolq[web]: Flask)."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

import click

from ..format.errors import quoted
from .base import CliError, Context, Terminated, main, pass_ctx

if TYPE_CHECKING:
    from ..spool import Spool

TOKEN_VARIABLE = "SPOOLQ_WEB_TOKEN"


def bind_address(text: str) -> tuple[str, int]:
    """HOST:PORT ([v6]:PORT for IPv6) as a host and a port (1-65535)."""
    host, sep, port = text.rpartition(":")
    if not sep or not re.fullmatch(r"[0-9]{1,5}", port) or not 0 < int(port) < 65536 or not host:
        raise click.BadParameter(f"{quoted(text)} is not HOST:PORT (like 127.0.0.1:8765)", param_hint="'--bind'")
    return host.strip("[]"), int(port)


def check_token(token: str | None) -> None:
    """A blank --token or SPOOLQ_WEB_TOKEN (`--token "$T"` with T unset, an EnvironmentFile line
    with no value) is refused: served as none, it would leave the dashboard open to anyone."""
    given = os.environ.get(TOKEN_VARIABLE) if token is None else token
    if given is not None and not given.strip():
        raise click.BadParameter(f"the token is empty (--token, or {TOKEN_VARIABLE}): give one "
                                 "(openssl rand -hex 16), or leave both out to serve with none",
                                 param_hint="'--token'")


def _dashboard_spool(c: Context, read_only: bool) -> Spool:
    """A read-only dashboard only reads: root or anyone the file system lets read another user's
    spool serves it as `status` reads it; one that acts is its owner's to serve."""
    if read_only:
        return c.reading
    store = c.handle().store
    if store.another_owner() is not None and store.is_spool():
        raise CliError(f"{store.root} is another user's spool: only its owner serves its actions; run "
                       f"{store.owners_command()}, or web --read-only to look at it")
    return c.spool


@main.command()
@click.option("--bind", default="127.0.0.1:8765", show_default=True, metavar="HOST:PORT",
              help="Where to listen.")
@click.option("--read-only", is_flag=True, help="Show everything, change nothing (no retry, cancel, pause).")
@click.option("--token", envvar=TOKEN_VARIABLE, metavar="TOKEN",
              help="Ask every request for this token (a browser: the form shown, or ?token=… once, "
                   "for a session cookie; a script: Authorization: Bearer …).")
@pass_ctx
def web(c: Context, bind: str, read_only: bool, token: str | None) -> None:
    """Serve the dashboard: counts, charts, running jobs, workers, job lists and pages, actions,
    /metrics and /api/… JSON. Until Ctrl+C."""
    host, port = bind_address(bind)
    check_token(token)
    try:
        from .. import web as dashboard
    except ImportError as e:
        raise CliError(f"the dashboard needs the web extra ({e.name} is missing): install spoolq as "
                       "'.[web]' from its checkout (pipx install '.[web]')") from None
    spool = _dashboard_spool(c, read_only)
    try:
        server, bound = dashboard.make(spool, host, port, read_only=read_only, token=token or None)
    except OSError as e:  # in use, not an address of this host, a name that does not resolve
        raise CliError(f"cannot listen on {bind}: {e.strerror or e}") from None
    if not bound.loopback and not token:
        where = "every address of this host" if bound.everywhere else f"{bound.address}, not a loopback address"
        click.echo(f"Warning: serving {spool.root} on {host} ({where}) to anyone who can reach it, "
                   "with no --token", err=True)
    try:  # from the line that says it serves: a stop that comes right after it is a stop too
        click.echo(f"spoolq dashboard on http://{bind}/ for {spool.root}{' (read-only)' if read_only else ''}; "
                   "Ctrl+C stops it", err=True)
        server.serve_forever()
    except (KeyboardInterrupt, Terminated):  # Ctrl+C, or a service manager's stop: the normal end (exit 0)
        pass
    finally:
        server.server_close()
