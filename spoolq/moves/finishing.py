"""Finishing: the one way a job file reaches done/ or dead/, and what follows it in the core.

Every move of a job into done/ or dead/ is a call here (tests/test_architecture.py holds every
other module to it): a success, the owned file renamed into done/ (``succeed``: transitions.py);
and the last step of a take into dead/, the ``.next.`` file renamed in (``complete``: a final
failure, recovery, cancel, a waiter whose dependency died). Quarantine (dead/+<qid>) is no job.

What follows a finish, and whose it is:

- The core's, here: the jobs waiting for it are judged (dependencies.py): released, or killed,
  and what waits for those in turn. It comes after the rename, so that no waiter acts on a finish
  that did not happen. A process that dies between the two leaves the waiters waiting, each with
  its edge in after/: recovery's sweep of after/ (recovery.py, DEPS_SWEEP_EVERY) or fsck judges
  them. So a wake-up that fails is said (``Moved.unwoken``), never raised: the move is done, and
  a caller that tried it again would find its file gone and think the job taken from it.
- The runner's (running/): the attempts log's line and the job line (an attempt the worker
  timed), the slot given back (the worker took it), and the hooks on_done and on_dead: the
  user's command, run in a worker's thread within its bounds. A job that ends without its worker
  (cancelled, recovered, a waiter killed by a judge) has no one to run them, and runs none.
"""

from __future__ import annotations

import os
from typing import Callable

from ..format.states import FINISHED, State
from ..format import layout
from ..system import fsio
from ..format.errors import LostOwnership
from ..format.job import Job
from ..store.store import Store
from .handoff import Moved, Handoff, Woken

Wake = Callable[[str, str], list[Woken]]  # (finished job, judge's owner) -> the waiters it moved


class Finishing:
    def __init__(self, store: Store, takes: Handoff, wake: Wake):
        self.store = store
        self.layout = store.layout
        self.takes = takes
        self._wake = wake  # Dependencies.wake_waiters_of

    def succeed(self, path: str, job_id: str, judge: str) -> Moved:
        """An owned file (processing/<owner>/<id>) into done/: the success is the move itself (the
        file keeps the attempts before this one, which readers add back). The source's existence
        is the proof of ownership: LostOwnership if it is gone. `judge`: the owner whose directory
        a waiter that dies is taken into."""
        name = layout.job_file(job_id)
        try:
            moved = fsio.move(path, os.path.join(self.layout.done, name))
        except FileNotFoundError:
            moved = False
        if not moved:
            raise LostOwnership(f"{path} was taken from us")
        return self._wake_waiters(Moved(job_id, State.DONE, name), judge)

    def complete(self, directory: str, moving: layout.Transit, job: Job, judge: str, *,
                 durable: bool = False, wake: bool = True) -> Moved:
        """The last step of a take (handoff.py), by its taker or by whoever finds it half done:
        into dead/ here, then the waiters judged; into pending/ or waiting/ by Handoff.complete.
        `durable`: dead/ is fsync'd before anyone is told (cancel). `wake=False` only for a judge
        of dependencies.py, whose own loop judges the killed waiter's waiters next (one loop, no
        recursion down a chain of waiters)."""
        if moving.state not in FINISHED:
            return self.takes.complete(directory, moving, job)
        name = layout.job_file(job.id)
        # RACE: the taker and a rescuer may both get here; the rename of .next. admits one, and
        # the other finds it gone: the move is done either way (and judging twice is harmless).
        fsio.move(os.path.join(directory, moving.next_name), os.path.join(self.layout.dir(moving.state), name))
        fsio.unlink_quietly(os.path.join(directory, moving.taken_name))
        if durable:
            fsio.fsync_dir(self.layout.dir(moving.state))
        moved = Moved(job.id, moving.state, name)
        return self._wake_waiters(moved, judge) if wake else moved

    def _wake_waiters(self, moved: Moved, judge: str) -> Moved:
        # RACE: a death here, after the rename, leaves the waiters' edges in after/: recovery's
        # sweep judges them. Any other process may judge them too meanwhile: a waiter's rename
        # out of waiting/ admits one judge.
        try:
            return moved._replace(woken=tuple(self._wake(moved.job_id, judge)))
        except Exception as e:  # the move stands; recovery's sweep of after/ judges them later
            return moved._replace(unwoken=f"{type(e).__name__}: {e}")
