"""The states of a job: one name each, spelled as its directory, the CLI and JSON spell it.

A state is the directory a job's file is in (layout.py's docstring), except ``scheduled``: a
pending job whose due time is still ahead. A new state goes here, its directory into layout.py
(STATE_DIRS and the docstring), and the moves into and out of it into moves/transitions.py.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """A str: equal to its name on disk and in JSON ("done"), and printed as that name."""

    PENDING = "pending"
    SCHEDULED = "scheduled"
    WAITING = "waiting"
    PROCESSING = "processing"
    DONE = "done"
    DEAD = "dead"


STATES = tuple(state.value for state in State)  # every state, in the order listings count them
FINISHED = (State.DONE, State.DEAD)  # no move leaves them but requeue, dlq retry and purge
NOT_STARTED = (State.PENDING, State.SCHEDULED)  # in pending/: purge deletes them by an unlink alone
