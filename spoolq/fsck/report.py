"""What one fsck run shares: the spool's rooms, the clocks, the problems found, and the census of
where every job id was seen."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

from ..format import job, layout
from ..system import fsio
from ..format.errors import SpoolError
from ..store.judge import OwnerJudge
from ..spool import Spool

STALE_AFTER = 3600.0


@dataclass
class Problem:
    kind: str  # see KINDS
    path: str
    detail: str
    repaired: bool = False
    repair: str | None = None  # what --repair did, or why it left the problem alone
    repairable: bool = True  # False: --repair leaves it alone (its writer's or the operator's to fix)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


KINDS = {
    "missing-dir": "a directory of the layout is missing",
    "not-a-spool": "a directory that holds other files and nothing of a spool: left as it is",
    "not-a-directory": "a layout path is not a directory",
    "unsafe-dir": "a spool directory that is a symlink, another user's, or writable by others",
    "ownership": "a file or directory of the spool owned by another user",
    "config": "config.json cannot be read, or holds what is not a setting",
    "dead-owner": "a processing/ directory whose owner is gone",
    "bad-job-file": "a job file that does not parse or is not a trusted regular file",
    "bad-dropin": "a dropped file a worker would quarantine",
    "stray-entry": "a file where the format has no place for it",
    "never-picked-up": "a file in pending/ or the Maildir that no worker will ever take",
    "duplicate": "a job id in more than one place",
    "missing-marker": "a job without its ids/ marker",
    "orphan-marker": "an ids/ marker without a job",
    "unrecorded-quarantine": "a quarantined file without its reason record",
    "orphan-reason": "a reason record without its quarantined file",
    "stale-temp": "a temp file left by a crash",
    "cut-batch": "a batch its enqueuer did not finish publishing (killed, or a power cut)",
    "old-lock": "a lock file of an earlier spoolq (its locks were renamed tokens)",
    "long-held-lock": "a lock held for over 10 minutes, naming its holder",
    "stuck-adoption": "a dropped file half-adopted by a live worker long ago",
    "stale-registration": "a worker registration whose process is gone",
    "stuck-waiting": "a waiting job whose dependencies have finished, and no one woke it",
    "gone-dependency": "a waiting job that waits for a job that is gone (purged)",
    "missing-edge": "a waiting job without the edge in after/ that its dependency's finish looks for",
    "stale-edge": "an edge in after/ whose waiting job is gone",
    "permissions": "a path more open than the spool's settings allow",
}


class Report:
    def __init__(self, spool: Spool, repair: bool, stale_after: float, now: float | None):
        self.spool = spool
        self.store = spool.store
        self.layout = spool.layout
        self.repair = repair
        self.stale_after = stale_after
        self.given_now = now is not None
        self.now = time.time() if now is None else now
        self.fs_now = self.now  # read from the file system once the layout is known to be there
        self.problems: list[Problem] = []
        self.census: dict[str, list[tuple[str, str]]] = {}  # id -> [(state, path)]
        self.accounted: set[str] = set()  # ids kept reserved by a quarantined file, or a batch's plan
        self.planned: set[str] = set()  # temp files a batch's plan still names
        self.live_dirs: list[str] = []  # processing/ entries of live owners
        self.rescuer = layout.owner_token(layout.host_name(), os.getpid())
        self._judge: OwnerJudge | None = None

    def report(self, kind: str, path: str, detail: str) -> Problem:
        problem = Problem(kind, path, detail)
        self.problems.append(problem)
        return problem

    def repair_with(self, problem: Problem, action: Callable[[], str | None], done: str = "") -> None:
        """Run a repair when repairing; record what it did (its return value, else `done`)."""
        if not self.repair:
            return
        try:
            said = action()
        except (OSError, SpoolError) as e:
            problem.repair = f"repair failed: {getattr(e, 'strerror', None) or e}"
            return
        problem.repair = said or done
        problem.repaired = not problem.repair.startswith("left alone")

    def leave_alone(self, problem: Problem, why: str) -> None:
        problem.repairable = False
        if self.repair:
            problem.repair = f"left alone: {why}"

    def entries(self, directory: str) -> Iterator[tuple[str, str, os.stat_result]]:
        """(name, path, lstat) of each entry of `directory` still there, in name order."""
        for name in sorted(fsio.listdir(directory)):
            path = os.path.join(directory, name)
            st = fsio.lstat_if_there(path)
            if st is not None:  # else moved on while we looked
                yield name, path, st

    def is_stale(self, st: os.stat_result) -> bool:
        return self.fs_now - st.st_mtime >= self.stale_after

    def why_left_over(self, creator: layout.Creator | None, st: os.stat_result) -> str | None:
        """Why a temp file or a marker counts as a crash leftover, or None (its creator may still
        be at work). A creator that is gone says so at once; one that cannot be judged from here
        (another host, or a file of spoolq 0.1 that names none) only once the file is stale_after
        old."""
        if creator is not None:
            if self._judge is None:
                self._judge = self.spool.owners.judge()
            gone = self.spool.owners.why_creator_gone(creator, self._judge)
            if gone:
                return f"its creator is gone ({gone})"
            if creator.owner or layout.safe_host(creator.host) == layout.safe_host(self._judge.here):
                return None  # alive: a worker within its lease, or a live process here
        return f"{self.age(st)} old" if self.is_stale(st) else None

    def age(self, st: os.stat_result) -> str:
        seconds = max(0.0, self.fs_now - st.st_mtime)
        if seconds >= 7200:
            return f"{seconds / 3600:.0f}h"
        if seconds >= 120:
            return f"{seconds / 60:.0f}min"
        return f"{seconds:.0f}s"

    def record_place(self, job_id: str, state: str, path: str) -> None:
        self.census.setdefault(job_id, []).append((state, path))

    def quarantine(self, path: str, source: str, reason: str) -> str:
        qid = self.spool.quarantine.put(path, source, f"{reason} (found by fsck)", self.now)
        if not self.spool.quarantine.exists(qid):
            return "left alone: it moved on while fsck looked"
        self.account_for(source)
        return f"quarantined as dead/{qid}.json (bytes kept, reason recorded)"

    def account_for(self, source: object) -> None:
        """A quarantined file's source name keeps its id reserved: the marker is not an orphan."""
        if not isinstance(source, str) or not source.endswith(".json"):
            return
        parsed = layout.parse_pending(source)
        if parsed is not None:
            self.accounted.add(parsed.job_id)
        elif job.valid_id(layout.stem(source)):
            self.accounted.add(layout.stem(source))
