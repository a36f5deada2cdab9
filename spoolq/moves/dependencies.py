"""Dependencies: a job enqueued ``--after`` other jobs waits in ``waiting/<id>.json`` until every
one of them is done; if one ends dead (or is cancelled), it goes dead too, naming it, and so do
the jobs that wait for it.

Who wakes a waiting job: for each job it waits for that had not finished when it was enqueued,
an edge ``after/<dep>/<waiter>`` (an empty file) is made before the job is published. Every
move of a job to done/ or dead/ (finishing.py: a worker, a rescuer, cancel, a judge) then looks
in ``after/<job>/`` (one listing of a directory that usually does not exist, wake_waiters_of) and
judges each waiter by the states of all it waits for. Nothing scans the waiting jobs. A release
is one rename, waiting/ -> pending/ (the content is unchanged); a death is a take into the
judge's own directory (handoff.py), like any failure. Two judges may judge one waiter at once
(two of its deps finished together): the rename of its file admits one. The enqueuer (or whoever
publishes the rest of its cut batch, enqueue.py) judges its jobs once more after publishing them,
so a dep that finished in between cannot leave them waiting: either the finisher saw the edge
(made before), or the enqueuer sees the finish.

An edge lives as long as its waiter may still wait: from before its job is published until
whoever moves the job out of waiting/ (a judge, cancel) removes it, or its enqueue is taken
back. A finish never removes the edge of a waiter it does not find in waiting/: that may be an
enqueue between its edges and its file, and a dep requeued meanwhile must still wake it. Purge
keeps a job while an edge names it whose waiter waits or is being enqueued; the edges are made
under the "dlq" lock purge holds, so a purge either sees them or was over before the enqueue
looked again (then the enqueue is refused: what it waits for is gone).

A crash between a finish and its judging leaves waiters whose dep is finished: recovery looks
through after/ now and then (every DEPS_SWEEP_EVERY sweeps) and judges them. fsck finds a
waiter that waits for a job that is gone, or lacks an edge, and an edge whose waiter is gone.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Callable

from ..format.states import State
from ..format import layout
from ..system import fsio
from ..format.errors import InvalidJob, JobNotFound, LostOwnership
from ..format.job import Job, valid_id
from ..store.store import Store
from .finishing import Finishing
from .handoff import Handoff, Woken

if TYPE_CHECKING:
    from ..reading.views import Views


class Dependencies:
    def __init__(self, store: Store, takes: Handoff, views: Callable[[], Views]):
        self.store = store
        self.layout = store.layout
        self.takes = takes
        self._views = views  # asked only when a job that is waited for is in none of done/, dead/
        self.waiting = store.layout.dir(State.WAITING)
        self.edges = store.layout.dir("after")
        self.finishing = Finishing(store, takes, self.wake_waiters_of)  # every move into done/ or dead/

    # ---- publishing a waiting job --------------------------------------------------------------

    def unfinished(self, job: Job) -> list[str]:
        """The ids `job` waits for that are not done (dead ones included: judging kills it)."""
        return [dep for dep in job.after if self.state_of(dep) != State.DONE]

    def make_edges(self, job: Job) -> None:
        """The edges that wake `job` when each job it waits for finishes, before the job is
        published; one for a dep already done too, so that purge (and retention) keep it while
        `job` waits. JobNotFound, and no edge of `job` left, if a dep is gone (purged since the
        enqueue looked)."""
        self.store.make_dir(self.waiting)
        self.store.make_dir(self.edges)
        try:
            # RACE: a purge of a dep at this moment. Under its lock, purge keeps a job an edge
            # names (its waiter being enqueued counts, waiters_of); ours is made under the same
            # lock, so either that purge sees the edge, or it was over and the dep is gone now.
            with self.store.locked("dlq"):
                for dep in job.after:
                    self._link_edge(dep, job.id)
                gone = [dep for dep in job.after if self.state_of(dep) == "unfinished" and self.gone(dep)]
            if gone:
                raise JobNotFound(f"after: job {gone[0]!r} was purged meanwhile")
            for dep in job.after:
                fsio.fsync_dir(os.path.join(self.edges, dep))
            fsio.fsync_dir(self.edges)
        except BaseException:
            self.forget(job.id, job.after)  # not published: nothing waits
            raise

    def make_edge(self, dep: str, waiter: str) -> None:
        """One edge, durably (fsck's repairs)."""
        self._link_edge(dep, waiter)
        fsio.fsync_dir(os.path.join(self.edges, dep))

    def _link_edge(self, dep: str, waiter: str) -> None:
        directory = os.path.join(self.edges, dep)
        for _ in range(5):  # RACE: a judge may remove an emptied edge directory meanwhile
            try:
                self.store.make_dir(directory)
                self.store.write_file(os.path.join(directory, waiter), b"", durable=False)
                return
            except FileExistsError:
                return
            except FileNotFoundError:
                continue

    def mend(self, waiter: str, deps: list[str], owner: str) -> str | None:
        """Edges a waiting job lacks (fsck), then a judging of it (a dep may have finished before
        its edge was back): its outcome, as settle()'s."""
        for dep in deps:
            self.make_edge(dep, waiter)
        if not os.path.lexists(self.waiting_path(waiter)):
            self.forget(waiter, deps)  # RACE: it moved on meanwhile, and its judge forgot its edges
            return None
        return self.settle([waiter], owner)[waiter]

    def waiting_path(self, job_id: str) -> str:
        return os.path.join(self.waiting, layout.job_file(job_id))

    # ---- judging -------------------------------------------------------------------------------

    def state_of(self, job_id: str) -> str:
        """"done", "dead", or "unfinished" (anything else: pending, running, waiting, unknown)."""
        name = layout.job_file(job_id)
        if os.path.lexists(os.path.join(self.layout.done, name)):
            return State.DONE
        if os.path.lexists(os.path.join(self.layout.dead, name)):
            return State.DEAD
        return "unfinished"

    def gone(self, job_id: str) -> bool:
        """Is `job_id` no job at all (purged, or never one)? A purge removes the id marker last, and
        a job being enqueued has its marker before anything else: one lstat answers nearly always."""
        if os.path.lexists(self.layout.id_marker(job_id)):
            return False
        try:
            self._views().find(job_id)
        except JobNotFound:
            return True
        return False

    def wake_waiters_of(self, job_id: str, owner: str) -> list[Woken]:
        """`job_id` has just moved to done/ or dead/ (called by finishing.py, and by sweep()):
        judge the jobs waiting for it, and theirs in turn for each that dies. Returns (what it
        waited for, waiter, "pending" or "dead") for each that moved. An edge goes once its waiter
        has moved on; while the waiter waits it stays, so that a later judging (the job requeued
        and finished again, recovery's sweep) finds it."""
        moved: list[Woken] = []
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
                    if outcome == State.DEAD:
                        todo.append(waiter)
                    self.forget(waiter, after)  # every edge of it: it waits no more
                # RACE: a waiter not in waiting/ may be an enqueue between its edges and its file:
                # its edge stays (should `dep` be requeued, its next finish must wake it), and the
                # enqueuer judges it once published. An edge whose waiter is gone is fsck's.
            _remove_if_empty(directory)
        return moved

    def settle(self, waiters: list[str], owner: str) -> dict[str, str | None]:
        """Release or kill jobs just published (or found by fsck) by the states of what they wait
        for, a dep that is gone counting as dead ("dependency X is gone"); then what waits for each
        that died. Per waiter: "pending", "dead", or None if it stays (or is not there: released,
        killed or cancelled by someone else)."""
        outcomes = {}
        for waiter in waiters:
            outcome, after = self._judge(waiter, owner, settling=True)  # one that dies wakes its own
            if outcome is not None:
                self.forget(waiter, after)
            outcomes[waiter] = outcome
        return outcomes

    def _judge(self, waiter: str, owner: str, settling: bool = False) -> tuple[str | None, list[str]]:
        """Release or kill `waiter` if what it waits for allows; its outcome (None: it stays, or
        someone else moved it) and what it waited for. Settling, a waiter that dies wakes its own
        waiters (finishing.py); else the loop of wake_waiters_of does next."""
        path = self.waiting_path(waiter)
        try:
            job, _ = self.store.read_job(path, now=self.store.now(), trusted_only=True)
        except (FileNotFoundError, InvalidJob):
            return None, []
        states = {dep: self.state_of(dep) for dep in job.after}
        if settling:
            states.update({dep: "gone" for dep, s in states.items() if s == "unfinished" and self.gone(dep)})
        dead = [dep for dep, state in states.items() if state in (State.DEAD, "gone")]
        if dead:
            killed = self._kill(path, job, f"dependency {dead[0]} is {states[dead[0]]}", owner, wake=settling)
            return (State.DEAD if killed else None), job.after
        if all(state == State.DONE for state in states.values()):
            # RACE: another judge may release or kill it at this moment; the rename admits one.
            released = self.store.shards.move_in(path, layout.pending_name_of(job))
            return (State.PENDING if released is not None else None), job.after
        return None, job.after

    def _kill(self, path: str, job: Job, reason: str, owner: str, *, wake: bool) -> bool:
        job = job.copy()
        job.last_error, job.updated_at = reason, self.store.now()
        directory = self.layout.owned(owner)
        try:
            moving = self.takes.take_with(path, job, State.DEAD, into=directory)
        except LostOwnership:
            return False  # RACE: released, killed or cancelled by someone else first
        self.finishing.complete(directory, moving, job, owner, wake=wake)
        return True

    def forget(self, waiter: str, deps: list[str]) -> None:
        """A job that no longer waits: its edges go (their directories too, once empty)."""
        for dep in deps:
            directory = os.path.join(self.edges, dep)
            fsio.unlink_quietly(os.path.join(directory, waiter))
            _remove_if_empty(directory)

    def waiters_of(self, job_id: str) -> list[str]:
        """The jobs that wait for `job_id`, or are being enqueued to (purge keeps a job others wait
        for)."""
        directory = os.path.join(self.edges, job_id)
        return [w for w in fsio.listdir(directory) if os.path.lexists(self.waiting_path(w)) or self.under_way(w)]

    def under_way(self, waiter: str) -> bool:
        """Is `waiter`, an edge's waiter not in waiting/, being enqueued: its id reserved, and the
        job nowhere yet? (An enqueue killed there counts too, until fsck frees its id.)"""
        if not valid_id(waiter) or not os.path.lexists(self.layout.id_marker(waiter)):
            return False
        try:
            return self._views().find(waiter).state == State.WAITING  # RACE: published meanwhile
        except JobNotFound:
            return True

    def waiting_for_dead(self, most: int) -> set[str]:
        """The waiting jobs one of whose dependencies is dead (a crash between a death and its
        judging; recovery's sweep judges them), by the edges: one look in dead/ per dependency,
        of the first `most` that have waiters, and no job file read."""
        stuck: set[str] = set()
        for dep in fsio.listdir(self.edges)[:most]:
            if os.path.lexists(os.path.join(self.layout.dead, layout.job_file(dep))):
                stuck.update(w for w in fsio.listdir(os.path.join(self.edges, dep))
                             if os.path.lexists(self.waiting_path(w)))
        return stuck

    def sweep(self, owner: str) -> list[tuple[str, str, str]]:
        """Judge the waiters of every finished job that still has edges (a crash between a finish
        and its judging)."""
        moved: list[Woken] = []
        for dep in fsio.listdir(self.edges):
            if self.state_of(dep) != "unfinished":
                moved.extend(self.wake_waiters_of(dep, owner))
        return moved


def _remove_if_empty(directory: str) -> None:
    try:
        os.rmdir(directory)
    except OSError as e:
        if not fsio.is_gone(e) and e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
