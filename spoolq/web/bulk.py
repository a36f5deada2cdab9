"""Bulk actions of the job lists: retry, requeue or delete the jobs of a selection or of a whole
(filtered) list, through the library calls the CLI uses (`requeue`, `purge_ids`), in batches of
BATCH ids, stopping after BUDGET seconds so that no request outlives a browser's patience; what
was done, refused and left is said. Plain data, no Flask."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..format import layout
from ..spool import Spool
from ..format.states import State

BATCH = 200  # ids per library call: one lock taken and one shard sync per batch
BUDGET = 10.0  # seconds a request goes on taking batches; the rest is for the next press

# Per list: the bulk actions that can work there, and the past tense they are reported in.
ACTIONS = {State.DEAD: {"retry": "retried", "delete": "deleted"},
           State.DONE: {"requeue": "requeued", "delete": "deleted"},
           State.PENDING: {"delete": "deleted"}, State.SCHEDULED: {"delete": "deleted"}}


@dataclass
class Outcome:
    action: str
    done: int = 0
    refused: dict[str, str] = field(default_factory=dict)  # id -> why not
    skipped: int = 0  # quarantined files, which cannot run again
    left: bool = False  # stopped by the budget with more to do

    def said(self) -> str:
        verb = ACTIONS_PAST[self.action]
        parts = [f"{verb} {self.done} job{'' if self.done == 1 else 's'}"]
        if self.skipped:
            parts.append(f"{self.skipped} quarantined file{'' if self.skipped == 1 else 's'} skipped "
                         "(they cannot run: delete them)")
        if self.refused:
            first_id, why = next(iter(self.refused.items()))
            parts.append(f"{len(self.refused)} not ({why})" if first_id in why else
                         f"{len(self.refused)} not ({first_id}: {why})")
        if self.left:
            parts.append(f"stopped after {BUDGET:.0f} s with more to do: press again for the rest")
        return "; ".join(parts)


ACTIONS_PAST = {action: past for actions in ACTIONS.values() for action, past in actions.items()}


def run(spool: Spool, action: str, ids: Iterable[str], *, budget: float = BUDGET,
        clock: Callable[[], float] = time.monotonic) -> Outcome:
    """`action` on `ids` (taken lazily, so a whole list is read only as far as the budget goes)."""
    outcome = Outcome(action)
    until = clock() + budget
    batch: list[str] = []
    pending = iter(ids)
    for job_id in pending:
        if action != "delete" and layout.is_quarantine_id(job_id):
            outcome.skipped += 1
            continue
        batch.append(job_id)
        if len(batch) >= BATCH:
            _apply(spool, action, batch, outcome)
            batch = []
            if clock() >= until:
                outcome.left = next(pending, None) is not None
                return outcome
    if batch:
        _apply(spool, action, batch, outcome)
    return outcome


def _apply(spool: Spool, action: str, batch: list[str], outcome: Outcome) -> None:
    why = spool.purge_ids(batch) if action == "delete" else spool.requeue(batch)  # retry: a dead job requeued
    for job_id, reason in why.items():
        if reason is None:
            outcome.done += 1
        else:
            outcome.refused[job_id] = reason
