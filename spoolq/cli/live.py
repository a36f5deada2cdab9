"""What redraws itself while a person watches: `status --watch` and `wait`'s progress bar.
On a terminal they draw in place; elsewhere `status --watch` prints one block per interval and
the bar is never drawn (a pipe or a log gets no carriage returns)."""

from __future__ import annotations

import sys
import time
import click

from ..format.states import State
from ..format.job import iso
from ..spool import Spool
from .base import one_line
from .queue_names import paused_text

CLEAR = "\x1b[H\x1b[2J"
RATE_WINDOW = 300.0  # seconds of the attempts log behind status --watch's rates


def watch_status(spool: Spool, interval: float) -> None:
    """Redraw the counts, rates and running jobs every `interval` seconds until Ctrl+C."""
    tty = sys.stdout.isatty()
    try:
        while True:
            lines = status_lines(spool, interval)
            if tty:
                click.echo(CLEAR + "\n".join(lines))
            else:
                click.echo("\n".join(lines) + "\n")
            time.sleep(interval)
    except KeyboardInterrupt:
        return  # Ctrl+C is how one leaves a watch: not an error


def status_lines(spool: Spool, interval: float) -> list[str]:
    now = time.time()
    n = spool.counts()
    recent = spool.stats(RATE_WINDOW, now=now).total
    running = spool.list_jobs(state=State.PROCESSING)
    lines = [f"{iso(now)}  spool {spool.root}  (every {interval:g}s; Ctrl+C to stop)",
             f"pending {n.pending}  scheduled {n.scheduled}  waiting {n.waiting}  processing {n.processing}  "
             f"done {n.done}  dead {n.dead}{f'  quarantined {n.quarantined}' if n.quarantined else ''}  "
             f"workers {n.workers}  paused {paused_text(spool.paused())}",
             f"last {RATE_WINDOW / 60:g} min: {recent.done} done, {recent.failed} failed attempts, "
             f"{(recent.done + recent.dead) / (RATE_WINDOW / 60):.1f} finished/min",
             ""]
    if not running:
        return lines + ["no job running"]
    lines.append(f"{'ID':<20} {'WORKER':<28} {'ELAPSED':>9}  COMMAND")
    for view in running:
        started = view.last_attempt.started
        elapsed = f"{now - started:.1f}s" if started else "-"
        command = view.job.command if view.job else ""
        lines.append(f"{view.id:<20} {(view.owner or '-')[:28]:<28} {elapsed:>9}  {one_line(command, 60)}")
    return lines


class ProgressBar:
    """`wait`'s bar on stderr: finished of total, rate, ETA; drawn at most every 0.1 s."""

    WIDTH = 30

    def __init__(self, enabled: bool | None):
        self.enabled = sys.stderr.isatty() and enabled is not False  # never on a pipe
        self.began = time.monotonic()
        self.drawn_at = 0.0
        self.shown = False

    def update(self, finished: int, total: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.drawn_at < 0.1):
            return
        self.drawn_at = now
        elapsed = now - self.began
        rate = finished / elapsed if elapsed > 0 else 0.0
        left = max(0, total - finished)
        eta = f"ETA {_clock(left / rate)}" if rate > 0 and left else ("done" if not left else "ETA -")
        filled = int(self.WIDTH * finished / total) if total else self.WIDTH
        bar = "#" * filled + "." * (self.WIDTH - filled)
        click.echo(f"\r[{bar}] {finished}/{total} finished  {rate:.1f}/s  {eta}\x1b[K", err=True, nl=False)
        self.shown = True

    def note(self, line: str) -> None:
        """A line on stderr, on a line of its own below the bar (which is drawn again after it)."""
        click.echo(("\r\x1b[K" if self.shown else "") + line, err=True)
        self.drawn_at = 0.0

    def close(self) -> None:
        if self.shown:
            click.echo("", err=True)


def _clock(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
