"""The one syntax for a length of time, taken by every option and setting in seconds: a number of
seconds (90, 1.5), or numbers each with a unit s, m, h, d or w, largest first (10m, 1.5h, 1h30m)."""

from __future__ import annotations

from .errors import quoted

UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
SYNTAX = "seconds, or a number with s, m, h, d or w: 90, 90s, 10m, 1.5h, 1h30m, 2d"
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"  # digits 0-9 only: no '1e3', 'nan', '٣' or '1_0'


def parse(text: str) -> float:
    """A duration as seconds (>= 0); ValueError saying the syntax for anything else."""
    import re  # a duration is parsed by options and settings, never by a plain enqueue

    spoken = text.strip().lower()
    if re.fullmatch(_NUMBER, spoken):
        return float(spoken)
    parts = re.findall(rf"({_NUMBER})([a-z]+)", spoken)
    units = [unit for _, unit in parts]
    if (not parts or "".join(n + u for n, u in parts) != spoken or any(u not in UNITS for u in units)
            or len(set(units)) != len(units) or units != sorted(units, key=lambda u: -UNITS[u])):
        raise ValueError(f"{quoted(text)} is not a duration ({SYNTAX})")
    return sum(float(number) * UNITS[unit] for number, unit in parts)


def parse_within(text: str, low: float, high: float, *, low_open: bool = False) -> float:
    """A duration from `low` to `high` seconds; ValueError saying the range otherwise."""
    seconds = parse(text)
    if seconds < low or (low_open and seconds == low) or seconds > high:
        raise ValueError(f"{quoted(text)} is out of range ({'more than' if low_open else 'at least'} {show(low)}, "
                         f"at most {show(high)})")
    return seconds


def show(seconds: float) -> str:
    """Seconds as the shortest duration that reads them exactly: 90 -> '90s', 3600 -> '1h'."""
    for unit, size in UNITS.items():
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
