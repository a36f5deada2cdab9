"""Counting: how many jobs each state and queue holds, and since when the oldest ready job of each
queue has waited, from the directories' listings (reading a job file only to learn the queue of
one not in pending/, once per file for a reader that counts again). Read-only."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field

from ..format.states import State
from ..format import job, layout
from ..store import maildir, shards
from ..system import fsio
from ..store.owners import Owners
from ..store.store import Store
from .places import Still, stamp_of


@dataclass
class Counts:
    pending: int = 0
    scheduled: int = 0
    waiting: int = 0  # for other jobs (enqueue --after)
    processing: int = 0
    done: int = 0
    dead: int = 0  # dead jobs; a quarantined file, also in dead/, is no job: it counts apart
    quarantined: int = 0  # dropped files that were never a job (docs/format.md: the drop-in protocol)
    workers: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class CountsByQueue:
    """Jobs per state in total (`workers` and quarantined files too) and per queue (a quarantined
    file is of no queue), and when each queue's oldest ready job became ready."""

    totals: Counts
    queues: dict[str, Counts]
    ready_since: dict[str | None, float]  # queue (None: dropped, not adopted) -> oldest ready job's since
    no_queue: Counts = field(default_factory=Counts)


class JobCounter:
    def __init__(self, store: Store, owners: Owners):
        self.store = store
        self.layout = store.layout
        self.owners = owners
        self._tallies: dict[str, _Tally] = {}  # a directory -> what its last count found

    def counts(self, now: float | None = None) -> Counts:
        now_ms = str(int(self.store.now(now) * 1000)).zfill(13)
        c = Counts()
        for entry in self.store.shards.entries():
            if layout.is_canonical(entry):
                # The due field sits at a fixed offset; comparing digit strings avoids int() per entry.
                if shards.base(entry)[layout.DUE_FIELD] > now_ms:
                    c.scheduled += 1
                else:
                    c.pending += 1
            elif self._dropped_at(entry) is not None:
                c.pending += 1
        c.pending += len(maildir.deliveries(self.layout))  # after pending/: see _pending_census's RACE
        for owner in fsio.listdir(self.layout.processing):
            c.processing += _count_json(self.layout.owned(owner))
        c.waiting = _count_json(self.layout.dir(State.WAITING))
        c.done = _count_json(self.layout.done)
        for entry in fsio.listdir(self.layout.dead):
            if layout.is_json_entry(entry):
                if layout.is_quarantine_id(entry):
                    c.quarantined += 1
                else:
                    c.dead += 1
        c.workers = len(self.owners.workers(role="worker"))
        return c

    def census(self, now: float | None = None) -> CountsByQueue:
        """Every job counted once, in total and per queue, with each queue's oldest ready job, from
        one listing of each directory (what the dashboard and metrics show at each refresh)."""
        now = self.store.now(now)
        census = self._pending_census(now)
        tallies = {}
        for owner in fsio.listdir(self.layout.processing):
            tallies[self.layout.owned(owner)] = State.PROCESSING
        for state in (State.WAITING, State.DONE, State.DEAD):
            tallies[self.layout.dir(state)] = state
        self._tallies = {directory: self._tally(directory, self._tallies.get(directory)).add_to(census, state)
                         for directory, state in tallies.items()}  # what is gone is forgotten
        census.queues = dict(sorted(census.queues.items()))
        census.totals.workers = len(self.owners.workers(role="worker"))
        return census

    def queues_known(self, directory: str) -> dict[str, str | None]:
        """The queue of each job file of `directory` ("<inode>:<path>" -> queue, None if it could not
        be read) as the last census read it: a reader that filters by queue opens none of them again."""
        tally = self._tallies.get(directory)
        return tally.queue_of if tally is not None else {}

    def pending_queues(self, now: float | None = None) -> set[str]:
        """The queues of the jobs in pending/ (ready or scheduled), from their names alone."""
        return set(self._pending_census(self.store.now(now)).queues)

    def ready_since(self, now: float | None = None) -> dict[str | None, float]:
        """Per queue, when its longest-waiting ready job became ready: its enqueue or its due time,
        whichever is later (both in its name); a dropped file not yet adopted counts from its
        ctime, under None (its queue is known once adopted)."""
        return self._pending_census(self.store.now(now)).ready_since

    def _pending_census(self, now: float) -> CountsByQueue:
        now_ms = int(now * 1000)
        census = CountsByQueue(Counts(), {}, {})
        totals, queues, ready = census.totals, census.queues, census.ready_since
        entries, oldest = self.store.shards.entries(), {}  # oldest: queue -> the name its ready_since is from
        for entry in entries:
            parsed = layout.parse_pending(entry)
            if parsed is not None:
                c = queues.get(parsed.queue) or queues.setdefault(parsed.queue, Counts())
                if parsed.due_ms > now_ms:
                    c.scheduled += 1
                    totals.scheduled += 1
                    continue
                c.pending += 1
                at, key = max(parsed.seq / 1e9, parsed.due_ms / 1000.0), parsed.queue
            else:
                at = self._dropped_at(entry)
                if at is None:
                    continue
                queues.setdefault(job.DEFAULT_QUEUE, Counts()).pending += 1  # its queue is known once adopted
                key = None
            totals.pending += 1
            if key not in ready or at < ready[key]:
                ready[key] = at
                oldest[key] = entry
        for queue, entry in oldest.items():
            st = fsio.lstat_if_there(self.store.shards.path(entry)) if queue is not None else None
            if st is not None and self.store.why_untrusted(st):
                ready[queue] = self._believed_since(entries, queue, now_ms)
                if ready[queue] == float("inf"):
                    del ready[queue]  # all gone meanwhile
        # In the Maildir, not moved into pending/ yet: counted as a dropped file is. RACE: a worker
        # moving one into pending/ after pending/ was listed above makes this count miss it once,
        # never count it twice (pending/ is listed first); the next count has it.
        delivered = [st.st_ctime for _, st in maildir.deliveries(self.layout)]
        if delivered:
            queues.setdefault(job.DEFAULT_QUEUE, Counts()).pending += len(delivered)
            totals.pending += len(delivered)
            ready[None] = min(delivered + ([ready[None]] if None in ready else []))
        return census

    def _believed_since(self, entries: list[str], queue: str, now_ms: int) -> float:
        """When `queue`'s oldest ready job became ready, by the names of files a claim would run;
        one another uid wrote, or could rewrite, counts from its arrival (ctime): anyone who may
        write into pending/ can name a file "ready since 1970". Looked for only when the oldest
        name is such a file (one lstat a queue otherwise)."""
        named = []
        for entry in entries:
            parsed = layout.parse_pending(entry)
            if parsed is not None and parsed.queue == queue and parsed.due_ms <= now_ms:
                named.append((max(parsed.seq / 1e9, parsed.due_ms / 1000.0), entry))
        since = float("inf")
        for at, entry in sorted(named):
            if at >= since:
                break
            st = fsio.lstat_if_there(self.store.shards.path(entry))
            if st is not None and not self.store.why_untrusted(st):
                return at
            since = min(since, st.st_ctime) if st is not None else since
        return since

    def _dropped_at(self, entry: str) -> float | None:
        """When a dropped file arrived (its ctime: its rename into pending/, or its writer's last
        write), or None: not a dropped file. Never its mtime, which its writer sets at will (any
        member of a shared spool's group: a file "ready since 1970" for the owner's alerts)."""
        if not layout.is_dropin(entry):
            return None
        try:
            st = os.lstat(os.path.join(self.layout.pending, entry))
        except OSError:
            return None
        return None if stat.S_ISDIR(st.st_mode) else st.st_ctime

    def _tally(self, directory: str, last: _Tally | None) -> _Tally:
        """The jobs of a directory per queue: the last count again while the directory has not
        changed since (one stat: Still), else a new one that opens only the files new since."""
        stamp = stamp_of(directory)
        if last is not None and last.still.holds(stamp):
            return last
        tally = _Tally(Still.listed(stamp))
        known = last.queue_of if last is not None else {}
        for entry, inode in fsio.listdir_inodes(directory):
            if not layout.is_json_entry(entry):
                continue
            if layout.is_quarantine_id(entry) and directory == self.layout.dead:
                tally.quarantined += 1  # no job, of no queue
                continue
            tally.jobs += 1
            path = f"{directory}/{entry}"
            # A job's queue never changes, and a file keeps its name and inode while it holds one
            # job: a reader that counts again (the dashboard, metrics) opens only the files new since.
            key = f"{inode}:{path}"
            queue = known[key] if key in known else _queue_in_file(path)
            tally.queue_of[key] = queue
            if queue is not None:
                tally.queues[queue] = tally.queues.get(queue, 0) + 1
        return tally


