"""Dependencies: a job enqueued ``--after`` other jobs waits in ``waiting/<id>.json`` until every
one of them is done; if one ends dead (or is cancelled), it goes dead too, naming it, and so do
the jobs that wait for it.

Who wakes a waiting job: for each job it waits for that had not finished when it was enqueued,
an edge ``after/<dep>/<waiter>`` (an empty file) is made before the job is published. Whoever
moves a job to done/ or dead/ (a worker, a rescuer, cancel) then looks in ``after/<job>/`` (one
listing of a directory that usually does not exist) and judges each waiter by the states of all
it waits for. Nothing scans the waiting jobs. A release is one rename, waiting/ -> pending/ (the
content is unchanged); a death is a take into the judge's own directory (takes.py), like any
failure. Two judges may judge one waiter at once (two of its deps finished together): the rename
of its file admits one. The enqueuer judges its jobs once more after publishing them, so a dep
that finished in between cannot leave them waiting: either the finisher saw the edge (made
before), or the enqueuer sees the finish.

A crash between a finish and its judging leaves waiters whose dep is finished: recovery looks
through after/ now and then (every DEPS_SWEEP_EVERY sweeps) and judges them.
"""

from __future__ import annotations

import errno
import os

from . import fsio, layout
from .errors import InvalidJob, LostOwnership
from .job import Job
from .store import Store
from .takes import Takes

class Dependencies:
    def __init__(self, store: Store, takes: Takes):
        self.store = store
        self.layout = store.layout
        self.takes = takes
        self.waiting = store.layout.dir(layout.WAITING)
        self.edges = store.layout.dir("after")

    # ---- publishing a waiting job --------------------------------------------------------------

    def unfinished(self, job: Job) -> list[str]:
        """The ids `job` waits for that are not done (dead ones included: judging kills it)."""
        return [dep for dep in job.after if self.state_of(dep) != "done"]

    def make_edges(self, job: Job, deps: list[str]) -> None:
        """The edges that wake `job` when each of `deps` finishes, before the job is published;
        one for a dep already done too, so that purge (and retention) keep it while `job` waits."""
        for dep in deps:
            directory = os.path.join(self.edges, dep)
            for _ in range(5):  # RACE: a judge may remove an emptied edge directory meanwhile
                try:
                    self.store.make_dir(directory)
                    self.store.write_file(os.path.join(directory, job.id), b"", durable=False)
                    break
                except FileExistsError:
                    break
                except FileNotFoundError:
                    continue
            fsio.fsync_dir(directory)
        fsio.fsync_dir(self.edges)

    def waiting_path(self, job_id: str) -> str:
        return os.path.join(self.waiting, layout.job_file(job_id))

    # ---- judging -------------------------------------------------------------------------------

    def state_of(self, job_id: str) -> str:
        """"done", "dead", or "unfinished" (anything else: pending, running, waiting, unknown)."""
        name = layout.job_file(job_id)
        if os.path.lexists(os.path.join(self.layout.done, name)):
            return "done"
        if os.path.lexists(os.path.join(self.layout.dead, name)):
            return "dead"
        return "unfinished"

    def finished(self, job_id: str, owner: str) -> list[tuple[str, str, str]]:
        """`job_id` has just moved to done/ or dead/: judge the jobs waiting for it, and theirs in
        turn for each that dies. Returns (what it waited for, waiter, "pending" or "dead") for
        each that moved. An edge goes once its waiter has moved on; while the waiter waits it stays,
        so that a later judging (the job requeued and finished again, recovery's sweep) finds it."""
        moved: list[tuple[str, str, str]] = []
        todo = [job_id]
        while todo:
            dep = todo.pop()
            directory = os.path.join(self.edges, dep)
            waiters = fsio.listdir(directory) if fsio.present(directory) else []
            if not waiters:
                continue  # nearly every finish: no one waits for it, one system call
            for waiter in waiters:
                if waiter.startswith("."):
                    continue
                outcome, after = self._judge(waiter, owner)
                if outcome is not None:
                    moved.append((dep, waiter, outcome))
                    if outcome == "dead":
                        todo.append(waiter)
                    self.forget(waiter, after)  # every edge of it: it waits no more
                elif not os.path.lexists(self.waiting_path(waiter)):
                    self.forget(waiter, [dep])  # moved on by someone else, or never published
            _remove_if_empty(directory)
        return moved

    def judge(self, waiter: str, owner: str) -> str | None:
        """Release or kill one waiting job by the states of what it waits for; None if it stays
        (or is not there: released, killed, cancelled, or not published yet)."""
        outcome, after = self._judge(waiter, owner)
        if outcome is not None:
            self.forget(waiter, after)
        return outcome

    def _judge(self, waiter: str, owner: str) -> tuple[str | None, list[str]]:
        path = self.waiting_path(waiter)
        try:
            job, _ = self.store.read_job(path, now=self.store.now(), trusted_only=True)
        except (FileNotFoundError, InvalidJob):
            return None, []
        states = {dep: self.state_of(dep) for dep in job.after}
        dead = [dep for dep, state in states.items() if state == "dead"]
        if dead:
            return ("dead" if self._kill(path, job, dead[0], owner) else None), job.after
        if all(state == "done" for state in states.values()):
            # RACE: another judge may release or kill it at this moment; the rename admits one.
            released = self.store.shards.move_in(path, layout.pending_name_of(job))
            return ("pending" if released is not None else None), job.after
        return None, job.after

    def _kill(self, path: str, job: Job, dep: str, owner: str) -> bool:
        job = job.copy()
        job.last_error, job.updated_at = f"dependency {dep} is dead", self.store.now()
        directory = self.layout.owned(owner)
        try:
            moving = self.takes.take_with(path, job, "dead", into=directory)
        except LostOwnership:
            return False  # RACE: released, killed or cancelled by someone else first
        self.takes.complete(directory, moving, job)
        return True

    def forget(self, waiter: str, deps: list[str]) -> None:
        """A job that no longer waits: its edges go (their directories too, once empty)."""
        for dep in deps:
            directory = os.path.join(self.edges, dep)
            fsio.unlink_quietly(os.path.join(directory, waiter))
            _remove_if_empty(directory)

    def waiters_of(self, job_id: str) -> list[str]:
        """The jobs still waiting for `job_id` (purge keeps a job others wait for)."""
        directory = os.path.join(self.edges, job_id)
        return [w for w in fsio.listdir(directory) if os.path.lexists(self.waiting_path(w))]

    def sweep(self, owner: str) -> list[tuple[str, str, str]]:
        """Judge the waiters of every finished job that still has edges (a crash between a finish
        and its judging)."""
        moved: list[tuple[str, str, str]] = []
        for dep in fsio.listdir(self.edges):
            if self.state_of(dep) != "unfinished":
                moved.extend(self.finished(dep, owner))
        return moved


def _remove_if_empty(directory: str) -> None:
    try:
        os.rmdir(directory)
    except OSError as e:
        if not fsio.is_gone(e) and e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
