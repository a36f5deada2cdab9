"""Stats: what a spool did over a window of time, from the attempts log (attempts_log.py), and how long
its oldest ready job has waited, from the pending names. Read-only and plain data: the CLI's
`stats`, `metrics` and the dashboard all print or draw these same figures."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Collection, Iterable

from ..format.states import FINISHED, State
from ..format import durations, job
from ..store.attempts_log import FinishedAttempt

MAX_WINDOW = 366 * 86400.0


def parse_window(text: str) -> float:
    """A stats window (durations.py's syntax): more than 0, at most 366 days."""
    return durations.parse_within(text, 0, MAX_WINDOW, low_open=True)


def percentile(ordered: list[float], p: float) -> float | None:
    """The nearest-rank percentile of an ascending list (None if it is empty)."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


@dataclass
class Figures:
    """One queue's figures over the window (or every queue's, for the total)."""

    done: int = 0
    failed: int = 0  # failed attempts: retried or dead
    dead: int = 0
    lost: int = 0  # attempts whose worker lost the job (recovered elsewhere): no outcome
    run: list[float] = field(default_factory=list)
    wait: list[float] = field(default_factory=list)
    oldest_ready_since: float | None = None  # when the longest-waiting ready job became ready

    def add(self, fact: FinishedAttempt) -> None:
        if fact.outcome == State.DONE:
            self.done += 1
        elif fact.outcome == "lost":
            self.lost += 1
            return
        else:
            self.failed += 1
            self.dead += fact.outcome == State.DEAD
        self.run.append(fact.run_seconds)
        self.wait.append(fact.wait_seconds)

    @staticmethod
    def merged(parts: Iterable[Figures]) -> Figures:
        total = Figures()
        for f in parts:
            total.done, total.failed, total.dead, total.lost = (total.done + f.done, total.failed + f.failed,
                                                                total.dead + f.dead, total.lost + f.lost)
            total.run += f.run
            total.wait += f.wait
        return total

    def ready_since(self, since: float) -> None:
        if self.oldest_ready_since is None or since < self.oldest_ready_since:
            self.oldest_ready_since = since

    def to_dict(self, window: float, now: float) -> dict[str, Any]:
        run, wait = sorted(self.run), sorted(self.wait)
        attempts = self.done + self.failed
        return {
            State.DONE: self.done,
            "failed_attempts": self.failed,
            State.DEAD: self.dead,
            "lost_attempts": self.lost,
            "success_rate": round(self.done / attempts, 4) if attempts else None,
            "throughput_per_min": round((self.done + self.dead) / (window / 60.0), 3),
            "run_seconds": {"p50": _r(percentile(run, 0.5)), "p95": _r(percentile(run, 0.95)),
                            "max": _r(run[-1] if run else None)},
            "wait_seconds": {"p50": _r(percentile(wait, 0.5)), "p95": _r(percentile(wait, 0.95))},
            "oldest_ready_age": _r(max(0.0, now - self.oldest_ready_since)) if self.oldest_ready_since else None,
        }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass
class Series:
    """Jobs finished (done or dead) and failed attempts per bucket of the window, oldest first."""

    start: float
    bucket_seconds: float
    finished: list[int]
    failed: list[int]

    def add(self, fact: FinishedAttempt) -> None:
        i = int((fact.finished - self.start) // self.bucket_seconds)
        if 0 <= i < len(self.finished):
            self.finished[i] += fact.outcome in FINISHED
            self.failed[i] += fact.outcome in ("retry", State.DEAD)

    @staticmethod
    def over(facts: Iterable[FinishedAttempt], since: float, until: float, buckets: int) -> Series:
        series = Series(since, (until - since) / buckets, [0] * buckets, [0] * buckets)
        for fact in facts:
            series.add(fact)
        return series

    def to_dict(self) -> dict[str, Any]:
        return {"start": job.iso(self.start), "bucket_seconds": self.bucket_seconds,
                "finished": self.finished, "failed": self.failed}


@dataclass
class Stats:
    since: float
    until: float
    total: Figures
    queues: dict[str, Figures]
    series: Series

    @property
    def window(self) -> float:
        return self.until - self.since

    def to_dict(self) -> dict[str, Any]:
        return {"since": job.iso(self.since), "until": job.iso(self.until), "window_seconds": round(self.window, 3),
                "total": self.total.to_dict(self.window, self.until),
                "queues": {q: f.to_dict(self.window, self.until) for q, f in sorted(self.queues.items())},
                "series": self.series.to_dict()}


def collect(facts: Iterable[FinishedAttempt], ready_since: dict[str | None, float], *, since: float, until: float,
            queue: str | Collection[str] | None = None, buckets: int = 60) -> Stats:
    """Figures over [since, until) from `facts` (those of the window), and the oldest ready job
    per queue (`ready_since`: queue -> when it became ready; None: a dropped file, queue unknown
    until adopted). With `queue` (a name, or several), those queues' alone."""
    wanted = None if queue is None else frozenset([queue] if isinstance(queue, str) else queue)
    series = Series.over((), since, until, buckets)
    queues: dict[str, Figures] = {}
    for fact in facts:
        if wanted is not None and fact.queue not in wanted:
            continue
        figures = queues.get(fact.queue)
        if figures is None:
            figures = queues[fact.queue] = Figures()
        figures.add(fact)
        series.add(fact)
    total = Figures.merged(queues.values())
    for name, at in ready_since.items():
        if wanted is not None and name not in wanted:
            continue
        total.ready_since(at)
        if name is not None:
            queues.setdefault(name, Figures()).ready_since(at)
    return Stats(since, until, total, queues, series)


class Recent:
    """The attempts of the last `horizon` seconds, held by a long-running reader (the dashboard)
    and brought up to date from what the log appended since its last look."""

    def __init__(self, horizon: float, now: float):
        from ..store.attempts_log import Tail

        self.horizon = horizon
        self.tail = Tail(since=now - horizon)
        self.facts: list[FinishedAttempt] = []

    def update(self, directory: str, now: float) -> None:
        self.facts += self.tail.new(directory)
        cutoff = now - self.horizon
        if self.facts and min(self.facts[0].finished, self.facts[-1].finished) < cutoff:
            self.facts = [f for f in self.facts if f.finished >= cutoff]

    def between(self, since: float, until: float) -> Iterable[FinishedAttempt]:
        return (f for f in self.facts if since <= f.finished < until)


def human_window(seconds: float) -> str:
    """A window as it was likely given: 1h, 30m, 7d (else in seconds)."""
    return durations.show(seconds)


def human_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.3f}s"
    if value < 120:
        return f"{value:.1f}s"
    if value < 7200:
        return f"{value / 60:.1f}m"
    if value < 2 * 86400:
        return f"{value / 3600:.1f}h"
    return f"{value / 86400:.1f}d"
