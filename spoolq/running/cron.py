"""Cron expressions (cronsim's only home): read as Debian's cron reads them, checked naming the
bad field, and evaluated in an IANA time zone, backwards from now (the latest slot) and forwards
(the next). An expression of a fixed hour and minute fires once at the first of a repeated
wall-clock time, and a time skipped by the clock's jump forward fires at the first minute after
the jump; the others fire at every instant they name. Also the host's own zone, which cron would
read an expression in."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from itertools import islice
from typing import Any

from ..format.errors import InvalidJob

ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
           "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
UNKNOWN_ALIASES = {  # what other crons take that a slot in time cannot be, and what to use instead
    "@reboot": "; a schedule fires at times, not when a host starts: enqueue that job from the unit that "
               "starts the workers (ExecStartPost=)",
    "@every": "; an interval is a step in a field, as in '*/5 * * * *' (every 5 minutes)"}
STEP = timedelta(microseconds=1)
MAX_LOOKS = 200  # slots iterated past one that cronsim gives on the wrong side of now (a repeated hour)


def expression(cron: str) -> str:
    """The five-field form of `cron` (an @alias translated); InvalidJob naming the bad field."""
    from cronsim import CronSim, CronSimError

    if not isinstance(cron, str):
        raise InvalidJob("invalid cron expression: not a string")
    text = " ".join(cron.split())
    text = ALIASES.get(text.lower(), text)
    if text.startswith("@"):
        raise InvalidJob(f"invalid cron expression {cron!r}: unknown alias (known: {', '.join(ALIASES)})"
                         + UNKNOWN_ALIASES.get(text.split()[0].lower(), ""))
    if text.upper().startswith(("CRON_TZ=", "TZ=")):
        raise InvalidJob(f"invalid cron expression {cron!r}: the zone goes in --tz, as in "
                         f"--tz {text.split()[0].split('=', 1)[1] or 'Europe/Berlin'}")
    if len(text.split()) != 5:  # cronsim would take a sixth, seconds field: slots are minutes here
        quote = "; quote the whole expression, as in '15 2 * * *'" if len(text.split()) == 1 else ""
        seconds = "; slots are whole minutes: there is no seconds field" if len(text.split()) == 6 else ""
        raise InvalidJob(f"invalid cron expression {cron!r}: wrong number of fields "
                         f"(fields: minute hour day-of-month month day-of-week){quote}{seconds}")
    try:
        CronSim(text, datetime(2000, 1, 1, tzinfo=timezone.utc))
    except CronSimError as e:
        raise InvalidJob(f"invalid cron expression {cron!r}: {str(e).lower()} "
                         "(fields: minute hour day-of-month month day-of-week)") from None
    return text


def zone(name: str) -> Any:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidJob(f"unknown time zone {name!r}{_zone_hint(name)}") from None


def _zone_hint(name: object) -> str:
    """"; did you mean 'Europe/Berlin'?" for a zone name spelt another way (zone names are read as
    file names: case counts), or what a zone name looks like."""
    from zoneinfo import available_timezones

    if isinstance(name, str):
        spelt = name.strip().replace(" ", "_").casefold()
        close = sorted(known for known in available_timezones() if known.casefold() == spelt)
        if close:
            return f"; did you mean {close[0]!r}?"
    return " (an IANA name, like UTC or Europe/Berlin)"


def host_zone() -> str | None:
    """This host's local time zone if it is not UTC (what cron reads its expressions in): its IANA
    name when TZ or /etc/localtime tells it, else "" (a zone not known by name)."""
    import time

    if time.timezone == 0 and time.altzone == 0:
        return None
    name = os.environ.get("TZ", "").lstrip(":")
    if not name:
        target = os.path.realpath("/etc/localtime")
        name = target.split("/zoneinfo/", 1)[1] if "/zoneinfo/" in target else ""
    try:
        zone(name)
    except InvalidJob:
        return ""
    return name


def latest_slot(cron: str, tz: str, now: float) -> float:
    """The latest slot of expression `cron` read in zone `tz` at or before `now` (epoch seconds)."""
    from cronsim import CronSim

    # From the instant just after now, made by fromtimestamp (which keeps the fold of a repeated
    # hour at the end of daylight saving time; adding a timedelta would drop it, an hour back).
    start = datetime.fromtimestamp(now + STEP.total_seconds(), zone(tz))
    latest = next(CronSim(expression(cron), start, reverse=True)).timestamp()
    if start.fold:
        # The second pass of a repeated hour: cronsim reads a fixed-time expression on the wall
        # clock and gives the first pass's instants (fold 0), which are past although their wall
        # times are later than now's. Look back from now's wall time on the first pass's offset,
        # past what is still to come.
        ahead = start.replace(fold=0).utcoffset() - start.utcoffset()
        first_pass = (start.replace(tzinfo=None) + ahead).replace(tzinfo=start.tzinfo)
        looks = islice(CronSim(expression(cron), first_pass, reverse=True), MAX_LOOKS)
        before = (t.timestamp() for t in looks)
        latest = max(latest, next((t for t in before if t <= now), latest))
    return latest

def next_slot(cron: str, tz: str, now: float) -> float:
    """The first slot of `cron` in `tz` after `now` (cronsim, started in the second pass of a repeated hour,
    may give the first pass's: those are skipped)."""
    from cronsim import CronSim

    slots = CronSim(expression(cron), datetime.fromtimestamp(now, zone(tz)))
    later = (t.timestamp() for t in islice(slots, MAX_LOOKS))
    return next((t for t in later if t > now), now + 60.0)
