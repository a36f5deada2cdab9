"""A job's captured output: one log per job, each attempt between marker lines. The worker copies
an attempt's output into it as it comes, holding it to max_output_bytes while the job runs: the
first part as written, then only the last part (its last error lines matter most), with a marker
saying how much was cut between. When the disk fills, the log gives back what it can, so a job's
output can never stop the spool.

A log is made when an attempt first has something to put in it: output, a failure to record, a
run long enough (LOOK_AFTER) for someone to look at it, or an earlier attempt's log to go on.
A first attempt that succeeds at once and writes nothing leaves no log, as cron sends no mail for
a silent job: a new file is the largest cost of a short job on a disk where making one is dear
(ext4 without a journal: docs/performance.md), and its times are in the attempts log."""

from __future__ import annotations

import errno
import functools
import os
import re
import stat
from typing import BinaryIO, NamedTuple

from ..system import fsio

MAX_TAIL = 1024 * 1024  # at most this much of an attempt's last output is held in memory
LOOK_AFTER = 0.5  # seconds: a silent attempt that runs this long gets its log (its header says it runs)


class AttemptLog:
    """One attempt's part of a job's log: its header line, its output, its footer line. Nothing
    is written until begin() (which the first output calls)."""

    def __init__(self, path: str, header: str, mode: int, cap: int):
        """`header` goes first, once the log is begun; `cap` bounds the attempt's output (0: no
        bound)."""
        self.path, self.header, self.mode = path, header, mode
        self.fd: int | None = None
        self.start = 0
        self.error: OSError | None = None  # why the log could not be begun: the output is lost
        self.cap = cap
        self.tail_size = min(cap // 2, MAX_TAIL) if cap else 0
        self.head_room = cap - self.tail_size if cap else None
        self.head = 0  # bytes written to the log
        self.tail = bytearray()  # the last bytes, once the head is full
        self.cut = 0  # bytes dropped between head and tail
        self.disk_full = False  # or the log cannot be written at all (unreachable)
        self.unreachable = False
        self.last_byte = b"\n"
        self.received = 0  # bytes the job wrote, kept or not

    def begin(self) -> None:
        """Open (or create, of the log's mode) the job's log and write the header, once. A log
        that cannot be begun is kept as the error, and the attempt's output is dropped (and
        counted), as once the disk fills: the job runs on, its result its own."""
        if self.fd is not None or self.error is not None:
            return
        try:
            fd = _create(self.path, self.mode)
            try:
                self.start = append(fd, self.header.encode())
            except BaseException:
                os.close(fd)
                raise
        except OSError as e:
            self.error, self.disk_full, self.unreachable = e, True, True
            return
        self.fd = fd

    def write(self, data: bytes) -> None:
        """Take what the job wrote: into the log while there is room, else keep its last part."""
        self.begin()
        self.received += len(data)
        if self.head_room is None or self.head < self.head_room:
            room = len(data) if self.head_room is None else self.head_room - self.head
            self._append(data[:room])
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > self.tail_size:
                drop = len(self.tail) - self.tail_size
                self.cut += drop
                del self.tail[:drop]

    def _append(self, data: bytes) -> None:
        if self.disk_full or not data:
            self.cut += len(data) if self.disk_full else 0
            return
        assert self.fd is not None
        try:
            fsio.write_all(self.fd, data)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                # The spool out of reach (ENOTCONN, EIO): the output is lost, the job runs on; its
                # worker's lease decides whether it may (heartbeat.py).
                self.unreachable = self.disk_full = True
                self.cut += len(data)
                return
            self._give_back_space()
            self.cut += len(data)
            return
        self.head += len(data)
        self.last_byte = data[-1:]

    def _give_back_space(self) -> None:
        """The disk is full: keep only the start of this attempt's output, so the spool works on."""
        self.disk_full = True
        assert self.fd is not None
        os.ftruncate(self.fd, min(os.fstat(self.fd).st_size, self.start + 4096))

    def close(self, status: str, seconds: float) -> None:
        """Write the cut marker and the kept tail, then the footer, and close the log. An
        attempt that succeeded with no log begun (it wrote nothing, soon) leaves none."""
        if self.fd is None and status != "ok":
            self.begin()  # a failure is always told where `logs` shows it
        if self.fd is None:
            return
        try:
            self._finish(status, seconds)
        finally:
            fsio.close_quietly(self.fd)

    def _finish(self, status: str, seconds: float) -> None:
        lines = b""
        if self.cut and not self.disk_full:
            lines += _line(self.last_byte, f"==> {self.cut} bytes of output cut here (max_output_bytes "
                                           f"{self.cap}) <==\n")
            self.last_byte = b"\n"
        if self.tail:
            lines += bytes(self.tail)
            self.last_byte = self.tail[-1:]
        note = " (output truncated: the disk is full)" if self.disk_full else ""
        lines += _line(self.last_byte, f"==> attempt finished in {seconds:.3f}s: {status}{note} <==\n")
        if self.unreachable or self.fd is None:
            return
        try:
            fsio.write_all(self.fd, lines)  # O_APPEND: at the end, with no lseek to say where
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                return  # the spool out of reach: the footer is lost with the output
            self._give_back_space()
            try:
                append(self.fd, b"\n==> output truncated: the disk is full <==\n")
            except OSError:
                pass


def _line(last_byte: bytes, text: str) -> bytes:
    """A marker line, on a line of its own."""
    return (b"" if last_byte == b"\n" else b"\n") + text.encode()


def mark(path: str, line: str) -> None:
    """Append one marker line to a job's existing log (never creating one: a purged job stays
    purged). Best effort: a marker must not fail what it annotates."""
    try:
        fd = fsio.open_append(path)  # whatever is at a log's path (a fifo, a symlink) must not hang or lead us
    except OSError:
        return
    try:
        append(fd, f"==> {line} <==\n".encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def make(path: str, mode: int) -> None:
    """An empty log for a job that has none, for mark() to write in: made by whoever holds the
    job, so never for one purged (best effort, as mark is)."""
    try:
        os.close(_create(path, mode))
    except OSError:
        pass


def _create(path: str, mode: int) -> int:
    """A descriptor appending to the job's log at `path`, made of `mode` if there is none: never
    through a symlink, never waiting on a fifo, never anything but a regular file (OSError)."""
    fd = fsio.open_append(path, mode)
    fsio.exact_mode(fd, mode)
    return fd


def append(fd: int, data: bytes) -> int:
    """Append `data`; returns the offset where it starts."""
    start = os.lseek(fd, 0, os.SEEK_END)
    fsio.write_all(fd, data)
    return start


TAIL_FOR_TIMES = 64 * 1024


class LastAttempt(NamedTuple):
    """What a job's log says of its last attempt (all None without a log; a done job without
    one has it from the attempts log: reading/views.py)."""

    started: float | None = None
    seconds: float | None = None  # None while it runs
    host: str | None = None
    output_bytes: int | None = None  # what it wrote, where the attempts log tells it (a job without a log)


def open_log(path: str, *, owner: int, any_uid: bool = False) -> BinaryIO | None:
    """A job's log for reading, or None: not there, or not a regular file of one link, of
    `owner` (the spool's uid; `any_uid`: of any uid, as a member's quarantined drop-in is), in a
    directory of `owner`'s. A symlink is never followed, a fifo never waited on, a hard link never
    read: whatever is at a log's path, another program's or from a spool made before output/ was
    its owner's alone; where fs.protected_hardlinks is 0, anyone may link there a file only the
    reader may read, and a dashboard root serves would show it to whoever reaches it. A log
    spoolq made has one link and is its owner's."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    st = os.fstat(fd)
    if (not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or not (any_uid or st.st_uid == owner)
            or os.geteuid() != owner and not _in_owners_directory(path, st, owner)):
        os.close(fd)  # before fdopen, which refuses a directory with an error
        return None
    return os.fdopen(fd, "rb")


def _in_owners_directory(path: str, st: os.stat_result, owner: int) -> bool:
    """Whether the file opened at `path` (`st`) is in a real directory of `owner`'s there, not
    reached through a symlink: root's read-only dashboard checks a service user's spool when it
    starts and serves for days, and that user may then swap output/ or dead/ for a symlink to a
    directory only root reads (its /var/log/auth.log is job `auth`'s log). Asked only by a reader
    other than `owner`: the owner reading its own spool reads nothing it could not read anyway,
    and `list` reads a log for each job it shows (four system calls each, saved)."""
    # RACE: the user may swap the directory back between the file's open and this look; the file
    # opened has one link, so it is in the directory looked at only if it was opened there (a
    # file of a directory that user cannot write into, it cannot move into one of its own).
    try:
        directory = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        there = os.stat(os.path.basename(path), dir_fd=directory, follow_symlinks=False)
        return os.fstat(directory).st_uid == owner and os.path.samestat(there, st)
    except OSError:
        return False
    finally:
        os.close(directory)


def read_end(path: str, limit: int, *, owner: int) -> tuple[bytes, int] | None:
    """The last `limit` bytes of a job's log and its size; None without a (regular) log of
    `owner` (open_log)."""
    f = open_log(path, owner=owner)
    if f is None:
        return None
    with f:
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - limit))
        return f.read(limit), size


def last_attempt(path: str, *, owner: int) -> LastAttempt:
    """When the last attempt in a job's log began, on which host, and how long it took, from its
    marker lines near the end of the log."""
    end = read_end(path, TAIL_FOR_TIMES, owner=owner)
    if end is None:
        return LastAttempt()
    tail = end[0]
    headers = list(_pattern(_HEADER).finditer(tail))
    if not headers:
        return LastAttempt()
    header = headers[-1]
    started = _epoch(header.group(1).decode())
    footer = _pattern(_FOOTER).search(tail, header.end())
    host = header.group(3).decode(errors="replace")
    return LastAttempt(started, float(footer.group(1)) if footer else None, host)


class AttemptMark(NamedTuple):
    """One attempt as its marker lines in a job's log tell it."""

    number: int
    started: float | None
    host: str
    worker: str
    seconds: float | None  # None while it runs (or if its worker died)
    status: str | None  # "ok", or why it failed


MARKS_TAIL = 1024 * 1024


def attempts(path: str, *, owner: int) -> list[AttemptMark]:
    """The attempts a job's log records (in its last MiB), oldest first."""
    end = read_end(path, MARKS_TAIL, owner=owner)
    if end is None:
        return []
    tail = end[0]
    headers = list(_pattern(_HEADER).finditer(tail))
    out = []
    for i, header in enumerate(headers):
        until = headers[i + 1].start() if i + 1 < len(headers) else len(tail)
        footer = _pattern(_FOOTER).search(tail, header.end(), until)
        out.append(AttemptMark(int(header.group(2)), _epoch(header.group(1).decode()),
                               header.group(3).decode(errors="replace"), header.group(4).decode(errors="replace"),
                               float(footer.group(1)) if footer else None,
                               footer.group(2).decode(errors="replace") if footer else None))
    return out


def read_tail(path: str, limit: int, *, owner: int) -> tuple[str, bool] | None:
    """The last `limit` bytes of a job's log as text (undecodable bytes replaced), and whether
    anything before them was left out; None without a log."""
    end = read_end(path, limit, owner=owner)
    if end is None:
        return None
    data, size = end
    return data.decode(errors="replace"), size > limit


def _epoch(iso: str) -> float | None:
    from datetime import datetime

    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


_HEADER = rb"^==> ([0-9T:.\-]+Z) attempt ([0-9]+) of [0-9]+ on (.*) \(worker ([^ ]*)\) <==$"
_FOOTER = rb"^==> attempt finished in ([0-9.]+)s: (.*) <==$"


@functools.cache
def _pattern(pattern: bytes) -> re.Pattern[bytes]:
    """Compiled on first use: every command that reads a job imports this module."""
    return re.compile(pattern, re.M)
