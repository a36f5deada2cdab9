"""Charts for the dashboard, drawn on the server as SVG: no script library, nothing to build.
Every text in them is escaped here, since the template takes the SVG as it is."""

from __future__ import annotations

from html import escape

from ..format.job import iso
from ..reading.stats import Series


def bars(series: Series, title: str, *, width: int = 720, height: int = 110) -> str:
    """Finished jobs (blue) with failed attempts (red) over them, one bar pair per bucket."""
    n = len(series.finished)
    top = max([*series.finished, *series.failed, 1])
    step = width / max(n, 1)
    plot = height - 24
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="100%" '
             f'preserveAspectRatio="none" xmlns="http://www.w3.org/2000/svg">',
             f"<title>{escape(title)}</title>",
             f'<text x="2" y="11" class="label">{escape(title)} (max {top})</text>']
    for i, (done, failed) in enumerate(zip(series.finished, series.failed)):
        x = i * step
        for value, cls, shrink in ((done, "ok", 0.1), (failed, "bad", 0.35)):
            if value:
                h = max(1.0, plot * value / top)
                parts.append(f'<rect class="{cls}" x="{x + step * shrink:.1f}" y="{height - 12 - h:.1f}" '
                             f'width="{max(step * (1 - 2 * shrink), 0.5):.1f}" height="{h:.1f}">'
                             f"<title>{value} {'finished' if cls == 'ok' else 'failed'}</title></rect>")
    start, end = iso(series.start), iso(series.start + n * series.bucket_seconds)
    parts += [f'<text x="2" y="{height - 1}" class="axis">{escape((start or "")[11:16])}</text>',
              f'<text x="{width - 2}" y="{height - 1}" class="axis" text-anchor="end">'
              f"{escape((end or '')[11:16])} UTC</text>", "</svg>"]
    return "".join(parts)
