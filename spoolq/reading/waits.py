"""Waiting for jobs to finish, by looking at them: at once, then again after a pause half again
as long as the last (10 ms at first, never more than 0.2 s), until a deadline. A finish is a
rename in another process, on this host or another, so there is nothing to be told: a look is
what there is. Spool.wait (the Python API), `spoolq wait` (which draws its progress between
looks) and `spoolq logs -f` (which prints what the log gained) look the same way."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Iterator

from ..format import layout
from ..format.errors import WaitTimeout
from ..format.states import FINISHED, State
from ..system import fsio

if TYPE_CHECKING:
    from ..format.layout import Layout
    from .views import JobView

FIRST_PAUSE = 0.01  # seconds: a quick job is seen finished at once
LONGEST_PAUSE = 0.2  # seconds: a long wait costs a look five times a second


def looks(deadline: float | None) -> Iterator[None]:
    """Yields when it is time to look: at once, then after each pause, the last time when
    `deadline` (time.monotonic(); None: never) comes; then it ends (the wait timed out)."""
    pause = FIRST_PAUSE
    while True:
        yield
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return
        time.sleep(pause if left is None else min(pause, left))
        pause = min(pause * 1.5, LONGEST_PAUSE)


def until_finished(find: Callable[[str], JobView], job_ids: list[str], timeout: float | None) -> list[JobView]:
    """The views of the jobs (`find` of each), in the order given, once every one is done or dead;
    WaitTimeout, naming those left, once `timeout` seconds have passed (None: no limit)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    views: list[JobView] = []
    for _ in looks(deadline):
        views = [find(job_id) for job_id in job_ids]
        if all(view.state in FINISHED for view in views):
            return views
    left = [view.id for view in views if view.state not in FINISHED]
    raise WaitTimeout(f"{len(left)} job{'s' * (len(left) != 1)} not finished after {timeout:g}s: "
                      f"{' '.join(left[:10])}{' …' if len(left) > 10 else ''}", left)


def dead_ids(lay: Layout) -> set[str]:
    """The ids in dead/ now (quarantined files' too), from its listing alone: a wait without ids
    takes it twice, and Views.places would lstat every file of it, for an order not needed here."""
    dead = lay.dir(State.DEAD)
    return {layout.stem(entry) for entry in fsio.listdir(dead) if layout.is_json_entry(entry)}
