"""The states of a job: one name each, spelled as its directory, the CLI and JSON spell it.

A state is the directory a job's file is in (layout.py's docstring), except ``scheduled``: a
pending job whose due time is still ahead. A new state goes here, its directory into layout.py
(STATE_DIRS and the docstring), and the moves into and out of it into moves/transitions.py.

Every module names a state as ``State.X``, the StrEnum below, except the few on one plain
enqueue's path (layout.py, ours.py, store/trust.py, moves/enqueue.py), which name it by the
plain string of the same name here (``states.PENDING``): `enum`, with the functools and
collections it loads, costs that call about 0.4 x `python -c pass`. ``State`` is made when first
asked for, from these same strings, so a member and its string are equal and hash alike.
"""

from __future__ import annotations

PENDING, SCHEDULED, WAITING, PROCESSING, DONE, DEAD = "pending", "scheduled", "waiting", "processing", "done", "dead"
STATES = (PENDING, SCHEDULED, WAITING, PROCESSING, DONE, DEAD)  # every state, in the order listings count them

TYPE_CHECKING = False  # typing is not worth loading on one enqueue's path
if TYPE_CHECKING:  # what a type checker (mypy) is told State is; _state_class makes it from STATES
    from enum import StrEnum

    class State(StrEnum):
        PENDING = PENDING
        SCHEDULED = SCHEDULED
        WAITING = WAITING
        PROCESSING = PROCESSING
        DONE = DONE
        DEAD = DEAD

    FINISHED: tuple[State, State]
    NOT_STARTED: tuple[State, State]


def _state_class() -> type:
    from enum import StrEnum

    state = StrEnum("State", [(name.upper(), name) for name in STATES], module=__name__, qualname="State")
    state.__doc__ = 'A str: equal to its name on disk and in JSON ("done"), and printed as that name.'
    return state


def _made(name: str) -> object:
    # RACE: two threads asking at once may each make a State; setdefault keeps the first one
    # bound and hands it to both (the other is dropped unseen), so there is only ever one.
    state = globals().get("State") or globals().setdefault("State", _state_class())
    if name == "FINISHED":  # no move leaves them but requeue, dlq retry and purge
        return globals().setdefault(name, (state.DONE, state.DEAD))
    if name == "NOT_STARTED":  # in pending/: purge deletes them by an unlink alone
        return globals().setdefault(name, (state.PENDING, state.SCHEDULED))
    return state


def __getattr__(name: str) -> object:
    """State and the tuples of its members, bound here on first use: constants from then on."""
    if name in ("State", "FINISHED", "NOT_STARTED"):
        return _made(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