@dataclass
class _Tally:
    still: Still  # the directory as it was counted, and whether the count may be used again
    jobs: int = 0
    quarantined: int = 0
    queues: dict[str, int] = field(default_factory=dict)
    queue_of: dict[str, str | None] = field(default_factory=dict)  # "<inode>:<path>" of a job file -> its queue

    def add_to(self, census: CountsByQueue, state: str) -> _Tally:
        setattr(census.totals, state, getattr(census.totals, state) + self.jobs)
        census.totals.quarantined += self.quarantined
        for queue, n in self.queues.items():
            c = census.queues.get(queue) or census.queues.setdefault(queue, Counts())
            setattr(c, state, getattr(c, state) + n)
        return self


def _count_json(path: str) -> int:
    return sum(1 for e in fsio.listdir(path) if layout.is_json_entry(e))


def _queue_in_file(path: str) -> str | None:
    """The queue a job file names (the default one when it names none); None if it cannot be read.
    Most files are of the default queue and never mention it: those are not parsed."""
    try:
        data, _ = fsio.read_regular(path, job.MAX_JOB_BYTES)
    except (OSError, ValueError):
        return None
    if b'"queue"' not in data:
        return job.DEFAULT_QUEUE
    try:
        queue = json.loads(data).get("queue", job.DEFAULT_QUEUE)
    except (ValueError, AttributeError):
        return None
    return queue if job.valid_queue(queue) else None
