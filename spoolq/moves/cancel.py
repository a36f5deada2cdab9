"""Cancelling: a job that has not started goes to dead/ with last_error "cancelled" and is never
retried; a running one is left alone unless asked to kill it, and then its worker, on whatever
host, kills its process group and records the attempt as cancelled, dead.

A job in pending/ is taken the way a worker takes it, by one rename of its file, which a worker's
claim may win instead: then the job has started, and the canceller says so. The canceller is an
owner of its own for the moment (role "canceller", processing/<c>/): the cancelled content is
written there as ``.next.dead.…`` first, the pending file is renamed to ``.taken.dead.…`` beside it
(the step that decides), and the ``.next.`` file is renamed into dead/ (handoff.py). Killed at any
point, it leaves an owner directory whose owner is gone, which recovery completes or voids like
any other: a cancel either happened or did not.

A running job: the canceller leaves ``processing/<worker>/.cancel.<id>``. Its worker looks for it
each time it checks on its job (every half second), kills the job and records the attempt as
cancelled; a rescuer that finds the mark beside a job it recovers records it so too. Then the kill
is not confirmed: the worker was out of reach (a host cut off from the spool), and it is its own
lease guard that stops the job, before the lease the rescuer waited out ends (heartbeat.py). The
canceller says which it was, and by when the job was stopped.
"""

from __future__ import annotations

import enum
import os
import time
from dataclasses import dataclass

from ..format.states import FINISHED, State
from ..format import layout, modes
from ..system import fsio
from ..format.errors import InvalidJob, JobNotFound, LostOwnership
from ..format.job import Job
from ..store.owners import OwnerDir, Owners
from ..store.store import Store
from .dependencies import Dependencies
from .handoff import Handoff
from ..reading.views import Views

CANCELLED = "cancelled"  # the last_error of a cancelled job
LOOKS = 5  # a job may move between a look and a take: this many looks at most


class Outcome(enum.Enum):
    CANCELLED = "cancelled"  # it had not started: now dead
    KILLED = "killed"  # it was running: its worker killed it, now dead
    REQUESTED = "requested"  # it is running: its worker has not acted on the request yet
    RUNNING = "running"  # it is running, and no kill was asked for: left alone
    RECORDED = "recorded"  # it was running on a worker out of reach: a rescuer recorded it cancelled
    FINISHED = "finished"  # already done or dead (or it finished before it could be killed)
    UNKNOWN = "unknown"  # no such job
    BUSY = "busy"  # a dropped file not yet adopted, or one that kept moving: try again


@dataclass
class Result:
    job_id: str
    outcome: Outcome
    state: str | None  # where the job is now
    host: str | None = None  # RECORDED: the host of the worker that was out of reach
    stopped_by: float | None = None  # RECORDED: when, at the latest (this host's clock), that worker stopped it

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.CANCELLED, Outcome.KILLED, Outcome.REQUESTED, Outcome.RECORDED)


def mark_name(job_id: str) -> str:
    return f"{layout.CANCEL_PREFIX}{job_id}"


def attempt_token(job: Job) -> bytes:
    """What a mark holds: the attempt it is for (a job requeued and claimed by the same worker
    again must not find an old request for an earlier run)."""
    return f"{job.seq} {job.running_attempt}\n".encode()


class KillRequest:
    """Whether `cancel --kill` asked to kill the attempt at `path` (a job file in an owner's
    directory): one stat each time its worker or rescuer looks, a read only when a mark is there."""

    def __init__(self, path: str, job: Job):
        self.mark = os.path.join(os.path.dirname(path), mark_name(job.id))
        self.token = attempt_token(job)

    def asked(self) -> bool:
        if not os.path.lexists(self.mark):
            return False
        try:
            data, st = fsio.read_regular(self.mark, 256)
        except (OSError, ValueError):
            return False
        return data == self.token and not modes.why_untrusted(st, shared=True)  # only spoolq writes marks

    def withdraw(self) -> None:
        fsio.unlink_quietly(self.mark)


class Holder:
    """The worker asked to kill a job, as the canceller saw it while waiting: its host and the
    end of the last lease it renewed."""

    def __init__(self, owner: str):
        self.owner = owner
        self.host: str | None = None
        self.lease_ends: float | None = None  # on the file system's clock

    def look(self, owners: Owners) -> None:
        reg = owners.registration(self.owner)
        if reg is not None and reg.record:
            self.host = str(reg.record.get("host", "?"))
            self.lease_ends = reg.lease_ends(owners.store.config.lease_timeout)

    def rescued(self, owners: Owners) -> bool:
        """Did a rescuer take its jobs (its directory fenced: ``<rescuer>~<owner>``), rather than
        the worker record the kill itself?"""
        return any(self.owner in OwnerDir(entry).chain[1:] for entry in fsio.listdir(owners.layout.processing))

    def stopped_by(self, store: Store) -> float | None:
        """When its own lease guard had killed the job at the latest, on this host's clock."""
        return None if self.lease_ends is None else self.lease_ends + store.clock() - store.fs_clock()


