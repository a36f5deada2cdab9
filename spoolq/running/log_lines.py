"""What workers and supervisors say on stderr, one line per event: their messages, and in the
foreground one line per job claimed and finished; as text or as JSON objects (--log-format json,
for a journal or a log shipper). Never fails its caller: a closed stderr loses the line."""

from __future__ import annotations

import json
import os
import select
import stat
import sys
import time
from typing import Callable

from ..format.states import State
from ..store.attempts_log import FinishedAttempt
from ..format.job import iso

FORMATS = ("text", "json")


class SettingsNotes:
    """What a worker says of its settings: config.json that cannot be read just now, or holds what
    is not a setting; each once, until it changes."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log
        self._said: tuple[str | None, tuple[str, ...]] = (None, ())

    def say(self, error: str | None, problems: tuple[str, ...]) -> None:
        if (error, problems) == self._said:
            return
        self._said = (error, problems)
        if error:
            self.log(f"{error}; going on with the settings read before")
        for problem in problems:
            self.log(problem)


def write_line(line: str) -> None:
    if sys.stderr is None:  # started with stderr closed (2>&-): the line is lost, nothing else
        return
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def text_log(message: str) -> None:
    write_line(f"{iso(time.time())} {message}")


def json_log(message: str) -> None:
    write_line(json.dumps({"time": iso(time.time()), "message": message}, ensure_ascii=False))


LOGS = {"text": text_log, "json": json_log}


class JobLines:
    """One line when a worker claims a job and one when the attempt is recorded. They are
    dropped, never waited for, while stderr cannot take them (a pipe nobody reads): the attempts
    log has every attempt, and a worker must not stop working because nobody listens."""

    def __init__(self, fmt: str = "text"):
        self.json = fmt == "json"
        self.dropped = 0
        self._sink: tuple[object, str] = (None, "")  # a stderr, and what it is: _sink_kind()

    def claimed(self, worker: str, job_id: str, attempt: int) -> None:
        if not self._writable():
            return
        if self.json:
            self._json(event="claimed", worker=worker, id=job_id, attempt=attempt)
        else:
            write_line(f"{iso(time.time())} worker {worker}: job {job_id} attempt {attempt} claimed")

    def finished(self, fact: FinishedAttempt) -> None:
        if not self._writable():
            return
        if self.json:
            self._json(event="finished", worker=fact.worker, id=fact.id, attempt=fact.attempt,
                       exit_code=fact.exit_code, duration=round(fact.run_seconds, 3), outcome=fact.outcome,
                       error=fact.error)
            return
        how = f"exit {fact.exit_code}" if fact.exit_code is not None else (fact.error or "no exit status")
        write_line(f"{iso(time.time())} worker {fact.worker}: job {fact.id} attempt {fact.attempt} finished: "
                   f"{how} in {fact.run_seconds:.3f}s ({fact.outcome})")

    def _writable(self) -> bool:
        stream = sys.stderr
        try:
            if self._sink[0] is not stream:
                self._sink = (stream, _sink_kind(stream.fileno()))
            kind = self._sink[1]
            if kind == NULL:
                return False  # nobody reads them: not even made (a line's text is a share of a short job's cost)
            ready = kind == NEVER_FULL or bool(select.select([], [stream.fileno()], [], 0)[1])
        except (AttributeError, OSError, ValueError):  # no stderr, or one without a descriptor
            ready = False
        self.dropped += not ready
        return ready

    def _json(self, **fields: object) -> None:
        write_line(json.dumps({"time": iso(time.time()), **fields}, ensure_ascii=False))


NULL, NEVER_FULL, MAY_FILL = "null", "never full", "may fill"


def _sink_kind(fd: int) -> str:
    """/dev/null (a line to it is not made at all), a regular file, which select() always finds
    writable (a line to it needs no look first: a worker's stderr is often a log file), or
    something that may fill (a pipe: looked at first)."""
    st = os.fstat(fd)
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3):
        return NULL
    return NEVER_FULL if stat.S_ISREG(st.st_mode) else MAY_FILL


class Tally:
    """What a burst did, from the attempts its workers logged: jobs run, how many ended done, and
    the attempts that failed (a worker killed mid-burst still counts: its lines were written)."""

    def __init__(self, facts: list[FinishedAttempt]):
        self.jobs = len({f.id for f in facts})
        self.ok = sum(f.outcome == State.DONE for f in facts)
        self.failed = sum(f.outcome in ("retry", State.DEAD) for f in facts)
        self.attempts = len(facts)

    def summary(self, elapsed: float) -> str:
        rate = self.jobs / elapsed if elapsed > 0 else 0.0
        return (f"burst finished: {self.jobs} job{'s' if self.jobs != 1 else ''} in {self.attempts} "
                f"attempt{'s' if self.attempts != 1 else ''}, {self.ok} ok, {self.failed} failed, "
                f"in {elapsed:.2f}s ({rate:.1f} jobs/s)")
