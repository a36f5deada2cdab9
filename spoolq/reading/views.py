"""Views: the read side. Find one job, list jobs, count them; never renames or writes a job file
(and never imports transitions)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from ..format.states import FINISHED, State
from ..format import job, layout
from ..store import output, shards
from ..system import fsio
from .counts import CountsByQueue, JobCounter, Counts
from .places import FinishedOrder, Listed, Place, finished_at
from ..format.errors import InvalidJob, JobNotFound
from ..format.job import Job
from ..store.access import unsearchable
from ..store.owners import Owners
from ..store.quarantine import Quarantine
from ..store.store import Store


@dataclass
class JobView:
    """A job as a reader sees it: where it is and what its file says."""

    id: str
    state: str
    job: Job | None
    path: str
    reason: str | None = None  # quarantined files: why
    owner: str | None = None
    changed_at: float | None = None  # ctime of the file: when it last moved (finished_at, for done and dead)
    last_attempt: output.LastAttempt = output.LastAttempt()  # its start, length and host, from the log

    def to_dict(self) -> dict[str, Any]:
        if self.job is None:
            return {"id": self.id, "command": None, "state": self.state, "attempts": 0,
                    "max_retries": None, "priority": None, "created_at": None,
                    "updated_at": None, "run_at": None, "exit_code": None,
                    "last_error": self.reason, "quarantined": True}
        out = self.job.to_dict()
        out.pop("seq", None)
        out["queue"] = self.job.queue  # always shown, though a file of the default queue may not say it
        out["state"] = self.state
        started, seconds, host = self.last_attempt.started, self.last_attempt.seconds, self.last_attempt.host
        finished = shown_finish(self.changed_at, started, seconds) if self.state in FINISHED else None
        out["started_at"] = job.iso(started)
        out["finished_at"] = job.iso(finished)
        out["duration"] = seconds
        out["host"] = host
        if self.state == State.PROCESSING:
            out["attempts"] = self.job.running_attempt  # the running attempt counts from its claim
            out["worker"] = self.owner
        elif self.state == State.DONE:
            # A success is recorded by the move into done/ alone (no rewrite, no fsync): the file
            # holds the attempts before it.
            out["attempts"] = self.job.running_attempt
            out["exit_code"] = 0
            out["updated_at"] = job.iso(finished) if finished else out["updated_at"]
        return {"id": out.pop("id"), "command": out.pop("command"), "state": out.pop("state"), **out}


COARSE_CLOCK = 1.0  # seconds: at most this far may a move's ctime come before its attempt's end


def shown_finish(changed_at: float | None, started: float | None, seconds: float | None) -> float | None:
    """When a finished job is shown to have finished: its move (finished_at, its file's ctime).
    The kernel stamps a ctime from a clock a few milliseconds coarse, so that it can come before
    the end the attempt measured (its start and length, read from the finer clock): then that end,
    so that no job is shown finishing before its attempt ended. An end further after the move (a
    host whose clock is ahead) leaves the move."""
    if changed_at is None or started is None or seconds is None:
        return changed_at
    end = started + seconds
    return end if changed_at < end <= changed_at + COARSE_CLOCK else changed_at


def waiting_state(waiting: Job, now: float) -> str:
    """A job in pending/ is "scheduled" until its run_at, "pending" (ready) after."""
    return State.SCHEDULED if waiting.run_at and waiting.run_at > now else State.PENDING


class Views:
    def __init__(self, store: Store, owners: Owners, quarantine: Quarantine):
        self.store = store
        self.layout = store.layout
        self.owners = owners
        self.quarantine = quarantine
        self.counter = JobCounter(store, owners)
        self.finished_order = FinishedOrder()  # done/ and dead/ in the order they finished, read again by changes

    # ---- one job -------------------------------------------------------------------------

    def find(self, job_id: str) -> JobView:
        if layout.is_quarantine_id(job_id):
            view = self._quarantined(job_id)
            if view is None:
                raise JobNotFound(f"no job {job_id!r}")
            return view
        job.check_id(job_id)
        # RACE: a job can move between the directories while we look; a second pass finds it.
        for _ in range(3):
            view = self._locate(job_id)
            if view is not None:
                return self.timed([view])[0]
            if not os.path.lexists(self.layout.id_marker(job_id)):
                break
        raise JobNotFound(f"no job {job_id!r}")

    def _quarantined(self, qid: str) -> JobView | None:
        if not self.quarantine.exists(qid):
            return None
        return JobView(qid, State.DEAD, None, self.quarantine.file(qid), reason=self.quarantine.reason(qid))

    def _locate(self, job_id: str) -> JobView | None:
        name = layout.job_file(job_id)
        for state, directory in ((State.DONE, self.layout.done), (State.DEAD, self.layout.dead),
                                 (State.WAITING, self.layout.dir(State.WAITING))):
            view = self._view(os.path.join(directory, name), state, job_id)
            if view is not None:
                return view
        for owner in fsio.listdir(self.layout.processing):
            view = self._view(os.path.join(self.layout.owned(owner), name), State.PROCESSING, job_id, owner)
            if view is not None:
                return view
        suffix, of_a_queue = f"@{job_id}.json", f"@{job_id}{layout.QUEUE_SEP}"
        dropped, suspect = [], None
        for entry in self.store.shards.entries():
            if entry.endswith(suffix) or of_a_queue in entry:
                parsed = layout.parse_pending(entry)
                if parsed is not None and parsed.job_id == job_id:
                    view = self._view(os.path.join(self.layout.pending, entry), State.PENDING, job_id,
                                      trusted_only=True)
                    if view is not None and view.job is not None:
                        return view
                    suspect = suspect or view
            elif layout.is_dropin(entry):
                dropped.append(entry)
        # Anyone who may write into pending/ can name a file for any id: one its claim would
        # quarantine (untrusted, malformed) is that job only if no other file is.
        return self._find_taken(job_id) or suspect or self._find_dropped(job_id, dropped)

    def can_finish(self, job_id: str) -> bool:
        """Is there a job of this id that a worker will run, or ran: something to wait for. A file
        its claim would quarantine (untrusted or malformed: anyone who may write into pending/ can
        name one for any id) is none, nor is no file at all; nor is a drop-in its adoption would
        quarantine (another uid's: `show` gives it as it is, what it says is no job yet)."""
        try:
            view = self.find(job_id)
        except JobNotFound:
            return False
        if view.job is None:
            return False
        if not layout.is_dropin(os.path.relpath(view.path, self.layout.pending)):
            return True
        st = fsio.lstat_if_there(view.path)
        return st is not None and not self.store.why_untrusted(st)

    def _find_taken(self, job_id: str) -> JobView | None:
        """A job in the middle of a move out of processing/ (handoff.py) is still there, under its
        .taken. name: never a free id."""
        name = layout.job_file(job_id)
        for owner in fsio.listdir(self.layout.processing):
            for entry in fsio.listdir(self.layout.owned(owner)):
                moving = layout.parse_transit(entry)
                if moving is not None and moving.taken and moving.original == name:
                    view = self._view(os.path.join(self.layout.owned(owner), entry), State.PROCESSING, job_id, owner)
                    if view is not None:
                        return view
        return None

    def _find_dropped(self, job_id: str, entries: list[str]) -> JobView | None:
        """A dropped file no worker has taken yet is a pending job too: by its `id` field, or by
        its name when it has none (so `wait ID` right after a drop works)."""
        for entry in entries:
            name = layout.stem(entry)
            view = self._view(os.path.join(self.layout.pending, entry), State.PENDING, name)
            if view is None or view.job is None:
                continue
            if view.job.id == job_id or (not view.job.id and name == job_id):
                view.id = view.job.id = job_id
                return view
        return None

    def _view(self, path: str, state: str, job_id: str, owner: str | None = None,
              now: float | None = None, trusted_only: bool = False) -> JobView | None:
        now = self.store.now(now)
        try:
            found, st = self.store.read_job(path, now=now, trusted_only=trusted_only)
        except FileNotFoundError:
            return None
        except InvalidJob as e:
            refuse_unsearchable(path)
            return JobView(job_id, state, None, path, reason=str(e))
        if state == State.PENDING:
            state = waiting_state(found, now)
        timing = output.last_attempt(self.layout.output(found.id), owner=self.store.uid) if found.id else output.LastAttempt()
        return JobView(found.id or job_id, state, found, path, owner=owner, changed_at=finished_at(st),
                       last_attempt=timing)

    def timed(self, views: list[JobView]) -> list[JobView]:
        """`views`, each done job without a log (a silent success: store/output.py) given its last
        attempt from the attempts log, in one pass over it for them all: a reader that shows
        jobs calls it on those it shows (a search that only filters them needs no times)."""
        silent = {v.id: v.changed_at for v in views if v.state == State.DONE and v.job is not None
                  and v.last_attempt.started is None and v.changed_at is not None}
        if not silent:
            return views
        from ..store import attempts_log  # json and all: only a reader of done jobs needs it

        facts = attempts_log.find(self.layout.dir("events"), silent)
        for view in views:
            fact = facts.get(view.id) if view.id in silent else None
            if fact is not None:
                view.last_attempt = output.LastAttempt(fact.started, round(fact.run_seconds, 3), fact.host,
                                                       fact.output_bytes)
        return views

    # ---- many jobs -----------------------------------------------------------------------

    def jobs(self, state: str | None = None, limit: int | None = None,
             now: float | None = None) -> list[JobView]:
        """Jobs in one state (or all): pending in run order, then scheduled, waiting, processing,
        done and dead (those two oldest first)."""
        out: list[JobView] = []
        if limit is not None and limit <= 0:
            return out
        for view in self._iter_views(state, self.store.now(now)):
            out.append(view)
            if limit is not None and len(out) >= limit:
                break
        return self.timed(out)

    def _iter_views(self, state: str | None, now: float) -> Iterator[JobView]:
        for place in self.places(state, now):
            view = self.view_at(place, now)
            if view is not None and (state is None or view.state == state):
                yield view

    def places(self, state: str | None, now: float | None = None) -> Sequence[Place]:
        """Where the jobs of one state (or all) are, in the order `jobs` gives them, from the
        listings alone (and one lstat per finished job, for its order): a reader that shows a page
        of them opens only that page's files (of done/ or dead/, makes only that page's places)."""
        if state in FINISHED:
            return self._finished_places(state)
        now = self.store.now(now)
        out: list[Place] = []
        if state in (None, State.PENDING, State.SCHEDULED):
            out += self._waiting_places(state, now)
        if state in (None, State.WAITING):
            directory = self.layout.dir(State.WAITING)
            out += [Place(os.path.join(directory, entry), State.WAITING, layout.stem(entry))
                    for entry in sorted(fsio.listdir(directory)) if layout.is_json_entry(entry)]
        if state in (None, State.PROCESSING):
            for owner in fsio.listdir(self.layout.processing):
                owned = self.layout.owned(owner)
                out += [Place(os.path.join(owned, entry), State.PROCESSING, layout.stem(entry).lstrip(layout.ADOPT_PREFIX),
                              layout.owner_of(owner))
                        for entry in sorted(fsio.listdir(owned)) if layout.is_json_entry(entry)]
        for name in FINISHED:
            if state in (None, name):
                out += self._finished_places(name)
        return out

    def view_at(self, place: Place, now: float | None = None) -> JobView | None:
        """The job at `place` (None if it moved on since it was listed)."""
        if layout.is_quarantine_id(place.job_id):
            return self._quarantined(place.job_id)
        return self._view(place.path, place.state, place.job_id, place.owner, now=now)

    def _waiting_places(self, state: str | None, now: float) -> list[Place]:
        now_ms = int(now * 1000)
        ready, later = [], []
        for entry in sorted(self.store.shards.entries(), key=shards.base):  # run order: the names sort
            parsed = layout.parse_pending(entry)
            if parsed is None:
                if self._is_dropped_file(entry):
                    ready.append((entry, layout.stem(entry)))
                continue
            (later if parsed.due_ms > now_ms else ready).append((entry, parsed.job_id))
        later.sort(key=lambda pair: shards.base(pair[0])[layout.DUE_FIELD])  # scheduled: soonest first
        groups = []
        if state in (None, State.PENDING):
            groups.append(ready)
        if state in (None, State.SCHEDULED):
            groups.append(later)
        return [Place(os.path.join(self.layout.pending, entry), State.PENDING, job_id) for group in groups
                for entry, job_id in group]

    def _finished_places(self, state: str) -> Listed:
        return self.finished_order.places(self.layout.dir(state), state)

    def _is_dropped_file(self, entry: str) -> bool:
        """A dropped file not adopted yet (directories are left alone, not jobs)."""
        if not layout.is_dropin(entry):
            return False
        path = os.path.join(self.layout.pending, entry)
        return not (os.path.isdir(path) and not os.path.islink(path))

    def counts(self, now: float | None = None) -> Counts:
        return self.counter.counts(now)

    def queue_counts(self, now: float | None = None) -> dict[str, Counts]:
        return self.counter.census(now).queues

    def census(self, now: float | None = None) -> CountsByQueue:
        return self.counter.census(now)

    def ready_since(self, now: float | None = None) -> dict[str | None, float]:
        return self.counter.ready_since(now)

    def pending_queues(self, now: float | None = None) -> set[str]:
        return self.counter.pending_queues(now)

    def some_queues(self, prefix: str, limit: int, scan: int) -> list[str]:
        """Up to `limit` queue names starting with `prefix`, from the names of at most `scan`
        pending jobs (shell completion)."""
        found = {job.DEFAULT_QUEUE} if job.DEFAULT_QUEUE.startswith(prefix) else set()
        for name in self._scan(self._waiting_dirs(), scan):
            parsed = layout.parse_pending(name)
            if parsed is not None and parsed.queue.startswith(prefix):
                found.add(parsed.queue)
        return sorted(found)[:limit]

    def _waiting_dirs(self) -> list[str]:
        return [self.layout.pending]  # its shards are found as it is read (_scan)

    def _scan(self, directories: list[str], scan: int) -> Iterator[str]:
        """The names in `directories` (and in pending/'s shards, met on the way), at most `scan`
        of them in all: never a whole listing of a big directory."""
        todo = list(directories)
        while todo and scan > 0:
            directory = todo.pop(0)
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        scan -= 1
                        if directory == self.layout.pending and shards.is_shard(entry.name):
                            todo.insert(0, entry.path)
                        else:
                            yield entry.name
                        if scan <= 0:
                            break  # before the next entry is even read
            except OSError:
                continue

    def some_ids(self, prefix: str, limit: int, scan: int) -> list[str]:
        """Up to `limit` job ids starting with `prefix`, from at most `scan` directory entries
        (shell completion: never a listing of 100,000 names)."""
        found: list[str] = []
        dirs = [*self._waiting_dirs(), self.layout.dir(State.WAITING), self.layout.done, self.layout.dead,
                *(self.layout.owned(o) for o in fsio.listdir(self.layout.processing))]
        for name in self._scan(dirs, scan):
            parsed = layout.parse_pending(name)
            job_id = parsed.job_id if parsed else layout.stem(name)
            if name.endswith(".json") and job.valid_id(job_id) and job_id.startswith(prefix):
                found.append(job_id)
                if len(found) >= limit:
                    break
        return sorted(found)

    def pending_entries(self) -> list[str]:
        """Every entry in pending/ and its shards: canonical and dropped alike (the worker's index
        filters)."""
        return self.store.shards.entries()


def refuse_unsearchable(path: str) -> None:
    """A job file that cannot be read because its directory cannot be searched (chmod 000 done/)
    cannot be told from no file at all: SpoolError, rather than a broken job of that state (every
    id, known or not, was shown as done, and a pending job's cancel said it had finished)."""
    try:
        os.lstat(path)
    except PermissionError as e:
        raise unsearchable(os.path.dirname(path), e) from None
    except OSError:
        pass
