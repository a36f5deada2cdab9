"""Finished jobs: what an operator does with jobs in done/ and dead/ (rows "retry", "requeue"
and "purge" of the table in transitions.py), and the purge of jobs not started ("discard"). Their files change only under the "dlq" lock, and
no worker moves them, so a rewrite in place before the move is safe here, as it is nowhere else.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from ..format.states import FINISHED, NOT_STARTED, State
from ..format import layout
from ..system import fsio
from ..format.errors import InvalidJob, JobNotFound, LostOwnership, NotRetryable, SpoolError
from ..store.ids import Reservations
from ..format.job import Job
from ..store.quarantine import Quarantine
from ..store.store import Store
from .handoff import Moved
from ..reading.places import finished_at
from ..reading.views import Views



class Finished:
    def __init__(self, store: Store, views: Views, quarantine: Quarantine,
                 waiters_of: Callable[[str], list[str]] = lambda _job_id: []):
        self.store = store
        self.layout = store.layout
        self.views = views
        self.quarantine = quarantine
        self.waiters_of = waiters_of  # jobs still waiting for one (dependencies.py): it is not purged
        self.kept = 0  # by the last purge(): finished jobs others still wait for
        self.examined = 0  # by the last purge(): names looked at (retention goes on from there)
        self.left: list[str] = []  # by the last purge(): directories that could not be removed (_delete_finished)
        self.oldest_young = float("inf")  # by the last purge(): when the oldest job it left for being young finished

    # ---- back to pending ---------------------------------------------------------------------

    def retry_dead(self, job_ids: list[str] | None = None, *, now: float | None = None) -> list[str]:
        """Make dead jobs pending again with their attempts reset. None means every dead job.
        Every id is checked before any job moves (NotRetryable, JobNotFound)."""
        with self.store.locked("dlq"):
            if job_ids is None:
                job_ids = [layout.stem(e) for e in sorted(fsio.listdir(self.layout.dead))
                           if layout.is_json_entry(e) and not layout.is_quarantine_id(e)]
            else:
                for job_id in job_ids:
                    self._check_requeueable(job_id, (State.DEAD,))
            return self._requeue_all(job_ids, State.DEAD, self.store.now(now))

    def requeue(self, job_ids: list[str], *, now: float | None = None) -> dict[str, str | None]:
        """Make done or dead jobs pending again, attempts reset, at the back of their priority;
        their output log keeps what earlier runs wrote. Returns, per id, None once requeued, else
        why not (unknown, not finished, a quarantined file): the others are requeued all the same."""
        now = self.store.now(now)
        why: dict[str, str | None] = {}
        with self.store.locked("dlq"):
            for job_id in job_ids:
                try:
                    state = self._check_requeueable(job_id, FINISHED)
                except (JobNotFound, NotRetryable) as e:
                    why[job_id] = str(e)
                    continue
                why[job_id] = None if self._requeue_all([job_id], state, now) else f"job {job_id} moved meanwhile"
        return why

    def _requeue_all(self, job_ids: list[str], state: str, now: float) -> list[str]:
        entries = {job_id: self._requeue_one(job_id, state, now) for job_id in job_ids}
        self.store.shards.sync([entry for entry in entries.values() if entry])
        return [job_id for job_id, entry in entries.items() if entry]

    def _requeue_one(self, job_id: str, state: str, now: float) -> str | None:
        """The job's entry in pending/ once requeued; None if it moved meanwhile."""
        path = os.path.join(self.layout.dir(state), layout.job_file(job_id))
        try:
            job, _ = self.store.read_job(path, now=now, trusted_only=True)  # it runs next
        except FileNotFoundError:
            return None
        except InvalidJob as e:
            raise NotRetryable(f"{job_id}: the {state} file cannot be run again ({e}); fix it and drop it "
                               "into pending/ again (fsck --repair quarantines it)") from None
        job.attempts, job.exit_code, job.run_at, job.updated_at = 0, None, None, now
        job.seq = self.store.next_seq()
        try:
            return self._rewrite_then_move(path, job).name  # safe: finished files change only under the lock
        except LostOwnership:
            return None

    def _check_requeueable(self, job_id: str, states: tuple[str, ...]) -> str:
        """The job's state if it is one of `states`; else NotRetryable or JobNotFound."""
        if layout.is_quarantine_id(job_id):
            if self.quarantine.exists(job_id):
                raise NotRetryable(f"{job_id} is a quarantined file ({self.quarantine.reason(job_id)}); "
                                   f"fix it and drop it into pending/ again: {self.quarantine.file(job_id)}")
            raise JobNotFound(f"no job {job_id!r}")
        view = self.views.find(job_id)
        if view.state not in states:
            raise NotRetryable(f"job {job_id} is {view.state}, not {' or '.join(states)}")
        return view.state

    def _rewrite_then_move(self, path: str, job: Job) -> Moved:
        """Rewrite a finished job's file in place (temp beside it, fsync, rename over), then move
        it to pending/."""
        directory = os.path.dirname(path)
        tmp = self.store.temp_path(directory)
        try:
            self.store.write_file(tmp, job.to_json(), durable=True)
        except FileNotFoundError:
            raise LostOwnership(f"{directory} is gone") from None
        try:
            os.rename(tmp, path)
        except FileNotFoundError:
            raise LostOwnership(f"{directory} is gone") from None
        except OSError:
            fsio.unlink_quietly(tmp)
            raise
        entry = self.store.shards.move_in(path, layout.pending_name_of(job))
        if entry is None:
            raise LostOwnership(f"{path} was taken from us")
        return Moved(job.id, State.PENDING, entry)

    # ---- purge ---------------------------------------------------------------------------------

    def purge(self, state: str, *, older_than: float = 0.0, now: float | None = None, until: float | None = None,
              names: list[str] | None = None, lock_wait: float = 30.0) -> int:
        """Delete finished jobs (done or dead) and their output; frees their ids. Retention's small
        batches give `names` to look at (else the directory is listed) and stop at `until` (a
        time.monotonic()); `examined` then says how many names were looked at, and `oldest_young`
        when the oldest of those it kept for being too young finished (none can expire before).
        LockBusy once another purge, `dlq retry` or `requeue` has held the "dlq" lock for
        `lock_wait` seconds (retention: 0, it tries again later)."""
        if state == State.PENDING:
            return self._purge_not_started(older_than, now)
        if state not in FINISHED:
            raise InvalidJob("only done, dead or pending jobs can be purged")
        now = self.store.fs_clock() if now is None else now  # ctime is the file system's clock
        count = self.kept = self.examined = 0
        self.left = []
        self.oldest_young = float("inf")
        with self.store.locked("dlq", timeout=lock_wait), self._opened(state, "output", "ids", "quarantine") as dirs, \
                Reservations(self.store) as ids:
            finished = dirs[state]
            for entry in finished.names() if names is None else names:
                if until is not None and self.examined and time.monotonic() >= until:
                    break
                self.examined += 1
                if not layout.is_json_entry(entry):
                    continue
                try:
                    finished_when = finished_at(finished.lstat(entry))
                except FileNotFoundError:
                    continue
                if now - finished_when < older_than:
                    self.oldest_young = min(self.oldest_young, finished_when)
                    continue
                if self.waiters_of(layout.stem(entry)):
                    self.kept += 1  # its waiters would wait for good for a job no longer there
                    continue
                if self._delete_finished(dirs, ids, state, layout.stem(entry)):
                    count += 1
                else:
                    self.left.append(entry)  # a directory that stays: the rest goes on
        return count

    def purge_ids(self, job_ids: list[str]) -> dict[str, str | None]:
        """Delete these finished jobs and their output, freeing their ids. Returns, per id, None
        once purged, else why not (unknown, not finished): the others are purged all the same."""
        why: dict[str, str | None] = {}
        with self.store.locked("dlq"), self._opened(*FINISHED, "output", "ids", "quarantine") as dirs, \
                Reservations(self.store) as ids:
            for job_id in job_ids:
                try:
                    view = self.views.find(job_id)
                except JobNotFound as e:
                    why[job_id] = str(e)
                    continue
                state = view.state
                if state not in (*FINISHED, *NOT_STARTED):
                    why[job_id] = f"job {job_id} is {state}, not finished or pending " \
                        f"({'cancel --kill' if state == State.PROCESSING else 'cancel'} it first)"
                    continue
                waiters = self.waiters_of(job_id)
                if waiters:
                    why[job_id] = f"job {job_id} is kept: {', '.join(waiters[:5])} still wait for it"
                    continue
                if state in NOT_STARTED:
                    why[job_id] = self._delete_not_started(dirs, view.path, job_id)  # a pending/ path
                    continue
                deleted = self._delete_finished(dirs, ids, state, job_id)
                why[job_id] = None if deleted else f"job {job_id} is a directory another user filled: " \
                    f"remove {view.path} by hand"
        return why

    def _purge_not_started(self, older_than: float, now: float | None) -> int:
        """Every pending and scheduled job (in pending/ --older-than seconds): deleted, never run."""
        now = self.store.fs_clock() if now is None else now
        count = self.kept = 0
        with self.store.locked("dlq"), self._opened("output", "ids") as dirs:
            for place in [*self.views.places(State.PENDING), *self.views.places(State.SCHEDULED)]:
                if layout.parse_pending(os.path.basename(place.path)) is None:
                    continue  # a dropped file not taken in yet: no job, no id of its own
                try:
                    st = os.lstat(place.path)
                except FileNotFoundError:
                    continue  # claimed meanwhile
                if self.store.why_untrusted(st):
                    continue  # no job, and its id's marker not its own: anyone in pending/'s group can name one
                if now - st.st_ctime < older_than:
                    continue
                if self.waiters_of(place.job_id):
                    self.kept += 1
                    continue
                count += self._delete_not_started(dirs, place.path, place.job_id) is None
        return count

    def _delete_not_started(self, dirs: dict[str, fsio.Directory], path: str, job_id: str) -> str | None:
        """Delete a pending or scheduled job by unlinking its file where it is: no block is needed,
        so this works on a full disk. None once deleted, else why not (a worker claimed it)."""
        parent, name = os.path.split(path)
        if layout.parse_pending(name) is None:
            return f"job {job_id} is a dropped file not taken in yet (delete {path} itself)"
        with fsio.Directory(parent) as directory:  # pending/ or a shard of it, never through a symlink
            try:
                os.unlink(name, dir_fd=directory.fd)
            except OSError as e:
                if not fsio.is_gone(e):
                    raise
                # RACE: a worker's claim renames this very name; of the claim and the unlink
                # exactly one finds it, so a job is either deleted before it started or runs.
                return f"job {job_id} has just started (cancel --kill it)"
        # A crash here leaves the id's marker naming its enqueuer, gone: fsck --repair, or the
        # next enqueue of the id, frees it.
        dirs["output"].unlink_quietly(f"{job_id}.log")
        dirs["ids"].unlink_quietly(job_id)
        return None

    @contextmanager
    def _opened(self, *names: str) -> Iterator[dict[str, fsio.Directory]]:
        """Layout directories to delete in, opened without following a symlink."""
        opened: dict[str, fsio.Directory] = {}
        try:
            for name in names:
                try:
                    opened[name] = fsio.Directory(self.layout.dir(name))
                except OSError as e:
                    raise SpoolError(f"refusing to use {self.layout.dir(name)}: {e.strerror} "
                                     "(a spool directory must be a real directory)") from None
            yield opened
        finally:
            for directory in opened.values():
                directory.__exit__()

    def _delete_finished(self, dirs: dict[str, fsio.Directory], ids: Reservations, state: str,
                         job_id: str) -> bool:
        """The job file, its output, its reason record or id marker: the marker made ours first,
        so that a crash half-way leaves an id that is freed at once, not one blocked for good.
        False, and all of it kept, where the file is a directory that cannot be removed: a
        member of a shared spool's group can name one in pending/ as a job, which its claim
        quarantines; it must not stop every purge (and retention) that meets it."""
        if not layout.is_quarantine_id(job_id):
            try:
                ids.retag(job_id)
            except FileNotFoundError:
                pass  # no marker (fsck would have said): nothing to hand over
        if not dirs[state].remove_quietly(layout.job_file(job_id)):
            return False
        dirs["output"].unlink_quietly(f"{job_id}.log")
        if layout.is_quarantine_id(job_id):
            dirs["quarantine"].unlink_quietly(layout.job_file(job_id))
        else:
            dirs["ids"].unlink_quietly(job_id)
        return True
