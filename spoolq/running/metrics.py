"""Metrics: the spool in Prometheus's text exposition format (version 0.0.4), for `spoolq metrics`,
the dashboard's /metrics and the textfile the workers keep for node_exporter.

Gauges come from the spool's directories as they are now; the attempt counters and the run
and wait time histograms from the attempts log (attempts_log.py). A long-running reader (the
dashboard, a worker keeping the textfile) folds each log file in once and then reads only what
was appended, so its counters only grow; a new reader starts from the attempts the log still
keeps (keep_events), which Prometheus takes as a counter reset, as after any restart.
The format is small enough to write by hand: the client library would be a fourth dependency.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from typing import TYPE_CHECKING, Callable

from ..format.states import STATES
from ..format import layout
from ..store import attempts_log
from ..system import fsio

if TYPE_CHECKING:
    from ..spool import Spool

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class Histogram:
    def __init__(self) -> None:
        self.counts = [0] * len(BUCKETS)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.total += 1
        self.sum += value
        for i, bound in enumerate(BUCKETS):
            if value <= bound:
                self.counts[i] += 1
                return  # cumulated when written


class Totals:
    """The attempts log folded into counters and histograms, per queue; `update` reads on from
    where the last one stopped in each file."""

    def __init__(self) -> None:
        self.tail = attempts_log.Tail()
        self.attempts: dict[tuple[str, str], int] = defaultdict(int)  # (queue, outcome) -> count
        self.run: dict[str, Histogram] = defaultdict(Histogram)
        self.wait: dict[str, Histogram] = defaultdict(Histogram)

    def update(self, directory: str) -> None:
        for fact in self.tail.new(directory):
            self._add(fact)

    def _add(self, fact: attempts_log.FinishedAttempt) -> None:
        self.attempts[(fact.queue, fact.outcome)] += 1
        if fact.outcome != "lost":
            self.run[fact.queue].observe(fact.run_seconds)
            self.wait[fact.queue].observe(fact.wait_seconds)


def label(value: str) -> str:
    """A label value, escaped as the format asks (a host name comes from a file anyone in the
    spool's group can write)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


class Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]

    def sample(self, name: str, labels: dict[str, str], value: float) -> None:
        inner = ",".join(f'{k}="{label(v)}"' for k, v in labels.items())
        self.lines.append(f"{name}{{{inner}}} {_number(value)}" if inner else f"{name} {_number(value)}")

    def histogram(self, name: str, help_text: str, per_queue: dict[str, Histogram]) -> None:
        self.family(name, "histogram", help_text)
        for queue, h in sorted(per_queue.items()):
            running = 0
            for bound, n in zip(BUCKETS, h.counts):
                running += n
                self.sample(f"{name}_bucket", {"queue": queue, "le": repr(bound)}, running)
            self.sample(f"{name}_bucket", {"queue": queue, "le": "+Inf"}, h.total)
            self.sample(f"{name}_sum", {"queue": queue}, round(h.sum, 6))
            self.sample(f"{name}_count", {"queue": queue}, h.total)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def exposition(spool: Spool, totals: Totals, now: float | None = None) -> str:
    """The spool's metrics now; `totals` is brought up to date from the attempts log first."""
    now = spool.store.now(now)
    totals.update(spool.layout.dir("events"))
    census = spool.views.census(now)
    out = Exposition()
    out.family("spoolq_jobs", "gauge", "Jobs by state and queue.")
    for queue, counts in census.queues.items():
        for state in STATES:
            out.sample("spoolq_jobs", {"state": state, "queue": queue}, getattr(counts, state))
    out.family("spoolq_quarantined_files", "gauge",
               "Dropped files that were never a job, kept in dead/ with why (not counted in spoolq_jobs).")
    out.sample("spoolq_quarantined_files", {}, census.totals.quarantined)
    out.family("spoolq_attempts_total", "counter",
               "Finished attempts by queue and outcome (done, retry, dead, lost), from the attempts log.")
    for (queue, outcome), n in sorted(totals.attempts.items()):
        out.sample("spoolq_attempts_total", {"queue": queue, "outcome": outcome}, n)
    out.histogram("spoolq_run_seconds", "How long attempts ran.", totals.run)
    out.histogram("spoolq_wait_seconds", "How long jobs waited from ready to started.", totals.wait)
    out.family("spoolq_oldest_ready_seconds", "gauge", "Age of the longest-waiting ready job, per queue.")
    for queue, since in sorted(census.ready_since.items(), key=lambda kv: kv[0] or ""):
        out.sample("spoolq_oldest_ready_seconds", {"queue": queue or ""}, round(max(0.0, now - since), 3))
    out.family("spoolq_workers", "gauge", "Live workers by host.")
    per_host: dict[str, int] = defaultdict(int)
    for worker in spool.workers(role="worker"):
        per_host[worker.host] += 1
    per_host.setdefault(layout.host_name(), 0)  # a sample even with no worker at all: `spoolq_workers == 0` alerts
    for host, n in sorted(per_host.items()):
        out.sample("spoolq_workers", {"host": host}, n)
    out.family("spoolq_paused", "gauge", "1 for each paused queue ('*': the whole spool).")
    for queue in sorted(spool.paused()):
        out.sample("spoolq_paused", {"queue": queue}, 1)
    return out.text()


def textfile_unwritable(path: str) -> str | None:
    """Why this user could not write the textfile at `path` (a temp file beside it, then a
    rename), or None: its directory is missing, or closed to this uid."""
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        return f"{directory} is not a directory"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"uid {os.geteuid()} cannot write into {directory}"
    return None


def write_textfile(path: str, text: str, mode: int = 0o644) -> None:
    """Replace `path` at once (a temp file beside it, then rename), as node_exporter's textfile
    collector asks: it never reads half a file. The temp name does not end in .prom; no fsync:
    the file is remade every interval."""
    fsio.publish(f"{path}.{os.getpid()}.tmp", text.encode(), path, mode=mode, durable=False)


class Textfile:
    """Keeps config metrics_textfile fresh, from a thread of a worker's own (so a long job does
    not stop it): every metrics_interval, written by one worker per host, the live one whose
    owner token sorts first, so that the counters in the file come from one reader and only grow
    (a file written in turn by workers that began at different times would go down and up)."""

    def __init__(self, root: str, owner: Callable[[], str], log: Callable[[str], None]):
        self.root, self.owner, self.log = root, owner, log
        self.totals = Totals()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="metrics-textfile", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        from ..spool import Spool

        spool = Spool(self.root, create=False)  # its own: the worker's thread has its own caches
        failing, path = "", ""
        while True:
            try:
                interval = spool.config.metrics_interval
                path = spool.config.metrics_textfile
                if path and self._is_writer(spool):
                    write_textfile(path, exposition(spool, self.totals))
                failing = ""
            except Exception as e:  # metrics must never stop the work they measure
                why = f"{getattr(e, 'strerror', None) or e}"
                if why != failing:
                    self.log(f"cannot write metrics_textfile {path}: {why}")
                failing, interval = why, 15.0
            if self._stop.wait(interval):
                return

    def _is_writer(self, spool: Spool) -> bool:
        mine, owner = layout.host_name(), self.owner()
        here = sorted(w.owner for w in spool.workers(role="worker") if w.host == mine)
        return bool(owner) and bool(here) and here[0] == owner
