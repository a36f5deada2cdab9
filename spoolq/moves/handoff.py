"""Handoff: how a job file leaves an owner's directory, ``processing/<owner>/``, so that its owner
and a rescuer can never both move it, even where the owner's client still reaches the directory
by a cached old name after the rescuer renamed it (GlusterFS at its defaults, for about a second;
NFS with cached lookups).

Three rules. The rescuer marks the directory (``.fenced``) before it renames it, and an owner
looks for the mark before it claims into, or records a result from, its directory: the mark is
inside the directory, so a cached name reaches it too. Every move out starts with a rename of the
job file itself, which exactly one of owner and rescuer wins. And new content (a failed attempt,
an adopted drop-in) is never renamed over the job file, which could bring back a file the rescuer
had already taken: it is written beside it as ``.next.<state>.<key>.<name>``, the job file is
taken by renaming it to ``.taken.<state>.<key>.<name>`` (the step that decides), and the ``.next.``
file is renamed out; a ``.taken.`` file whose ``.next.`` file is still there is a move half done,
which whoever finds it completes (recovery.py).
"""

from __future__ import annotations

import os
from typing import NamedTuple

from ..format.states import State
from ..format import layout
from ..system import fsio
from ..format.errors import LostOwnership
from ..format.job import Job
from ..store.store import Store


Woken = tuple[str, str, str]  # (the job it waited for, a waiter, State.PENDING or State.DEAD)


class Moved(NamedTuple):
    """Where a transition left a job: its state (directory) and its file name there; for a
    finish (finishing.py), the waiters it moved on, or why it could not judge them."""

    job_id: str
    state: str  # "pending" (to run again at its due time), "done" or "dead"
    name: str  # in pending/, the entry: "<canonical>" or "=<shard>/<canonical>" (shards.py)
    woken: tuple[Woken, ...] = ()
    unwoken: str | None = None

    def seen_as(self, now: float) -> str:
        """Its state as `show` and `status` say it at `now`: back in pending/ but due later (a
        retry's backoff) is scheduled."""
        if self.state != State.PENDING:
            return self.state
        parsed = layout.parse_pending(self.name.rsplit("/", 1)[-1])
        return State.SCHEDULED if parsed is not None and parsed.due_ms > now * 1000 else State.PENDING


class Handoff:
    def __init__(self, store: Store):
        self.store = store
        self.layout = store.layout

    def check_fence(self, path: str) -> None:
        """Raise LostOwnership if a rescuer has marked the directory `path` is in."""
        directory = path.rpartition("/")[0]  # a job's path, absolute: dirname without its cost
        if fsio.present(f"{directory}/{layout.FENCE_FILE}"):
            raise LostOwnership(f"{directory} was fenced by a rescuer")

    def take_with(self, path: str, job: Job, state: str, *, into: str | None = None) -> layout.Transit:
        """The first two steps of a move out with new content: `job` written beside `path`
        (.next.), then `path` taken (.taken.). LostOwnership if a rescuer took it first.
        complete() does the last step. With `into` (an owner's directory; cancel.py), the job
        file is taken from elsewhere (pending/) into that directory, where the mark is looked for."""
        directory = into or os.path.dirname(path)
        moving = layout.transit(state, layout.job_file(job.id) if into else os.path.basename(path))
        if into:
            self.check_fence(os.path.join(into, moving.original))
        next_path = os.path.join(directory, moving.next_name)
        try:
            self.store.write_file(next_path, job.to_json(), durable=True)
        except FileNotFoundError:
            raise LostOwnership(f"{directory} is gone") from None
        taken_path = os.path.join(directory, moving.taken_name)
        try:
            # RACE: a rescuer may take `path` at the same moment (recovery.py); one rename wins.
            taken = fsio.move(path, taken_path)
        except FileNotFoundError:
            taken = False
        # A rename retried by a network file system's client after a lost reply can say ENOENT
        # though it was done: the taken name tells.
        if not taken and not os.path.lexists(taken_path):
            fsio.unlink_quietly(next_path)
            raise LostOwnership(f"{path} was taken from us")
        return moving

    def complete(self, directory: str, moving: layout.Transit, job: Job) -> Moved:
        """The last step (by the owner, or by whoever finds the move half done): the new content
        into pending/ or waiting/, then the taken file goes. A move into dead/ is a finish:
        Finishing.complete (finishing.py)."""
        src = os.path.join(directory, moving.next_name)
        # RACE: the owner and a rescuer may both get here; the rename of .next. admits one, and
        # the other finds it gone: the move is done either way.
        if moving.state == State.PENDING:
            name = self.store.shards.move_in(src, layout.pending_name_of(job)) or layout.pending_name_of(job)
        elif moving.state == State.WAITING:
            name = layout.job_file(job.id)
            fsio.move(src, os.path.join(self.layout.dir(State.WAITING), name))
        else:
            raise ValueError(f"a move into {moving.state}/ is a finish (finishing.py)")
        fsio.unlink_quietly(os.path.join(directory, moving.taken_name))
        return Moved(job.id, moving.state, name)
