"""Publish: the enqueue transition. Every id is reserved (an ``ids/<id>`` marker, linked
exclusively) and every job written under a temp name before the first is renamed into pending/,
so a batch is published all or nothing as far as its caller can cause it; a marker that a dead
creator left behind is taken over (see ids.py). Its row is the first of transitions.py's table.

A machine can cut a batch between two renames (a kill, a power cut): so before the first, the
batch writes its plan (``tmp/.<creator>.<hex>.plan``: each temp file and its pending name,
fsync'd), and whoever finds the plan of a creator that is gone publishes the rest
(``finish_batches``: workers' recovery sweeps, ``fsck --repair``), durably, and judges those that
wait for other jobs as the enqueuer would have (judge_published). A batch is thus published
whole or not at all, whatever stops its enqueuer."""

from __future__ import annotations

import os

from ..format import layout, modes
from ..format import states
from ..store import shards
from ..system import fsio, signals
from ..format.errors import JobExists, JobNotFound, SpoolError
from ..store.ids import Reservations, creator_of
from ..format.job import Job, valid_id
from ..store.store import Store, io_error


TYPE_CHECKING = False  # typing is not worth loading on one enqueue's path
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable

    from .dependencies import Dependencies
    from ..store.owners import Owners
    from ..reading.views import Views


