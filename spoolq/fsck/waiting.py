"""fsck's checks of jobs that wait for others (dependencies.py): every waiting job a sound file, with an
edge for each job it waits for, waiting for no job that is gone, and none left waiting once
what it waits for has finished (a wake-up lost in a crash); and no edge left whose waiter is gone.
A waiter that fails any of these would wait for good: no one would ever judge it."""

from __future__ import annotations

import os
from typing import Callable

from ..format.states import State
from ..format import job, layout
from ..system import fsio
from ..format.errors import InvalidJob
from ..store.ids import creator_of
from .jobs import JobChecks, stale_temp
from .report import Report


class WaitingChecks:
    def __init__(self, report: Report, jobs: JobChecks):
        self.r = report
        self.spool = report.spool
        self.deps = report.spool.deps
        self.jobs = jobs

    def check(self) -> None:
        r = self.r
        for entry, path, st in r.entries(self.deps.waiting):
            stem = layout.stem(entry) if layout.is_json_entry(entry) else None
            if stem is None or not job.valid_id(stem):
                if layout.is_temp_name(entry):
                    stale_temp(r, path, st)
                continue
            self.jobs.check_job_file(path, State.WAITING, stem, entry)
            self._check_waiter(stem, path)
        for dep in fsio.listdir(self.deps.edges):
            for waiter in fsio.listdir(os.path.join(self.deps.edges, dep)):
                self._check_edge(dep, waiter)

    def _check_waiter(self, job_id: str, path: str) -> None:
        try:
            waiting, _ = self.spool.store.read_job(path, now=self.r.now)
        except (FileNotFoundError, InvalidJob):
            return
        deps = self.deps
        states = {dep: deps.state_of(dep) for dep in waiting.after}
        gone = [dep for dep, state in states.items() if state == "unfinished" and deps.gone(dep)]
        if gone:
            p = self.r.report("gone-dependency", path, f"job {job_id} waits for {', '.join(gone)}: no such job "
                              "(purged?), so it would wait for good")
            self.r.repair_with(p, lambda: self._as_owner(lambda owner: deps.settle([job_id], owner)[job_id]))
        elif State.DEAD in states.values() or all(state == State.DONE for state in states.values()):
            p = self.r.report("stuck-waiting", path, f"what job {job_id} waits for has finished, and no one woke it")
            self.r.repair_with(p, lambda: self._as_owner(lambda owner: deps.settle([job_id], owner)[job_id]))
        else:
            missing = [dep for dep in waiting.after if not os.path.lexists(os.path.join(deps.edges, dep, job_id))]
            # RACE: released or killed while we looked (its judge removes its edges): not a problem.
            if missing and os.path.lexists(path):
                p = self.r.report("missing-edge", os.path.join(deps.edges, missing[0], job_id),
                                  f"job {job_id} waits for {', '.join(missing)} with no edge: "
                                  "their finish would not wake it")
                self.r.repair_with(p, lambda: self._as_owner(lambda owner: deps.mend(job_id, missing, owner),
                                                             "made it, then judged it"))

    def _as_owner(self, judge: Callable[[str], str | None], done: str = "judged") -> str:
        """A judging by fsck as an owner of its own (a job it kills is taken into its directory)."""
        owner = self.spool.owners.register("fsck")
        try:
            outcome = judge(owner)
        finally:
            self.spool.owners.unregister(owner)
        return f"{done}: now {outcome}" if outcome else f"{done}: it waits on"

    def _check_edge(self, dep: str, waiter: str) -> None:
        """An edge whose waiter is not waiting: left over, unless its enqueue is still under way."""
        deps = self.deps
        if not job.valid_id(waiter) or os.path.lexists(deps.waiting_path(waiter)) or waiter in self.r.accounted:
            return  # not spoolq's, waiting, or a cut batch's job (check_batches publishes it)
        marker = fsio.lstat_if_there(self.spool.layout.id_marker(waiter))
        if deps.under_way(waiter):
            why = None if marker is None else self.r.why_left_over(creator_of(self.spool.store, waiter), marker)
            if why is None:
                return  # an enqueue at work: it publishes the job next
            detail = f"job {waiter} was never published: its enqueue left it ({why})"
        else:
            detail = f"job {waiter} waits no more"
        edge = os.path.join(deps.edges, dep, waiter)
        p = self.r.report("stale-edge", edge, detail)
        self.r.repair_with(p, lambda: self._remove_edge(dep, waiter, marker))

    def _remove_edge(self, dep: str, waiter: str, marker: os.stat_result | None) -> str:
        self.deps.forget(waiter, [dep])
        now = fsio.lstat_if_there(self.spool.layout.id_marker(waiter))
        # RACE: a new enqueue of the same id may have made its edge just before we removed it (its
        # marker is a new one, or it is published): the edge is made again.
        if os.path.lexists(self.deps.waiting_path(waiter)) or \
                (now is not None and (marker is None or now.st_ino != marker.st_ino)):
            self.deps.make_edge(dep, waiter)
            return "left alone: its id was taken again meanwhile"
        return "removed it"
