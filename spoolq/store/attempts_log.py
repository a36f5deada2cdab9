"""The attempts log: one line of JSON per finished attempt, appended by the worker that ran it to
``events/<owner>.<k>.jsonl``. It is where `stats`, `metrics` and the dashboard learn what
happened; the job files stay the truth of where each job is.

Cheap to write: one append (O_APPEND, no fsync) per attempt, from the worker that ran it, so
that a success is still recorded by a rename alone. A crash can lose the last lines or tear the
last one: readers skip what does not parse. A file is rotated past ROTATE_BYTES, and files
not written for `keep_events` seconds are deleted by whichever worker rotates or starts next.

Cheap to read back: a file's mtime is its last line's time, so a window's reader opens only the
files written since the window began; a file is read in whole lines of at most MAX_LINE bytes.
The files are untrusted input (a group member can write them): every field is checked.
"""

from __future__ import annotations

import functools
import json
import math
import os
import stat
import sys
import time
from typing import Iterator, NamedTuple

from ..format.states import State
from ..system import fsio
from ..format.modes import Modes
from ..format.job import valid_id, valid_queue

ROTATE_BYTES = 8 * 1024 * 1024  # about 40,000 attempts a file
MAX_LINE = 64 * 1024
MAX_FILE = ROTATE_BYTES + MAX_LINE  # no writer goes past it: a larger file was made by hand, and is read no further
CHUNK = 1024 * 1024
SUFFIX = ".jsonl"
OUTCOMES = (State.DONE, "retry", State.DEAD, "lost")  # where the attempt left its job ("lost": taken over)


class FinishedAttempt(NamedTuple):
    """One finished attempt, as the attempts log holds it (times in epoch seconds). A NamedTuple:
    `stats --since 1d` makes one per attempt of the day, and a frozen dataclass costs 3 x as much."""

    id: str
    queue: str
    attempt: int
    host: str
    worker: str
    ready: float  # when the job became ready to run (enqueue, due time, retry's backoff end)
    claimed: float
    started: float
    finished: float
    outcome: str  # OUTCOMES
    exit_code: int | None = None
    error: str | None = None
    output_bytes: int = 0

    @property
    def run_seconds(self) -> float:
        return max(0.0, self.finished - self.started)

    @property
    def wait_seconds(self) -> float:
        return max(0.0, self.started - self.ready)

    def to_line(self) -> bytes:
        data = {"id": self.id, "queue": self.queue, "attempt": self.attempt, "host": self.host,
                "worker": self.worker, "ready": round(self.ready, 3), "claimed": round(self.claimed, 3),
                "started": round(self.started, 3), "finished": round(self.finished, 3),
                "outcome": self.outcome, "exit_code": self.exit_code, "error": self.error,
                "output_bytes": self.output_bytes}
        return (_encode(data) + "\n").encode()


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # made once: json.dumps
# with options builds an encoder per call, a worker's largest cost in writing its line
_decode = json.JSONDecoder().decode  # on str: json.loads on bytes first guesses their encoding
_OUTCOME = {name: name for name in OUTCOMES}  # one string each, however many lines hold it
_TIME = (int, float)
_FINITE = float(2 ** 62)  # no time or count of this log is near it; inf and nan fail the test


def parse_line(line: bytes) -> FinishedAttempt | None:
    """The fact on one line, or None if the line is torn, hand-made garbage or of another shape."""
    try:
        d = _decode(line.decode())
        fact = FinishedAttempt(d["id"], _intern(d["queue"]), d["attempt"], _intern(d["host"]), _intern(d["worker"]), d["ready"],
                    d["claimed"], d["started"], d["finished"], _OUTCOME.get(d["outcome"]), d.get("exit_code"),
                    d.get("error"), d.get("output_bytes", 0))
    except (ValueError, TypeError, KeyError, RecursionError):
        return None
    return fact if _well_typed(fact) else None


def _intern(value: object) -> object:
    """One string for the many lines that repeat it (the dashboard holds a day of facts)."""
    return sys.intern(value) if type(value) is str else value