class Publisher:
    def __init__(self, store: Store, owners: Callable[[], Owners], views: Callable[[], Views]):
        """`owners` and `views` are asked for only when a marker may have been abandoned: a
        plain enqueue never loads them (they are a third of its start-up)."""
        self.store = store
        self.layout = store.layout
        self._owners = owners
        self._views = views
        self._deps: Dependencies | None = None

    @property
    def deps(self) -> Dependencies:
        """Made when a job first waits for others: a plain enqueue never loads it."""
        if self._deps is None:
            from .dependencies import Dependencies
            from .handoff import Handoff

            self._deps = Dependencies(self.store, Handoff(self.store), self._views)
        return self._deps

    def publish(self, jobs: list[Job], *, progress: Callable[[int], Any] | None = None,
                announce: Callable[[], Any] | None = None, skip_existing: set[str] | None = None) -> list[Job]:
        """Publish jobs all-or-nothing as far as the caller can cause it: every id is reserved
        and every file written and fsync'd before the first is published (a batch's fsyncs run
        many at once). When this returns, every job survives a power cut.

        `announce` runs once everything is staged, just before the jobs are published: if it
        raises (the CLI could not print the ids), nothing is published.

        A job whose id is taken raises JobExists; with `skip_existing` (enqueue --if-absent) it is
        left out instead and its id added to that set. Those that wait for other jobs are judged
        once more when published (judge_published). Returns the jobs published."""
        _refuse_repeated_ids(jobs)
        job_ids = [job.id for job in jobs]
        staged: list[tuple[str, str, str]] = []  # (temp path, pending name, id)
        waits = {job.id: job.after for job in jobs if job.after}  # edges to take back with the job
        with Reservations(self.store) as ids:
            try:
                for job in jobs:
                    if self.reserve(ids, job.id):
                        continue
                    # RACE: the id's marker decides: of two enqueues of one id, one reserves it, and
                    # the other, with --if-absent, takes the id as existing (even if the first then fails).
                    if skip_existing is None:
                        raise JobExists(f"job id {job.id!r} already exists", job.id)
                    skip_existing.add(job.id)
                if skip_existing:
                    jobs = [job for job in jobs if job.id not in skip_existing]
                self._stage(jobs, progress, ids, staged)
            except BaseException as e:
                # Every id of the batch: release() frees only markers of ours, so one a signal
                # caught just after its link is freed too, and another creator's never.
                self._take_back(staged, job_ids, ids, waits)
                if isinstance(e, OSError):
                    raise io_error("cannot enqueue", e) from None
                raise
            self._announce_and_commit(staged, job_ids, ids, waits, announce)
        return jobs

    def _announce_and_commit(self, staged: list[tuple[str, str, str]], job_ids: list[str], ids: Reservations,
                             waits: dict[str, list[str]], announce: Callable[[], Any] | None) -> None:
        """From the announcement to the last rename, and the judging of what went to waiting/,
        SIGINT/SIGTERM/SIGHUP wait: the caller hears of one only once every job is published and
        judged (or, if `announce` fails, none is published)."""
        with signals.signals_held():
            try:
                if announce:
                    announce()
            except BaseException:
                self._take_back(staged, job_ids, ids, waits)
                raise
            self._commit(staged, ids, waits)
            waiters = [job_id for job_id in (_waiting_id(name) for _, name, _ in staged) if job_id is not None]
            if waiters:
                self.judge_published(waiters)  # a dep may have finished (or died) meanwhile

    def _stage(self, jobs: list[Job], progress: Callable[[int], Any] | None, ids: Reservations,
               staged: list[tuple[str, str, str]]) -> None:
        """Write every job under a temp name into `staged`, each fsync'd (a batch's many at once,
        with the record its markers link to) before the first is published; on a failure the
        caller takes back what `staged` holds. A job that waits for others goes to waiting/, its
        wake-up edges made first (dependencies.py); one whose dep was purged since it was checked is
        refused (JobNotFound)."""
        durable_each = len(jobs) == 1
        for job in jobs:
            tmp = self.store.temp_path()
            # Noted before it exists, in the caller's list: a signal just after the file (or its
            # edges) is made must not leave it.
            staged.append((tmp, self._destination_of(job), job.id))
            self.store.write_file(tmp, job.to_json(), durable=durable_each)
            if progress:
                progress(1)
        if not durable_each:
            fsio.fsync_files([tmp for tmp, _, _ in staged] + ids.record_files())

    def _destination_of(self, job: Job) -> str:
        """pending/'s canonical name, or "waiting/<id>.json" (a batch plan line says either). The
        shard of a sharded pending/ is chosen as each file is renamed in: a batch may take longer
        than a shard (shards.py)."""
        unfinished = self.deps.unfinished(job) if job.after else []
        if not unfinished:
            return layout.pending_name_of(job)
        self.deps.make_edges(job)  # every one, done ones too: purge keeps what is waited for
        return f"{states.WAITING}/{layout.job_file(job.id)}"

    def _path_of(self, name: str) -> str:
        if name.startswith(states.WAITING + "/"):
            return os.path.join(self.layout.root, name)
        return os.path.join(self.layout.pending, name)

    def _commit(self, staged: list[tuple[str, str, str]], ids: Reservations, waits: dict[str, list[str]]) -> None:
        """The renames into pending/ and the fsyncs that make them durable; a batch's plan first."""
        done = 0
        plan = None
        try:
            plan = self._write_plan(staged) if len(staged) > 1 else None
            entries = []
            for tmp, name, job_id in staged:
                entries.append(self._rename_in(tmp, name, job_id, self.store.creator()))
                done += 1
            self._sync_published(entries, [name for _, name, _ in staged])
            fsio.fsync_dir(self.layout.dir("ids"))
        except OSError as e:  # e.g. the disk filled: what is published stays, the rest is taken back
            self._take_back(staged[done:], [job_id for _, _, job_id in staged[done:]], ids, waits)
            raise io_error(f"cannot enqueue (published {done} of {len(staged)})", e) from None
        finally:
            if plan is not None:
                fsio.unlink_quietly(plan)

    def _rename_in(self, tmp: str, name: str, job_id: str, creator: layout.Creator) -> str:
        """Publish one staged file: its entry in pending/ (or waiting/), "" if another finder of
        its plan published it first. FileNotFoundError if it is gone unpublished."""
        if name.startswith(states.WAITING + "/"):
            try:
                os.rename(tmp, self._path_of(name))
                return name
            except FileNotFoundError:
                if os.path.lexists(self._path_of(name)):
                    return ""  # RACE: rolled forward by another finder (below)
                raise
        entry = self.store.shards.move_in(tmp, shards.base(name), bump=False)
        if entry is not None:
            return entry
        # RACE: judged gone from another host (fsck, after stale_after), this batch was rolled
        # forward: the job is published all the same, wherever the finder's clock put it; a finder
        # removes a staged file unpublished only once its id is no longer this batch's.
        if not self._id_still_of(job_id, creator):
            raise FileNotFoundError(2, "a staged job file is gone", tmp)
        return ""

    def _id_still_of(self, job_id: str, creator: layout.Creator) -> bool:
        """Whether `job_id`'s marker still names the batch's `creator` (no other job took it over)."""
        marker = creator_of(self.store, job_id)
        return marker is not None and (layout.safe_host(marker.host), marker.pid, marker.start) == \
            (creator.host, creator.pid, creator.start)

    def _sync_published(self, entries: list[str], names: list[str]) -> None:
        """The renames of a publish made durable: pending/ (each shard `entries` name), and
        waiting/ if one of `names` went there."""
        self._sync_pending(entries)
        if any(name.startswith(states.WAITING + "/") for name in names):
            fsio.fsync_dir(self.deps.waiting)

    def judge_published(self, waiters: list[str]) -> None:
        """Jobs just published into waiting/, judged once more: a dep that finished meanwhile left
        no one to wake them. RACE: a finish, purge or requeue of a dep may come at any point of the
        enqueue. Its edge is made before the job is published and stays while the job waits
        (dependencies.py), so a finish after this look wakes it; a finish before it is seen here; a
        purge keeps a dep with an edge, or was over before the edge (the enqueue was refused,
        publish); a requeued dep is pending here, and its next finish sees the edge."""
        owners = self._owners()
        owner = owners.register("enqueuer")
        try:
            self.deps.settle(waiters, owner)
        finally:
            owners.unregister(owner)

    def _sync_pending(self, entries: list[str]) -> None:
        if "" in entries:  # published by another process's roll-forward, wherever it put them
            self.store.shards.sync_all()
        self.store.shards.sync([e for e in entries if e and not e.startswith(states.WAITING + "/")])

    def _write_plan(self, staged: list[tuple[str, str, str]]) -> str:
        path = os.path.join(self.layout.tmp, layout.tmp_name(self.store.creator(), "plan"))
        data = "".join(f"{os.path.basename(tmp)} {name}\n" for tmp, name, _ in staged)
        # The last line says the plan is whole: one cut while it was written (a kill, a power cut
        # before its fsync) comes before any rename, and is no plan at all.
        self.store.write_file(path, f"{data}end {len(staged)}\n".encode(), durable=True)
        fsio.fsync_dir(self.layout.tmp)
        return path

    def finish_batches(self, gone: Callable[[layout.Creator], str | None]) -> int:
        """Publish the rest of every batch whose creator is gone (`gone` says why, or None while
        it lives) and left its plan: it was cut between two renames. Returns the jobs published."""
        published = 0
        for name in fsio.listdir(self.layout.tmp):
            creator = layout.creator_of_temp(name) if layout.is_temp_name(name, "plan") else None
            if creator is not None and gone(creator):
                published += self._roll_forward(os.path.join(self.layout.tmp, name), creator)
        return published

    def plan_entries(self, plan: str) -> list[tuple[str, str, str]] | None:
        """(temp name, pending name, job id) of each job a plan names; None if it is not whole
        (cut while it was written: nothing of that batch was renamed) or cannot be read."""
        try:
            data, st = fsio.read_regular(plan, 64 * 1024 * 1024)
            lines = data.decode("utf-8", "replace").splitlines()
        except (OSError, ValueError):
            return None
        if modes.why_untrusted(st, shared=True):
            return None  # only spoolq writes plans: one anyone else could have written publishes nothing
        entries = []
        for line in lines[:-1]:
            tmp, _, name = line.partition(" ")
            job_id = _waiting_id(name) or getattr(layout.parse_pending(name), "job_id", None)
            if not layout.is_temp_name(tmp) or job_id is None:
                return None
            entries.append((tmp, name, job_id))
        return entries if lines and lines[-1] == f"end {len(entries)}" else None

    def _roll_forward(self, plan: str, creator: layout.Creator) -> int:
        entries = self.plan_entries(plan)
        published = 0
        # Under the "ids" lock: a taker of an abandoned id judges under it too (reserve), and the
        # job must not be published once its id was taken over.
        with self.store.locked("ids"):
            moved = []
            for tmp, name, job_id in entries or []:
                src = os.path.join(self.layout.tmp, tmp)
                if not os.path.lexists(src):
                    continue  # published already
                if not self._id_still_of(job_id, creator):
                    fsio.unlink_quietly(src)  # its id was taken over meanwhile: the other job keeps it
                    continue
                # RACE: two finders may roll the same plan forward; each rename admits one.
                try:
                    moved.append(self._rename_in(src, name, job_id, creator))
                except FileNotFoundError:
                    pass  # the other finder's rename won, and a worker took the job since
        published = len([entry for entry in moved if entry])
        self._sync_published(moved, moved)
        fsio.unlink_quietly(plan)  # a plan not whole: no rename was made; its files are stale temps
        # What its dead enqueuer would have done next: a dep that finished while the batch lay cut
        # found these not in waiting/ yet, and left them waiting. RACE: killed before this, they
        # wait with their edges, for recovery's sweep of after/ (or fsck) to judge them.
        waiters = [job_id for job_id in map(_waiting_id, moved) if job_id is not None]
        if waiters:
            self.judge_published(waiters)
        return published

    def _take_back(self, staged: list[tuple[str, str, str]], reserved: list[str], ids: Reservations,
                   waits: dict[str, list[str]]) -> None:
        """Nothing of these is published: remove their temp files and edges, then free their ids
        (an edge outlives no id: a later job of that id may wait for other jobs)."""
        with signals.signals_held():
            for tmp, name, job_id in staged:
                fsio.unlink_quietly(tmp)
                if name.startswith(states.WAITING + "/"):
                    self.deps.forget(job_id, waits[job_id])
            for job_id in reserved:
                ids.release(job_id)

    def reserve(self, ids: Reservations, job_id: str) -> bool:
        """Reserve `job_id`, taking over a marker its creator abandoned (it died before
        publishing: no job has the id, and the creator is gone)."""
        if ids.reserve(job_id):
            return True
        if not self._abandoned(ids, job_id):
            return False
        # RACE: two takers may both judge the marker abandoned: the lock lets one at a time
        # judge again and take it over; the second then finds the first's live marker.
        with self.store.locked("ids"):
            if not self._abandoned(ids, job_id):
                return False
            ids.take_over(job_id)
        return True

    def _abandoned(self, ids: Reservations, job_id: str) -> bool:
        creator = creator_of(self.store, job_id)
        if creator is None or creator == ids.creator or not self._owners().why_creator_gone(creator):
            return False
        try:
            self._views().find(job_id)
            return False
        except JobNotFound:
            return True


def _refuse_repeated_ids(jobs: Iterable[Job]) -> None:
    seen: set[str] = set()
    for n, job in enumerate(jobs, 1):
        if job.id in seen:
            raise JobExists(f"job {n}: id {job.id!r} appears twice in the input")
        seen.add(job.id)


def _waiting_id(name: str) -> str | None:
    """The id in a plan's "waiting/<id>.json", else None."""
    if not name.startswith(states.WAITING + "/") or not name.endswith(".json"):
        return None
    job_id = layout.stem(name[len(states.WAITING) + 1:])
    return job_id if valid_id(job_id) else None
