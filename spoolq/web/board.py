"""What the dashboard reads for its pages: the overview, one page of a list (newest first for done
and dead, run order for pending), one job. Knows nothing of Flask: each returns plain data."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from ..format import layout
from ..format.job import iso
from ..reading.counts import Counts
from ..reading.stats import Recent, Series, collect
from ..reading.places import Place
from ..reading.views import JobView, Views
from ..running.metrics import Totals
from ..running.schedules import Schedules
from ..spool import Spool
from ..store import output
from ..format.states import State
from . import blockers

PAGE = 50
SEARCH_LIMIT = 5000  # files read at most to search commands (or queues) in one listing
DAY = 86400.0
NEWEST_FIRST = (State.DONE, State.DEAD)  # what an operator looks for is what just finished
ORDER = {**{state: "newest first" for state in NEWEST_FIRST}, State.PENDING: "in run order", State.SCHEDULED: "soonest first"}


@dataclass(frozen=True)
class Filter:
    """Which jobs of a state a list (or a bulk action on it) means: ids or commands holding
    `query`, of `queue`."""

    state: str
    query: str = ""
    queue: str = ""

    def places(self, views: Views) -> Sequence[Place]:
        places = views.places(self.state)
        return places[::-1] if self.state in NEWEST_FIRST else places

    def by_name(self, place: Place, known: dict[str, str | None]) -> bool | None:
        """Whether the job matches, from its name alone (or its queue as the census read it,
        `known`); None when its file must say."""
        query = True if not self.query or self.query in place.job_id else None
        queue: bool | None = True
        if self.queue:
            parsed = layout.parse_pending(os.path.basename(place.path))
            census = known.get(f"{place.inode}:{place.path}") if place.inode is not None else None
            if layout.is_quarantine_id(place.job_id):
                queue = False  # a quarantined file is of no queue
            elif parsed is not None:
                queue = parsed.queue == self.queue
            elif census is not None:
                queue = census == self.queue
            else:
                queue = None
        if query is None and self.query and layout.is_quarantine_id(place.job_id):
            query = False  # no command to search
        if query is False or queue is False:
            return False
        return True if query and queue else None

    def by_file(self, view: JobView) -> bool:
        if view.job is None:
            return False
        return ((not self.query or self.query in view.id or self.query in view.job.command)
                and (not self.queue or view.job.queue == self.queue))


@dataclass
class Walk:
    """The jobs a filter matches, in the list's order, each with its view when it had to be read
    (at most SEARCH_LIMIT files are read to decide)."""

    views: Views
    filter: Filter
    known: dict[str, str | None] = field(default_factory=dict)  # finished files' queues (JobCounter.queues_known)
    scanned: int = 0

    def __iter__(self) -> Iterator[tuple[Place, JobView | None]]:
        for place in self.filter.places(self.views):
            decided = self.filter.by_name(place, self.known)
            if decided is None:
                if self.scanned >= SEARCH_LIMIT:
                    continue
                self.scanned += 1
                view = self.views.view_at(place)
                if view is not None and self.filter.by_file(view):
                    yield place, view
            elif decided:
                yield place, None

    @property
    def limit_reached(self) -> bool:
        return self.scanned >= SEARCH_LIMIT


class DashboardState:
    """What the dashboard holds between requests: the spool and the caches of what it read."""

    def __init__(self, spool: Spool, *, read_only: bool):
        self.spool = spool
        self.read_only = read_only
        self.lock = threading.Lock()  # the caches are shared by the server's threads
        self.recent = Recent(DAY, time.time())
        self.totals = Totals()
        self.schedules = Schedules(spool)  # its cache of the schedules read: shared, under the lock

    def overview(self) -> dict[str, Any]:
        spool, now = self.spool, time.time()
        with self.lock:
            self.recent.update(spool.layout.dir("events"), now)
            census = spool.views.census(now)
            hour = collect(self.recent.between(now - 3600, now), census.ready_since, since=now - 3600, until=now)
            day = Series.over(self.recent.between(now - DAY, now), now - DAY, now, 48)
        running = [_running(view, now) for view in spool.list_jobs(state=State.PROCESSING)]
        workers = [{"host": w.host, "pid": w.pid, "worker": w.owner, "job": w.job,
                    "jobs": list(w.jobs), "slots": w.slots,
                    "heartbeat_age": round(max(0.0, now - w.heartbeat), 1) if w.heartbeat else None,
                    "queues": _names(w.extra.get("queues"))}
                   for w in sorted(spool.workers(role="worker"), key=lambda w: (w.host, w.pid))]
        paused = spool.paused()
        queues = {q: c.to_dict() for q, c in census.queues.items()}
        for name in sorted(paused - {"*"} - set(queues)):  # paused and empty: shown, so it can be resumed
            queues[name] = Counts().to_dict()
        return {"now": iso(now), "counts": census.totals.to_dict(), "queues": queues,
                "no_queue": census.no_queue.to_dict(), "paused": sorted(paused),
                "blockers": blockers.found(spool, census, workers, paused),
                "hour": hour.to_dict(), "day": {"series": day.to_dict(), "finished": sum(day.finished),
                                                "failed_attempts": sum(day.failed)},
                "running": running, "workers": workers, "_charts": (hour.series, day)}

    def walk(self, chosen: Filter) -> Walk:
        """The jobs `chosen` matches. A queue's finished jobs are told by the census (which reads
        each file once in this process's life, as the overview's counts do), so a queue filter
        on done/ or dead/ reaches every job of the queue, as many as its count on the overview."""
        if not chosen.queue or chosen.state not in NEWEST_FIRST:
            return Walk(self.spool.views, chosen)
        with self.lock:  # the census' tallies are shared by the server's threads
            self.spool.views.census()
            known = self.spool.views.counter.queues_known(self.spool.layout.dir(chosen.state))
        # RACE: a file that arrives after the census is not in `known`: it is read, as before. A
        # later census (another request) fills a new tally's dict, never this one: read unlocked.
        return Walk(self.spool.views, chosen, known)

    def jobs(self, chosen: Filter, page: int | None) -> dict[str, Any]:
        """One page of the jobs `chosen` matches (None: the last page). Only the page's files
        are read, but for a search of commands or a queue not in the names nor the census."""
        read: dict[Place, JobView] = {}  # the files a search read to decide
        matched: Sequence[Place]
        if chosen.query or chosen.queue:
            walk = self.walk(chosen)
            found: list[Place] = []
            for place, view in walk:
                found.append(place)
                if view is not None:
                    read[place] = view
            matched, searched_all = found, not walk.limit_reached
        else:  # every job listed matches: none is looked at but the page's (of 100,000 done jobs, every 2 s)
            matched, searched_all = chosen.places(self.spool.views), True
        pages = max(1, -(-len(matched) // PAGE))
        page = pages - 1 if page is None else min(page, pages - 1)
        shown = []
        for place in matched[page * PAGE:(page + 1) * PAGE]:
            view = read.get(place) or self.spool.views.view_at(place)
            if view is not None:  # else moved on since the listing
                shown.append(view)
        rows = [view.to_dict() for view in self.spool.views.timed(shown)]
        return {"state": chosen.state, "page": page, "page_size": PAGE, "query": chosen.query,
                "queue": chosen.queue, "total": len(matched), "jobs": rows, "pages": pages,
                "order": ORDER.get(chosen.state, "by id"),
                "search_limit_reached": not searched_all,
                "blocked": blockers.on_list(self.spool, chosen.state, chosen.queue)}

    def schedule_rows(self) -> list[dict[str, Any]]:
        """Every schedule as `schedule list` says it, with the state of its last slot's job."""
        now = time.time()
        working = bool(self.spool.workers(role="worker"))
        with self.lock:
            return [self.schedules.row(s, now, working=working) for s in self.schedules.all()]

    def job(self, job_id: str) -> dict[str, Any]:
        view = self.spool.find(job_id)
        d = view.to_dict()
        if view.job is None:  # a quarantined file: what it holds, and why it will never run
            d["bytes"] = _head(view.path, self.spool.store.uid)
            d["quarantined_why"] = view.reason
        log_path = self.spool.output_path(view.id)
        marks = output.attempts(log_path, owner=self.spool.store.uid)
        d["attempt_marks"] = [mark._asdict() | {"started": iso(mark.started)} for mark in marks]
        return d


QUARANTINE_SHOWN = 64 * 1024


def _head(path: str, owner: int) -> str:
    """The first bytes of a quarantined file as text (bytes that are not UTF-8 shown escaped),
    opened as a log is: never through a symlink, never waiting on a fifo."""
    f = output.open_log(path, owner=owner, any_uid=True)  # a member's drop-in is of its uid
    if f is None:
        return "(not a regular file)"
    with f:
        data = f.read(QUARANTINE_SHOWN + 1)
    more = f"\n… (the first {QUARANTINE_SHOWN} bytes)" if len(data) > QUARANTINE_SHOWN else ""
    return data[:QUARANTINE_SHOWN].decode("utf-8", errors="backslashreplace") + more


def _names(value: Any) -> list[str] | None:
    """A registration's queue list as a list of strings (the file is anyone's in the group)."""
    return [str(v) for v in value] if isinstance(value, list) else None


def _running(view: Any, now: float) -> dict[str, Any]:
    started = view.last_attempt.started
    return {"id": view.id, "command": view.job.command if view.job else None, "worker": view.owner,
            "host": view.last_attempt.host, "elapsed": round(now - started, 1) if started else None}