def _well_typed(f: FinishedAttempt) -> bool:
    """Exact types (a bool is not a number here), finite times, a known outcome, an id and a queue
    as a job's, printable host and worker, and no text that cannot be written out again (a lone
    surrogate, which JSON can spell): whatever a group member wrote is shown on terminals."""
    if type(f.queue) is not str or type(f.host) is not str or type(f.worker) is not str:
        return False
    if not valid_id(f.id) or not _names_ok(f.queue, f.host, f.worker):
        return False
    if f.outcome is None or type(f.attempt) is not int or type(f.output_bytes) is not int:
        return False
    if f.error is not None and not (type(f.error) is str and _encodable(f.error)):
        return False
    for t in (f.ready, f.claimed, f.started, f.finished):
        if type(t) not in _TIME or not -_FINITE < t < _FINITE:
            return False
    return f.exit_code is None or type(f.exit_code) is int


@functools.lru_cache(maxsize=1024)
def _names_ok(queue: str, host: str, worker: str) -> bool:
    """A queue as a job's, a printable host and worker (pure: cached, as a day's lines repeat them)."""
    return valid_queue(queue) and _printable(host) and _printable(worker)


def _printable(text: object) -> bool:
    return type(text) is str and 0 < len(text) <= 256 and text.isprintable()  # surrogates are not


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


class EventLog:
    """A worker's attempts log: appends, rotates, prunes old files. Never fails the worker: a
    line that cannot be written (a full disk) is dropped, as a crash would drop it."""

    def __init__(self, directory: str, owner: str, *, modes: Modes, keep_seconds: float):
        self.directory = directory
        self.owner = owner
        self.modes = modes
        self.keep_seconds = keep_seconds
        self.fd: int | None = None
        self.size = 0
        self.part = 0
        self.torn = False  # the last write failed: it may have left part of a line

    def record(self, fact: FinishedAttempt) -> None:
        line = fact.to_line()
        if self.torn:
            line = b"\n" + line  # ends what a failed write may have left of a line: readers skip it
        try:
            if self.fd is None or self.size + len(line) > ROTATE_BYTES or self._deleted():
                self._next_file()
            assert self.fd is not None
            fsio.write_all(self.fd, line)
        except OSError:
            # A full disk: the line is lost. The file is kept (a new one per attempt would spend
            # the inodes the disk has left), and the next line starts on a line of its own.
            self.torn = self.fd is not None
            return
        self.size += len(line)
        self.torn = False

    def _deleted(self) -> bool:
        """Was the file deleted under this writer (pruned by a sibling while this worker was
        quiet for keep_events, or by hand)? Then its lines would go where nobody reads them."""
        assert self.fd is not None
        return os.fstat(self.fd).st_nlink == 0

    def _next_file(self) -> None:
        self.close()
        fsio.make_dir(self.directory, self.modes.dir)  # a spool from before it existed
        self.prune(time.time())  # days of keeping: a clock seconds off does not matter
        while True:
            path = os.path.join(self.directory, f"{self.owner}.{self.part}{SUFFIX}")
            self.part += 1
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                             self.modes.file)
            except FileExistsError:
                continue  # left by this owner before a rotation it does not remember: never append to it
            fsio.exact_mode(fd, self.modes.file)
            self.fd, self.size = fd, 0
            return

    def prune(self, now: float) -> int:
        """Delete log files not written for keep_seconds before `now`."""
        removed = 0
        for name, st in files(self.directory):
            if now - st.st_mtime > self.keep_seconds:
                fsio.unlink_quietly(os.path.join(self.directory, name))  # RACE: two pruners: one wins
                removed += 1
        return removed

    def close(self) -> None:
        fd, self.fd = self.fd, None
        fsio.close_quietly(fd)


def files(directory: str) -> list[tuple[str, os.stat_result]]:
    """The log files in `directory` (regular files only: a symlink or fifo is never opened)."""
    out = []
    for name in fsio.listdir(directory):
        if name.startswith(".") or not name.endswith(SUFFIX):
            continue
        try:
            st = os.lstat(os.path.join(directory, name))
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            out.append((name, st))
    return out


def read(directory: str, since: float = 0.0, until: float = math.inf) -> Iterator[FinishedAttempt]:
    """Every attempt that finished in [since, until), from the files written since `since`."""
    for name, st in files(directory):
        if st.st_mtime < since - 1:  # a second's slack: the file system's clock against the worker's
            continue
        for fact in read_file(os.path.join(directory, name)):
            if since <= fact.finished < until:
                yield fact


FIND_SLACK = 5.0  # seconds between a job's move into done/ (the file system's clock) and its line's time