class Canceller:
    def __init__(self, store: Store, owners: Owners, views: Views, takes: Handoff, deps: Dependencies):
        self.store = store
        self.layout = store.layout
        self.owners = owners
        self.views = views
        self.takes = takes
        self.deps = deps
        self._requests: dict[str, KillRequest] = {}  # made by --kill, withdrawn if the job ends first
        self._holders: dict[str, Holder] = {}  # job id -> the worker asked to kill it, as last seen

    def cancel(self, job_ids: list[str], *, kill: bool = False, wait: float = 30.0) -> list[Result]:
        """Cancel each job; with `kill`, ask running ones' workers to kill them, and wait up to
        `wait` seconds for them to do so."""
        owner = self.owners.register("canceller")
        try:
            results = [self._cancel_one(job_id, owner, kill) for job_id in job_ids]
        finally:
            self.owners.unregister(owner)
        asked = [r for r in results if r.outcome is Outcome.REQUESTED]
        if asked:
            self._wait_for_kills(asked, time.monotonic() + wait)
        return results

    def _cancel_one(self, job_id: str, owner: str, kill: bool) -> Result:
        for _ in range(LOOKS):
            try:
                view = self.views.find(job_id)
            except JobNotFound:
                return Result(job_id, Outcome.UNKNOWN, None)
            if view.state in FINISHED:
                return Result(job_id, Outcome.FINISHED, view.state)
            if view.state == State.PROCESSING:
                if not kill:
                    return Result(job_id, Outcome.RUNNING, view.state)
                if self._ask_to_kill(view.path):
                    return Result(job_id, Outcome.REQUESTED, view.state)
                continue  # it left processing/ meanwhile: look again
            if view.state != State.WAITING and layout.parse_pending(os.path.basename(view.path)) is None:
                return Result(job_id, Outcome.BUSY, view.state)  # a dropped file a worker is adopting
            taken = self._take_pending(view.path, owner)
            if taken is not None:
                if view.state == State.WAITING:
                    self.deps.forget(job_id, taken.after)  # it waits no more: its edges go
                return Result(job_id, Outcome.CANCELLED, State.DEAD)
        return Result(job_id, Outcome.BUSY, None)

    def _take_pending(self, path: str, owner: str) -> Job | None:
        """Move a pending job to dead/, cancelled: the job as it was. None if it was claimed (or
        cancelled) first."""
        try:
            job, _ = self.store.read_job(path, now=self.store.now(), trusted_only=True)
        except (FileNotFoundError, InvalidJob):
            return None  # gone, or a file the next claim quarantines: not a job to cancel
        job = job.copy()
        job.last_error, job.exit_code, job.updated_at = CANCELLED, None, self.store.now()
        directory = self.layout.owned(owner)
        try:
            # RACE: a worker may claim the same file at this moment; its rename or ours wins.
            moving = self.takes.take_with(path, job, State.DEAD, into=directory)
        except LostOwnership:
            return None
        # Into dead/, durably; what waits for it dies with it (finishing.py).
        self.deps.finishing.complete(directory, moving, job, owner, durable=True)
        return job

    def _ask_to_kill(self, path: str) -> bool:
        """Leave the mark beside the running job. False if the job is no longer there."""
        try:
            job, _ = self.store.read_job(path, now=self.store.now(), trusted_only=True)
        except (FileNotFoundError, InvalidJob):
            return False  # gone on (or a file its claim quarantines): look again
        request = KillRequest(path, job)
        try:
            self.store.write_file(request.mark, request.token, durable=False)
        except FileExistsError:
            if not request.asked():  # left for an earlier run of the job (it ended first): ours replaces it
                tmp = self.store.temp_path(os.path.dirname(path))
                self.store.write_file(tmp, request.token, durable=False)
                os.replace(tmp, request.mark)
        except FileNotFoundError:
            return False  # its owner's directory is gone: the job moved on
        self._requests[job.id] = request
        self._holders[job.id] = holder = Holder(OwnerDir(os.path.basename(os.path.dirname(path))).holder)
        holder.look(self.owners)
        if os.path.lexists(path):
            return True
        # RACE: it finished (or was recovered) between the look and the mark: the mark is void.
        request.withdraw()
        return False

    def _wait_for_kills(self, asked: list[Result], deadline: float) -> None:
        pause = 0.05
        while True:
            for result in asked:
                if result.outcome is not Outcome.REQUESTED:
                    continue
                try:
                    view = self.views.find(result.job_id)
                except JobNotFound:
                    continue
                holder = self._holders.get(result.job_id)
                if view.state == State.PROCESSING:
                    if holder is not None:
                        holder.look(self.owners)
                    continue
                result.state = view.state
                cancelled = view.job is not None and view.job.last_error == CANCELLED
                result.outcome = Outcome.KILLED if cancelled else Outcome.FINISHED
                if cancelled and holder is not None and holder.rescued(self.owners):
                    result.outcome, result.host = Outcome.RECORDED, holder.host
                    result.stopped_by = holder.stopped_by(self.store)
                if not cancelled and result.job_id in self._requests:
                    self._requests[result.job_id].withdraw()  # it ended before its worker looked
            if all(r.outcome is not Outcome.REQUESTED for r in asked) or time.monotonic() >= deadline:
                return
            time.sleep(pause)
            pause = min(pause * 2, 0.5)
