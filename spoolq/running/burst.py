"""A burst's own retries: a `worker start --burst` waits out the backoff of the jobs it ran that
failed and will be retried, then leaves (what a pipeline that waits for its jobs expects)."""

from __future__ import annotations

from ..format import layout
from ..pending.index import PendingIndex


class Retrying:
    """The retries a burst worker scheduled (pending entries), which it waits out before leaving."""

    def __init__(self) -> None:
        self.entries: set[str] = set()

    def left(self, index: PendingIndex, paused: frozenset[str]) -> bool:
        """Whether any is left to run: one a fresh listing still shows in pending/ (another worker
        may have run it), of a queue not paused (a burst leaves those, as it leaves their jobs)."""
        # RACE: another worker may claim a retry after the listing: this one then waits until it
        # is due, loses the claim, lists again and leaves; nothing runs twice (the claim decides).
        self.entries = {entry for entry in self.entries if index.knows(entry)}
        return any(_queue(entry) not in paused for entry in self.entries)


def _queue(pending_entry: str) -> str:
    parsed = layout.parse_pending(pending_entry.rsplit("/", 1)[-1])
    return parsed.queue if parsed is not None else layout.DEFAULT_QUEUE
