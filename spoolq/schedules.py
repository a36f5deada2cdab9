"""Periodic schedules: a cron expression and a job template, fired by the running workers.

A schedule is ``schedules/<name>.json`` (published by rename). Each slot it reaches becomes one
job whose id is ``<name>.<slot in UTC as YYYYMMDDTHHMMZ>``: ids are unique across the spool, so
however many workers on however many hosts find the slot due, one enqueue creates the job and
the others find its id taken. No leader, no lock. ``schedules/<name>.last`` says the last slot
fired ("<epoch> <job id>"), so that a slot whose job was purged long ago is never fired again
and `schedule list` can say it; it is only a hint for slots whose ids still exist.

Only the latest slot at or before now is ever considered (cron expressions are evaluated
backwards from now): firing costs nothing proportional to the slots missed. A slot missed while
no worker ran is fired once when one starts (catch-up "last"), or skipped if it is more than
LATE_LIMIT late (catch-up "none"). Cron expressions are evaluated by cronsim, which follows
Debian's cron, daylight-saving quirks included, in the schedule's time zone (default UTC).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from . import fsio
from .errors import InvalidJob, JobNotFound, SpoolError
from .job import iso

if TYPE_CHECKING:
    from .spool import Spool

NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]{0,99}")  # with ".<slot>" still a valid job id
ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
           "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
CATCH_UP = ("last", "none")
LATE_LIMIT = 60.0  # seconds: with catch-up "none", a slot found later than this is skipped
MAX_SCHEDULE_BYTES = 256 * 1024
STEP = timedelta(microseconds=1)
SKEW = 60.0  # seconds: a .last further in the future than this came from a clock that is ahead
MAX_EPOCH = 9_999_999_999.0


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidJob(f"invalid schedule name {str(name)[:80]!r}: use 1-100 characters of A-Z a-z 0-9 _ -, "
                         "not starting with '-'")
    return name


def expression(cron: str) -> str:
    """The five-field form of `cron` (an @alias translated); InvalidJob naming the bad field."""
    from cronsim import CronSim, CronSimError

    if not isinstance(cron, str):
        raise InvalidJob("invalid cron expression: not a string")
    text = " ".join(cron.split())
    text = ALIASES.get(text.lower(), text)
    if text.startswith("@"):
        raise InvalidJob(f"invalid cron expression {cron!r}: unknown alias (known: {', '.join(ALIASES)})")
    if len(text.split()) != 5:  # cronsim would take a sixth, seconds field: slots are minutes here
        quote = "; quote the whole expression, as in '15 2 * * *'" if len(text.split()) == 1 else ""
        raise InvalidJob(f"invalid cron expression {cron!r}: wrong number of fields "
                         f"(fields: minute hour day-of-month month day-of-week){quote}")
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
        raise InvalidJob(f"unknown time zone {name!r} (an IANA name, like UTC or Europe/Berlin)") from None


def slot_id(name: str, slot: float) -> str:
    return f"{name}.{datetime.fromtimestamp(slot, timezone.utc).strftime('%Y%m%dT%H%MZ')}"


@dataclass
class Schedule:
    name: str
    cron: str
    job: dict[str, Any]  # the template: any enqueue fields but id
    tz: str = "UTC"
    catch_up: str = "last"
    created_at: float = 0.0
    paused: bool = False
    active_from: float = 0.0  # no slot before it fires: its creation, or when it was last resumed
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> Schedule:
        check_name(self.name)
        expression(self.cron)
        zone(self.tz)
        if self.catch_up not in CATCH_UP:
            raise InvalidJob(f"invalid catch-up {self.catch_up!r}: use one of {', '.join(CATCH_UP)}")
        if not isinstance(self.job, dict) or "id" in self.job:
            raise InvalidJob("a schedule's job is a JSON object without an id (each slot's job gets its own)")
        if "after" in self.job:  # a slot would wait for jobs that ran once, or that the spool has purged
            raise InvalidJob("a schedule's job cannot wait for others (after): give it a schedule of its own")
        return self

    def latest_slot(self, now: float) -> float:
        """The latest slot at or before `now` (epoch seconds)."""
        from cronsim import CronSim

        # From the instant just after now, made by fromtimestamp (which keeps the fold of a repeated
        # hour at the end of daylight saving time; adding a timedelta would drop it, an hour back).
        start = datetime.fromtimestamp(now + STEP.total_seconds(), zone(self.tz))
        return next(CronSim(expression(self.cron), start, reverse=True)).timestamp()

    def next_slot(self, now: float) -> float:
        """The first slot after `now`."""
        from cronsim import CronSim

        return next(CronSim(expression(self.cron), datetime.fromtimestamp(now, zone(self.tz)))).timestamp()

    def to_json(self) -> bytes:
        data = {**self.extra, **{k: v for k, v in asdict(self).items() if k != "extra"}}
        return (json.dumps(data, ensure_ascii=False, indent=1) + "\n").encode()

    @staticmethod
    def from_json(data: bytes) -> Schedule:
        try:
            raw = json.loads(data)
        except (ValueError, RecursionError) as e:
            raise InvalidJob(f"not a schedule: {str(e)[:100]}") from None
        if not isinstance(raw, dict):
            raise InvalidJob("not a schedule: not a JSON object")
        known = {k: raw.pop(k) for k in ("name", "cron", "job", "tz", "catch_up", "created_at", "paused", "active_from")
                 if k in raw}
        try:
            schedule = Schedule(**known, extra=raw)
        except TypeError as e:
            raise InvalidJob(f"not a schedule: {e}") from None
        times = (schedule.created_at, schedule.active_from)
        if not all(type(t) in (int, float) and t == t for t in times) or not isinstance(schedule.paused, bool):
            raise InvalidJob("not a schedule: created_at, active_from or paused of the wrong type")
        return schedule.check()


@dataclass
class Fired:
    name: str
    slot: float
    job_id: str
    created: bool  # False: the slot's job existed already (another worker), or it was skipped
    skipped: bool = False
    error: str | None = None  # its job could not be made


class Schedules:
    """The schedules of one spool: kept, listed, and fired."""

    def __init__(self, spool: Spool):
        self.spool = spool
        self.directory = spool.layout.dir("schedules")
        self._cache: tuple[tuple[int, int] | None, list[Schedule]] = (None, [])

    # ---- kept --------------------------------------------------------------------------------

    def add(self, schedule: Schedule, *, replace: bool = False) -> Schedule:
        schedule.check()
        self.spool.make_job({**schedule.job, "id": slot_id(schedule.name, 0)})  # the template must make a job
        path = self._path(schedule.name)
        if os.path.lexists(path) and not replace:
            raise SpoolError(f"schedule {schedule.name!r} exists (schedule rm it first, or --replace it)")
        if replace:
            try:
                schedule.paused = self.get(schedule.name).paused  # a paused schedule stays paused
            except SpoolError:
                pass  # none, or one that does not read as a schedule: replaced as given
        self.spool.store.make_dir(self.directory)
        self.spool.store.publish(path, schedule.to_json())
        return schedule

    def get(self, name: str) -> Schedule:
        check_name(name)
        try:
            data, st = fsio.read_regular(self._path(name), MAX_SCHEDULE_BYTES)
        except FileNotFoundError:
            raise JobNotFound(f"no schedule {name!r}") from None
        except (OSError, ValueError) as e:
            raise SpoolError(f"cannot read schedule {name!r}: {getattr(e, 'strerror', None) or e}") from None
        untrusted = self.spool.store.why_untrusted(st)  # its jobs would run as whoever fires them
        if untrusted:
            raise SpoolError(f"schedule {name!r} {untrusted}: only the spool's owner or a trusted uid may write it")
        return Schedule.from_json(data)

    def remove(self, name: str) -> None:
        """Remove it, whatever its file holds (a file that does not read as a schedule too)."""
        check_name(name)
        if not os.path.lexists(self._path(name)):
            raise JobNotFound(f"no schedule {name!r}")
        fsio.unlink_quietly(self._path(name))
        fsio.unlink_quietly(self._last_path(name))

    def set_paused(self, name: str, paused: bool, *, now: float) -> Schedule:
        """Pause, or resume from the next slot: the slots passed while it was paused never fire."""
        with self.spool.store.locked("config"):  # a read-modify-write: one at a time
            schedule = self.get(name)
            if schedule.paused and not paused:
                schedule.active_from = now
            schedule.paused = paused
            self.spool.store.publish(self._path(name), schedule.to_json())
        return schedule

    def stamp(self) -> tuple[int, int] | None:
        """What changes when a schedule is added, changed, removed or fired (all by rename or
        unlink in the directory): one stat."""
        try:
            st = os.stat(self.directory)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    def all(self) -> list[Schedule]:
        """Every readable schedule, by name (cached while the directory is unchanged)."""
        stamp = self.stamp()
        if stamp is None:
            return []
        if stamp == self._cache[0]:
            return self._cache[1]
        found = []
        for entry in sorted(fsio.listdir(self.directory)):
            if entry.endswith(".json") and not entry.startswith("."):
                try:
                    found.append(self.get(entry[:-5]))
                except SpoolError:
                    continue  # a hand-made file that is not a schedule: `schedule list` says nothing of it
        self._cache = (stamp, found)
        return found

    def last(self, name: str) -> tuple[float, str] | None:
        """The last slot fired and its job's id, if any."""
        try:
            data, _ = fsio.read_regular(self._last_path(name), 512)
            epoch, job_id = data.decode().split()
            slot = float(epoch)
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        return (slot, job_id) if 0 <= slot < MAX_EPOCH else None  # not inf, nan or past the year 2286

    # ---- fired -------------------------------------------------------------------------------

    def fire_due(self, now: float) -> list[Fired]:
        """Fire every schedule's latest due slot that was not fired yet (the clock is passed in).
        A schedule whose job cannot be made is said in its Fired's `error`; the others fire."""
        out = []
        for schedule in self.all():
            try:
                fired = self._fire(schedule, now)
            except SpoolError as e:
                fired = Fired(schedule.name, 0.0, "", False, error=str(e))
            if fired is not None:
                out.append(fired)
        return out

    def next_due(self, now: float) -> float | None:
        """When the next slot of any running schedule comes (for a worker's sleep)."""
        slots = [s.next_slot(now) for s in self.all() if not s.paused]
        return min(slots) if slots else None

    def _fire(self, schedule: Schedule, now: float) -> Fired | None:
        if schedule.paused:
            return None
        slot = schedule.latest_slot(now)
        last = self.last(schedule.name)
        if last is not None and last[0] > now + SKEW:
            last = None  # written by a host whose clock is ahead: the ids alone decide (they always can)
        if slot < max(schedule.created_at, schedule.active_from) or (last is not None and slot <= last[0]):
            return None
        job_id = slot_id(schedule.name, slot)
        if schedule.catch_up == "none" and now - slot > LATE_LIMIT:
            # Not recorded: a host whose clock is behind may still find it in time, and fire it.
            return Fired(schedule.name, slot, job_id, False, skipped=True)
        taken: set[str] = set()
        # RACE: every worker on every host may get here for the same slot at once: the id is the
        # arbiter (one publish creates it; the others find it taken and create nothing).
        spec = {**schedule.job, "id": job_id, "schedule": schedule.name, "slot": iso(slot)}
        created = bool(self.spool.enqueue_many([spec], skip_existing=taken))
        self._remember(schedule.name, slot, job_id)
        return Fired(schedule.name, slot, job_id, created)

    def _remember(self, name: str, slot: float, job_id: str) -> None:
        """schedules/<name>.last, moved forward only (a worker that fired an older slot late does
        not move it back: it reads it again just before)."""
        last = self.last(name)
        if last is not None and last[0] >= slot:
            return
        self.spool.store.publish(self._last_path(name), f"{slot:.0f} {job_id}\n".encode(), durable=False)

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, f"{name}.json")

    def _last_path(self, name: str) -> str:
        return os.path.join(self.directory, f"{name}.last")
