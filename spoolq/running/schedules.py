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
LATE_LIMIT late (catch-up "none"). Cron expressions are read and evaluated, in the schedule's
time zone (default UTC), by cron.py, as Debian's cron reads them.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from . import cron, fired_slots
from .cron import expression, zone
from ..system import fsio
from ..format.errors import InvalidJob, JobNotFound, SpoolError
from ..format.job import iso
from ..format.states import FINISHED

if TYPE_CHECKING:
    from ..spool import Spool
    from ..store.owners import WorkerInfo

NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]{0,99}")  # with ".<slot>" still a valid job id
CATCH_UP = ("last", "none")
OVERLAP = ("allow", "forbid")  # forbid: no slot fires while the last slot's job is unfinished
# What a worker of this version honours in a schedule and an older one ignores; a worker's
# registration names them ("honours"), so that a schedule that needs one can say who would not.
HONOURED = ("overlap",)
LATE_LIMIT = 60.0  # seconds: with catch-up "none", a slot found later than this is skipped
MAX_SCHEDULE_BYTES = 256 * 1024


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidJob(f"invalid schedule name {str(name)[:80]!r}: use 1-100 characters of A-Z a-z 0-9 _ -, "
                         "not starting with '-'")
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
    overlap: str = "allow"
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
        if self.overlap not in OVERLAP:
            raise InvalidJob(f"invalid overlap {self.overlap!r}: use one of {', '.join(OVERLAP)}")
        if not isinstance(self.job, dict) or "id" in self.job:
            raise InvalidJob("a schedule's job is a JSON object without an id (each slot's job gets its own)")
        if "after" in self.job:  # a slot would wait for jobs that ran once, or that the spool has purged
            raise InvalidJob("a schedule's job cannot wait for others (after): give it a schedule of its own")
        return self

    def latest_slot(self, now: float) -> float:
        """The latest slot at or before `now` (epoch seconds)."""
        return cron.latest_slot(self.cron, self.tz, now)

    def next_slot(self, now: float) -> float:
        """The first slot after `now`."""
        return cron.next_slot(self.cron, self.tz, now)

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
        known = {k: raw.pop(k) for k in ("name", "cron", "job", "tz", "catch_up", "overlap", "created_at", "paused",
                                          "active_from")
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
    held: bool = False  # not fired yet: the last slot's job is unfinished (overlap "forbid")
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
                "overlap": schedule.overlap,
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
        if schedule.overlap == "forbid" and newest is not None and self._unfinished(newest.job_id):
            # RACE: that job may finish just after this look: the slot waits for the next one. A
            # job requeued after it finished runs beside the slot's: a requeue is asked for by hand.
            return Fired(schedule.name, slot, job_id, False, held=True)
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

    def _unfinished(self, job_id: str) -> bool:
        """Is the job of this id there and not done or dead (pending, scheduled, waiting, running)?"""
        try:
            return self.spool.find(job_id).state not in FINISHED
        except JobNotFound:
            return False  # purged: finished long ago

    def _known(self, job_id: str) -> bool:
        """Was a job of this id published (its id marker stays until it is purged)?"""
        return os.path.lexists(self.spool.layout.id_marker(job_id))

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, f"{name}.json")


def ignored_by(schedule: Schedule, workers: list[WorkerInfo]) -> list[WorkerInfo]:
    """Those of the live `workers` that would fire `schedule` ignoring part of it: an older
    spoolq's, whose registration does not say it honours what the schedule needs (HONOURED)."""
    needs = {"overlap"} if schedule.overlap != "allow" else set()
    return [w for w in workers if not needs <= set(w.extra.get("honours") or ())]