def find(directory: str, finished: dict[str, float]) -> dict[str, FinishedAttempt]:
    """For each job id of `finished`, its attempt that finished it then (done, within FIND_SLACK),
    from the files written since the earliest; an id no line tells is left out (rotated and
    pruned, lost to a crash, or written on a host whose clock is further off). One pass, however
    many ids: a file's lines are in the order they were written, and each is read from where
    they reach the earliest time to where they pass the latest, not whole."""
    if not finished:
        return {}
    first, last = min(finished.values()) - FIND_SLACK, max(finished.values()) + FIND_SLACK
    found: dict[str, FinishedAttempt] = {}
    for name, st in files(directory):
        if st.st_mtime < first:
            continue
        path = os.path.join(directory, name)
        for line, _end in lines(path, _offset_before(path, st.st_size, first)):
            at = _finished_of(line)
            if at is not None and at > last:
                break
            job_id = _id_of(line)
            if job_id is not None and job_id not in finished:
                continue
            fact = parse_line(line)  # a line of another shape (made by hand) is read whole
            if fact is not None and fact.outcome == State.DONE and \
                    abs(fact.finished - finished.get(fact.id, math.inf)) <= FIND_SLACK:
                found[fact.id] = fact
    return found


def _id_of(line: bytes) -> str | None:
    """The job id of a line as a worker writes it (its first field), read without decoding it
    all; None for a line of another shape."""
    if not line.startswith(b'{"id":"'):
        return None
    end = line.find(b'"', 7)
    return line[7:end].decode("ascii", "replace") if end > 0 else None


def _offset_before(path: str, size: int, t: float) -> int:
    """An offset in the log file at `path` before every line that finished at `t` or later (its
    lines' times by bisection, a few reads of a small chunk)."""
    lo, hi = 0, size
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return 0
    try:
        while hi - lo > CHUNK // 16:
            mid = (lo + hi) // 2
            chunk = os.pread(fd, MAX_LINE, mid).split(b"\n")
            at = _finished_of(chunk[1]) if len(chunk) > 2 else None  # chunk[0]: the end of a line
            if at is None:
                return lo  # a line it cannot read: search on from the last place known good
            lo, hi = (mid, hi) if at < t else (lo, mid)
    except OSError:
        return 0
    finally:
        os.close(fd)
    return lo


def _finished_of(line: bytes) -> float | None:
    """The "finished" time of one line, read without decoding it all."""
    start = line.find(b'"finished":')
    end = line.find(b",", start)
    try:
        return float(line[start + 11:end]) if start >= 0 and end > start else None
    except ValueError:
        return None


class Tail:
    """A long-running reader's place in every log file: `new` gives what was appended since its
    last call (a file is read once, then only from where it stopped)."""

    def __init__(self, since: float = 0.0):
        self.since = since  # files not written since are skipped on the first look
        self.read_to: dict[str, tuple[int, int]] = {}  # file name -> (inode, offset read to)

    def new(self, directory: str) -> list[FinishedAttempt]:
        out: list[FinishedAttempt] = []
        for name, st in files(directory):
            inode, offset = self.read_to.get(name, (st.st_ino, 0))
            if inode != st.st_ino or st.st_size < offset:
                offset = 0  # a new file under an old name
            if st.st_size == offset or (name not in self.read_to and st.st_mtime < self.since - 1):
                continue
            for line, end in lines(os.path.join(directory, name), offset):
                offset = end
                fact = parse_line(line)
                if fact is not None:
                    out.append(fact)
            self.read_to[name] = (st.st_ino, offset)
        return out


def read_file(path: str, offset: int = 0) -> Iterator[FinishedAttempt]:
    """The facts in one log file from `offset` (whole lines only)."""
    for line, _end in lines(path, offset):
        fact = parse_line(line)
        if fact is not None:
            yield fact


def lines(path: str, offset: int = 0) -> Iterator[tuple[bytes, int]]:
    """Whole lines of a file from `offset`, each with the offset just past it; a line longer than
    MAX_LINE is skipped, a last line without its newline (being written, or torn) is not given.
    Read a chunk at a time, and no further than MAX_FILE: memory and time stay bounded whatever a
    hand-made file holds (a sparse terabyte would take an hour)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return
        f.seek(offset)
        carry, skipping = b"", False  # skipping: inside an over-long line, until its newline
        while chunk := f.read(max(0, min(CHUNK, MAX_FILE - offset - len(carry)))):
            parts = (carry + chunk).split(b"\n")
            carry = parts.pop()
            for part in parts:
                offset += len(part) + 1
                if skipping:
                    skipping = False
                elif len(part) <= MAX_LINE:
                    yield part, offset
            if len(carry) > MAX_LINE:
                offset += len(carry)
                carry, skipping = b"", True
