"""Seeing what the spool did: `stats` (a window of the attempts log) and `metrics` (Prometheus)."""

from __future__ import annotations

import click

from ..format.states import State
from ..reading.stats import MAX_WINDOW, Series, Stats, human_seconds, human_window
from .base import CliError, Context, Duration, emit_json, json_option, main, pass_ctx
from .queue_names import queues_option, warn_about_queues

LEVELS = " .:-=+*#%@"  # a bar chart in plain characters: ten heights


@main.command()
@click.option("--since", "window", type=Duration(0, MAX_WINDOW, low_open=True), default="1h", show_default=True,
              help="The window: 90, 30m, 6h, 7d (at most 366d).")
@queues_option("These queues' figures only (may be given again).")
@json_option
@pass_ctx
def stats(c: Context, window: float, queues: frozenset[str] | None, as_json: bool) -> None:
    """Jobs done, failed attempts, dead, success rate, throughput, run and wait times per queue over
    a window of the attempts log, and the oldest ready job's age."""
    if queues is not None:
        warn_about_queues(c.reading, sorted(queues))
    result = c.reading.stats(window, queue=queues)
    if as_json:
        emit_json(result.to_dict())
        return
    for line in stats_lines(result):
        click.echo(line)


def stats_lines(result: Stats) -> list[str]:
    d = result.to_dict()
    lines = [f"last {human_window(result.window)}: {d['since']} .. {d['until']}", "",
             f"{'QUEUE':<16} {'DONE':>7} {'FAILED':>7} {'DEAD':>6} {'SUCCESS':>8} {'PER MIN':>8}  "
             f"{'RUN p50/p95/max':<24} {'WAIT p50/p95':<17} OLDEST READY"]
    rows = [*d["queues"].items(), *([("(all)", d["total"])] if len(d["queues"]) != 1 else [])]
    if not rows:
        rows = [("(all)", d["total"])]
    for name, f in rows:
        success = "-" if f["success_rate"] is None else f"{100 * f['success_rate']:.1f}%"
        run = "/".join(human_seconds(f["run_seconds"][k]) for k in ("p50", "p95", "max"))
        wait = "/".join(human_seconds(f["wait_seconds"][k]) for k in ("p50", "p95"))
        lines.append(f"{name[:16]:<16} {f[State.DONE]:>7} {f['failed_attempts']:>7} {f[State.DEAD]:>6} {success:>8} "
                     f"{f['throughput_per_min']:>8.2f}  {run:<24} {wait:<17} {human_seconds(f['oldest_ready_age'])}")
    lines += ["", *chart_lines(result.series)]
    return lines


def chart_lines(series: Series) -> list[str]:
    """Finished jobs and failed attempts per bucket, one character a bucket."""
    per = "minute" if series.bucket_seconds == 60 else human_window(series.bucket_seconds)
    out = []
    for label, counts in (("finished", series.finished), ("failed", series.failed)):
        out.append(f"{label + ' per ' + per:<22} |{bars(counts)}| max {max(counts, default=0)}")
    return out


def bars(counts: list[int]) -> str:
    top = max(counts, default=0)
    if top == 0:
        return " " * len(counts)
    return "".join(LEVELS[0] if n == 0 else LEVELS[max(1, round(n * (len(LEVELS) - 1) / top))] for n in counts)


@main.command()
@click.option("--textfile", type=click.Path(dir_okay=False, writable=True), metavar="PATH",
              help="Write to PATH at once (temp file and rename) for node_exporter's textfile collector.")
@pass_ctx
def metrics(c: Context, textfile: str | None) -> None:
    """The spool's metrics in Prometheus's text format: jobs by state and queue, attempts by
    outcome, run and wait time histograms, oldest ready job, live workers, pauses."""
    from ..running.metrics import Totals, exposition, write_textfile

    text = exposition(c.reading, Totals())
    if textfile is None:
        click.echo(text, nl=False)
        return
    if not textfile.endswith(".prom"):
        raise click.BadParameter("node_exporter reads only files ending in .prom", param_hint="'--textfile'")
    try:
        write_textfile(textfile, text)
    except OSError as e:
        raise CliError(f"cannot write {textfile}: {e.strerror}") from None
