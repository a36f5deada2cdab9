"""A job's captured output: one log per job, each attempt between marker lines, cut at its cap
and when the disk fills, so a job's output can never stop the spool."""

from __future__ import annotations

import errno
import os

from . import fsio


def open_attempt(path: str, header: str, mode: int) -> tuple[int, int]:
    """Open (or create, of `mode`) the job's log and write an attempt's header line. Returns the
    descriptor (the job's stdout and stderr) and the offset where this attempt's output starts."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        fsio.exact_mode(fd, mode)
        return fd, append(fd, header.encode())
    except BaseException:
        os.close(fd)
        raise


def close_attempt(fd: int, start: int, status: str, seconds: float, cap: int) -> None:
    """Write the attempt's footer line; keep its output within `cap` bytes (0: no cap) and, if the
    job filled the disk, give back what it wrote beyond a little so the spool keeps working."""
    size = os.fstat(fd).st_size
    note = ""
    if cap and size - start > cap:
        size = start + cap
        os.ftruncate(fd, size)
        note = f" (output truncated to {cap} bytes)"
    newline = "" if size == start or os.pread(fd, 1, size - 1) == b"\n" else "\n"
    try:
        append(fd, f"{newline}==> attempt finished in {seconds:.3f}s: {status}{note} <==\n".encode())
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        os.ftruncate(fd, min(os.fstat(fd).st_size, start + 4096))
        try:
            append(fd, b"\n==> output truncated: the disk is full <==\n")
        except OSError:
            pass


def mark(path: str, line: str) -> None:
    """Append one marker line to a job's existing log (never creating one: a purged job stays
    purged). Best effort: a marker must not fail what it annotates."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        append(fd, f"==> {line} <==\n".encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def append(fd: int, data: bytes) -> int:
    """Append `data`; returns the offset where it starts."""
    start = os.lseek(fd, 0, os.SEEK_END)
    fsio.write_all(fd, data)
    return start
