"""Periodic schedules: a cron expression and a job template, fired by the running workers.

A schedule is ``schedules/<name>.json`` (published by rename). Each slot it reaches becomes one
job whose id is ``<name>.<slot in UTC as YYYYMMDDTHHMMZ>``. Whoever creates the slot's fired
marker (fired_slots.py: exclusive, durable, before the job is published) fires it; no slot is fired
while a marker of it or of a later slot exists (fired_slots.HORIZON says how far ahead a later one
counts). So however many workers on however many hosts, their clocks minutes apart, find a slot
due, it fires once, and never again after its job is purged. No leader, no lock.

Only the latest slot at or before now is ever considered (cron expressions are evaluated
backwards from now): firing costs nothing proportional to the slots missed. A slot missed while
no worker ran is fired once when one starts (catch-up "last"), or skipped if it is more than
LATE_LIMIT late (catch-up "none"). Cron expressions are evaluated by cronsim, which follows
Debian's cron, in the schedule's time zone (default UTC): an expression of a fixed hour and
minute fires once at the first of a repeated wall-clock time, and a time skipped by the clock's
jump forward fires at the first minute after the jump; the others fire at every instant they name.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import islice
from typing import TYPE_CHECKING, Any

from . import fired_slots
from ..system import fsio
from ..format.errors import InvalidJob, JobNotFound, SpoolError
from ..format.job import iso

if TYPE_CHECKING:
    from ..spool import Spool

NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]{0,99}")  # with ".<slot>" still a valid job id
ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
           "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
UNKNOWN_ALIASES = {  # what other crons take that a slot in time cannot be, and what to use instead
    "@reboot": "; a schedule fires at times, not when a host starts: enqueue that job from the unit that "
               "starts the workers (ExecStartPost=)",
    "@every": "; an interval is a step in a field, as in '*/5 * * * *' (every 5 minutes)"}
CATCH_UP = ("last", "none")
LATE_LIMIT = 60.0  # seconds: with catch-up "none", a slot found later than this is skipped
MAX_SCHEDULE_BYTES = 256 * 1024
STEP = timedelta(microseconds=1)
MAX_LOOKS = 200  # slots iterated past one that cronsim gives on the wrong side of now (a repeated hour)


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
        raise InvalidJob(f"unknown time zone {name!r} (an IANA name, like UTC or Europe/Berlin)") from None


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


def slot_id(name: str, slot: float) -> str:
    return f"{name}.{fired_slots.stamp(slot)}"


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
        latest = next(CronSim(expression(self.cron), start, reverse=True)).timestamp()
        if start.fold:
            # The second pass of a repeated hour: cronsim reads a fixed-time expression on the wall
            # clock and gives the first pass's instants (fold 0), which are past although their wall
            # times are later than now's. Look back from now's wall time on the first pass's offset,
            # past what is still to come.
            ahead = start.replace(fold=0).utcoffset() - start.utcoffset()
            first_pass = (start.replace(tzinfo=None) + ahead).replace(tzinfo=start.tzinfo)
            looks = islice(CronSim(expression(self.cron), first_pass, reverse=True), MAX_LOOKS)
            before = (t.timestamp() for t in looks)
            latest = max(latest, next((t for t in before if t <= now), latest))
        return latest

    def next_slot(self, now: float) -> float:
        """The first slot after `now` (cronsim, started in the second pass of a repeated hour,
        may give the first pass's: those are skipped)."""
        from cronsim import CronSim

        slots = CronSim(expression(self.cron), datetime.fromtimestamp(now, zone(self.tz)))
        later = (t.timestamp() for t in islice(slots, MAX_LOOKS))
        return next((t for t in later if t > now), now + 60.0)

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
    note: str | None = None  # what else a worker's log should say (an earlier slot a crash left unpublished)


class Schedules:
    """The schedules of one spool: kept, listed, and fired."""

    def __init__(self, spool: Spool):
        self.spool = spool
        self.directory = spool.layout.dir("schedules")
        self._cache: tuple[tuple[int, int] | None, list[Schedule]] = (None, [])
        self.fired = fired_slots.FiredSlots(spool.store, self.directory)

    # ---- kept --------------------------------------------------------------------------------

    def add(self, schedule: Schedule, *, replace: bool = False) -> Schedule:
        schedule.check()
        self.spool.make_job({**schedule.job, "id": slot_id(schedule.name, 0)})  # the template must make a job
        path = self._path(schedule.name)
        if os.path.lexists(path) and not replace:
            raise SpoolError(f"schedule {schedule.name!r} exists (schedule rm it first, or --replace it)")
        if replace:
            self._carry_over(schedule)
        self.spool.store.make_dir(self.directory)
        if not os.path.lexists(path):
            # RACE: a worker that read the removed schedule of this name just before its `rm` may
            # have marked a slot since: a new schedule starts with no slot fired.
            self.fired.remove(schedule.name)
        self.spool.store.publish(path, schedule.to_json())
        return schedule

    def _carry_over(self, schedule: Schedule) -> None:
        """What a replaced schedule keeps of the one it replaces: paused stays paused, and the
        same times (expression and zone) keep its start, so that a slot still due (a catch-up
        after no worker ran) stays due: re-adding a schedule unchanged, as a provisioning script
        does on every run, swallows no slot. New times start now, firing no past slot of theirs."""
        try:
            old = self.get(schedule.name)
        except SpoolError:
            return  # none, or one that does not read as a schedule: replaced as given
        schedule.paused = old.paused
        if (expression(old.cron), old.tz) == (expression(schedule.cron), schedule.tz):
            schedule.created_at, schedule.active_from = old.created_at, old.active_from

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
        self.fired.remove(name)  # the slots it fired go with it: one added again under its name starts afresh

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
        """The last slot fired (or being fired) and its job's id, if any."""
        newest = self.fired.newest(name)
        return None if newest is None else (newest.slot, newest.job_id)

    def row(self, schedule: Schedule, now: float, *, working: bool) -> dict[str, Any]:
        """What `schedule list` and the dashboard say of a schedule: its next and last slot, the
        last slot's job and its state now (`purged` once it is gone), and whether it fires at all
        (only workers fire schedules: `working`, whether any runs)."""
        last = self.last(schedule.name)
        return {"name": schedule.name, "cron": schedule.cron, "tz": schedule.tz, "catch_up": schedule.catch_up,
                "paused": schedule.paused, "next": None if schedule.paused else iso(schedule.next_slot(now)),
                "fires": working and not schedule.paused,
                "last": iso(last[0]) if last else None, "last_job": last[1] if last else None,
                "last_state": self._state_of(last[1]) if last else None, "job": schedule.job}

    def _state_of(self, job_id: str) -> str:
        try:
            return self.spool.find(job_id).state
        except JobNotFound:
            return "purged"

    # ---- fired -------------------------------------------------------------------------------

    def fire_now(self, name: str, now: float) -> Fired:
        """Its job now, as the slot of the current minute (by that slot's id): pressed twice in a
        minute, or in a minute whose slot fired already, it makes no second job, and when the cron
        expression names this minute too, the worker that fires it finds the job there and makes
        none. It marks nothing: a marker would count as a later slot fired and pass over an
        earlier one still due (catch-up), and the slot's own marker is its firer's to make."""
        schedule = self.get(name)
        slot = now - now % 60
        newest = self.fired.newest(name)
        if newest is not None and newest.slot >= slot:
            return Fired(name, slot, newest.job_id, False)  # fired this minute (or later) already
        job_id = slot_id(name, slot)
        # RACE: a worker firing this very slot at once marks it and publishes the same id: the
        # publish makes one job of the two (skip_existing), and its settle marks it fired.
        return Fired(name, slot, job_id, self._make(schedule, slot, job_id))

    def fire_due(self, now: float, fs_now: float | None = None) -> list[Fired]:
        """Fire every schedule's latest due slot that was not fired yet (the clock is passed in;
        `fs_now`, the file system's, which prunes markers, is read when a slot fires if not).
        A schedule whose job cannot be made is said in its Fired's `error`; the others fire."""
        out = []
        for schedule in self.all():
            try:
                result = self._fire(schedule, now, fs_now)
            except SpoolError as e:
                result = Fired(schedule.name, 0.0, "", False, error=str(e))
            if result is not None:
                out.append(result)
        return out

    def next_due(self, now: float) -> float | None:
        """When the next slot of any running schedule comes (for a worker's sleep)."""
        slots = [s.next_slot(now) for s in self.all() if not s.paused]
        return min(slots) if slots else None

    def _fire(self, schedule: Schedule, now: float, fs_now: float | None) -> Fired | None:
        if schedule.paused:
            return None
        slot = schedule.latest_slot(now)
        if slot < max(schedule.created_at, schedule.active_from):
            return None
        horizon = now + fired_slots.HORIZON  # later markers past it are from a clock that is wrong by hours
        newest = self.fired.newest(schedule.name, until=horizon)
        if newest is not None and newest.slot > slot:
            return None  # a later slot fired (by a clock ahead of ours, or before ours stepped back)
        if newest is not None and newest.slot == slot:
            return None if newest.state == fired_slots.FIRED else self._recover(schedule, slot, now)
        job_id = slot_id(schedule.name, slot)
        if schedule.catch_up == "none" and now - slot > LATE_LIMIT:
            # Not marked: a host whose clock is behind may still find it in time, and fire it.
            return Fired(schedule.name, slot, job_id, False, skipped=True)
        # RACE: every worker on every host may get here for the same slot at once: the marker is the
        # arbiter (one rename creates it; the others find it there and fire nothing).
        if not self.fired.mark(schedule.name, slot, job_id):
            return None
        # RACE: a host ahead of us may have marked a later slot while we listed. Looked at again
        # now that ours exists: if a later one is there, our slot is past and stays unpublished.
        later = self.fired.newest(schedule.name, until=horizon)
        if later is not None and later.slot > slot:
            self.fired.unmark(schedule.name, slot)
            return None
        made = self._publish(schedule, slot, job_id)
        if newest is not None and newest.state == fired_slots.MARKED and not self._known(newest.job_id):
            made.note = f"slot {newest.job_id} was marked fired but its job never published (a crash): superseded"
        self.fired.prune(schedule.name, self.spool.store.fs_clock() if fs_now is None else fs_now)
        return made

    def _recover(self, schedule: Schedule, slot: float, now: float) -> Fired:
        """The latest slot is marked but perhaps not published: its firer crashed between the two,
        or is between them now. Publish it (again): its id makes it once either way. Under catch-up
        "none" a slot found this late is skipped, as it would have been unmarked."""
        job_id = slot_id(schedule.name, slot)
        if schedule.catch_up == "none" and now - slot > LATE_LIMIT:
            return Fired(schedule.name, slot, job_id, False, skipped=True)
        return self._publish(schedule, slot, job_id)

    def _publish(self, schedule: Schedule, slot: float, job_id: str) -> Fired:
        """The slot's job, then its marker says it is published."""
        created = self._make(schedule, slot, job_id)
        self.fired.settle(schedule.name, slot, job_id)
        return Fired(schedule.name, slot, job_id, created)

    def _make(self, schedule: Schedule, slot: float, job_id: str) -> bool:
        """Publish the slot's job under `job_id`, unless a job of that id exists: whether it made it."""
        spec = {**schedule.job, "id": job_id, "schedule": schedule.name, "slot": iso(slot)}
        return bool(self.spool.enqueue_many([spec], skip_existing=set()))

    def _known(self, job_id: str) -> bool:
        """Was a job of this id published (its id marker stays until it is purged)?"""
        return os.path.lexists(self.spool.layout.id_marker(job_id))

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, f"{name}.json")
