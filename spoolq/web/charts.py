"""Charts for the dashboard, drawn on the server as SVG: no script library, nothing to build.
Every text in them is escaped here, since the template takes the SVG as it is.

A chart reads without colour: finished jobs are wide bars, failed attempts narrow ones with a
dark outline in front of them, and a legend says so; the axes are labelled (jobs per bucket,
the time in UTC), and hovering a bucket shows its counts (an SVG `title`)."""

from __future__ import annotations

from html import escape

from ..format.job import iso
from ..reading.stats import Series

WIDTH, HEIGHT = 600, 190
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 34, 34  # room for the y scale, the title and legend, the x scale


def nice_top(value: int) -> int:
    """The y scale's top: `value` rounded up to 1, 2 or 5 times a power of ten (at least 1)."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= value:
                return max(m * step, 1)
        step *= 10


def bars(series: Series, title: str) -> str:
    """Finished jobs and failed attempts, one bar pair per bucket, with axes and a legend."""
    n = max(len(series.finished), 1)
    top = nice_top(max([*series.finished, *series.failed, 1]))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step, base = plot_w / n, TOP + plot_h
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" '
             f'xmlns="http://www.w3.org/2000/svg" aria-label="{escape(title)}">',
             f"<title>{escape(title)}</title>",
             f'<text x="{LEFT}" y="14" class="caption">{escape(title)}</text>', *_legend()]
    for value in (0, top // 2, top) if top > 1 else (0, 1):
        y = base - plot_h * value / top
        parts += [f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>',
                  f'<text x="{LEFT - 4}" y="{y + 4:.1f}" class="axis" text-anchor="end">{value}</text>']
    parts.append(f'<text class="axis-title" transform="translate(11 {TOP + plot_h / 2:.0f}) rotate(-90)" '
                 f'text-anchor="middle">jobs</text>')
    for i, (done, failed) in enumerate(zip(series.finished, series.failed)):
        x = LEFT + i * step
        for value, cls, shrink in ((done, "ok", 0.08), (failed, "bad", 0.32)):
            if value:
                h = max(1.0, plot_h * value / top)
                parts.append(f'<rect class="{cls}" x="{x + step * shrink:.1f}" y="{base - h:.1f}" '
                             f'width="{max(step * (1 - 2 * shrink), 0.5):.1f}" height="{h:.1f}"/>')
        parts.append(f'<rect class="hover" x="{x:.1f}" y="{TOP}" width="{step:.1f}" height="{plot_h}">'
                     f"<title>{escape(_bucket(series, i))}: {done} finished, {failed} failed "
                     f"attempt{'' if failed == 1 else 's'}</title></rect>")
    parts += _time_axis(series, n, step, base)
    parts.append("</svg>")
    return "".join(parts)


def _legend() -> list[str]:
    x = WIDTH - RIGHT - 290
    return [f'<rect class="ok" x="{x}" y="5" width="14" height="11"/>',
            f'<text x="{x + 18}" y="14" class="legend">finished (wide)</text>',
            f'<rect class="bad" x="{x + 125}" y="5" width="6" height="11"/>',
            f'<text x="{x + 135}" y="14" class="legend">failed attempts (narrow)</text>']


def _hhmm(t: float) -> str:
    return (iso(t) or "")[11:16]


def _bucket(series: Series, i: int) -> str:
    start = series.start + i * series.bucket_seconds
    return f"{_hhmm(start)}–{_hhmm(start + series.bucket_seconds)} UTC"


def _time_axis(series: Series, n: int, step: float, base: float) -> list[str]:
    out = [f'<line class="axis-line" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{base}" y2="{base}"/>']
    for i, anchor in ((0, "start"), (n // 2, "middle"), (n, "end")):
        out.append(f'<text x="{LEFT + i * step:.1f}" y="{base + 14:.1f}" class="axis" text-anchor="{anchor}">'
                   f"{escape(_hhmm(series.start + i * series.bucket_seconds))}</text>")
    out.append(f'<text x="{LEFT + n * step / 2:.1f}" y="{HEIGHT - 3}" class="axis-title" text-anchor="middle">'
               "time (UTC)</text>")
    return out
