"""JSON values as a job file holds them: integers and finite numbers, times (ISO 8601 UTC or
epoch seconds), and how a value's type is named in an error. Pure: no I/O."""

from __future__ import annotations

import time

from .errors import InvalidJob

MAX_EPOCH = 9_999_999_999.0  # 2286-11-20: the most a pending name's 13-digit due field (ms) holds


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    ms = int(round(t * 1000))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def parse_time(value: object, field: str) -> float:
    """An ISO 8601 string (naive means UTC) or epoch seconds, as epoch seconds."""
    if is_number(value):
        if not 0 <= value <= MAX_EPOCH:  # type: ignore[operator]  # before float(): a huge int overflows it
            raise InvalidJob(f"{field}: {str(value)[:40]} is out of range")
        t = float(value)  # type: ignore[arg-type]
    elif isinstance(value, str):
        from datetime import datetime, timezone  # parsing is rare; keep the CLI's import lean

        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise InvalidJob(f"{field}: {value[:60]!r} is not an ISO 8601 time or epoch seconds") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        t = dt.timestamp()
    else:
        raise InvalidJob(f"{field}: must be an ISO 8601 string or epoch seconds")
    if not 0 <= t <= MAX_EPOCH:
        raise InvalidJob(f"{field}: {value!r} is out of range")
    return t


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A JSON number that is finite. Integers of any size count (a huge one is then out of range,
    not a float overflow)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or value - value == 0  # math.isfinite: inf - inf and NaN - NaN are NaN


def json_type(value: object) -> str:
    return {
        dict: "an object", list: "an array", str: "a string", bool: "a boolean",
        int: "an integer", float: "a number", type(None): "null",
    }.get(type(value), type(value).__name__)
