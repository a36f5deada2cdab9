"""What workers and supervisors say on stderr, one line per event: their messages, and in the
foreground one line per job claimed and finished; as text or as JSON objects (--log-format json,
for a journal or a log shipper). Never fails its caller: a closed stderr loses the line."""

from __future__ import annotations

import json
import sys
import time

from .events import Fact
from .job import iso

FORMATS = ("text", "json")


def write_line(line: str) -> None:
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
    """One line when a worker claims a job and one when the attempt is recorded."""

    def __init__(self, fmt: str = "text"):
        self.json = fmt == "json"

    def claimed(self, worker: str, job_id: str, attempt: int) -> None:
        if self.json:
            self._json(event="claimed", worker=worker, id=job_id, attempt=attempt)
        else:
            write_line(f"{iso(time.time())} worker {worker}: job {job_id} attempt {attempt} claimed")

    def finished(self, fact: Fact) -> None:
        if self.json:
            self._json(event="finished", worker=fact.worker, id=fact.id, attempt=fact.attempt,
                       exit_code=fact.exit_code, duration=round(fact.run_seconds, 3), outcome=fact.outcome,
                       error=fact.error)
            return
        how = f"exit {fact.exit_code}" if fact.exit_code is not None else (fact.error or "no exit status")
        write_line(f"{iso(time.time())} worker {fact.worker}: job {fact.id} attempt {fact.attempt} finished: "
                   f"{how} in {fact.run_seconds:.3f}s ({fact.outcome})")

    def _json(self, **fields: object) -> None:
        write_line(json.dumps({"time": iso(time.time()), **fields}, ensure_ascii=False))


class Tally:
    """A worker's count of the attempts it ran, for a burst's summary line."""

    def __init__(self) -> None:
        self.ok = self.failed = 0

    def add(self, fact: Fact) -> None:
        if fact.outcome == "done":
            self.ok += 1
        else:
            self.failed += 1

    def to_line(self) -> bytes:
        return f"{self.ok} {self.failed}\n".encode()

    @staticmethod
    def sum_lines(data: bytes) -> Tally:
        total = Tally()
        for line in data.decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 2 and all(p.isdigit() for p in parts):
                total.ok += int(parts[0])
                total.failed += int(parts[1])
        return total

    def summary(self, elapsed: float) -> str:
        jobs = self.ok + self.failed
        rate = jobs / elapsed if elapsed > 0 else 0.0
        return f"burst finished: {jobs} jobs, {self.ok} ok, {self.failed} failed in {elapsed:.2f}s ({rate:.1f} jobs/s)"
