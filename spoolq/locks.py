"""Spool locks: ``locks/<name>.lock`` is a symlink whose target names its holder.

Creating a symlink is one atomic, exclusive step (EEXIST if it is there, on NFS too), and its
target is written in the same step: a lock never exists without its holder record, whatever
instant its holder is killed at, and a short target lives in the inode, so taking a lock needs no
free block (purge must work on a full disk). A holder that is gone (a dead pid on this machine,
in this boot) is broken at once by the next taker; one on another host can only be waited for,
and a timeout names the file to remove.

(filelock's SoftFileLock, used before, creates its marker and then writes the record: a holder
killed in between left an empty marker that nothing ever broke. The crash-point sweeps found it.)
"""

from __future__ import annotations

import os
import time
import zlib
from contextlib import contextmanager
from typing import Iterator

from . import fsio, layout, liveness
from .errors import SpoolError

POLL = 0.02


def holder_tag() -> str:
    """This process as a lock holder: pid, start time, boot and host, short enough (< 60 bytes)
    for the target to live in the symlink's inode."""
    pid = os.getpid()
    return f"{pid}.{liveness.start_token(pid) or 0}.{(liveness.boot_id() or '')[:8]}.{_host_hash(layout.host_name())}"


def why_holder_gone(tag: str) -> str | None:
    """Why the holder a lock's target names is gone, or None (alive, or another host's)."""
    parts = tag.split(".")
    if len(parts) != 4 or not all(p.isascii() and p.isalnum() or p == "" for p in parts) or not parts[0].isdigit():
        return None
    pid, start, boot, host = parts
    if host != _host_hash(layout.host_name()) or (boot and boot != (liveness.boot_id() or "")[:8]):
        return None  # another host, or an earlier boot of this one judged by its pid would mislead
    if liveness.alive(int(pid), start if start != "0" else None):
        return None
    return f"its holder, pid {pid}, is gone"


@contextmanager
def locked(path: str, *, timeout: float = 30.0) -> Iterator[None]:
    """Hold the lock at `path` for the block."""
    mine = holder_tag()
    deadline = time.monotonic() + timeout
    while not _take(path, mine):
        if time.monotonic() >= deadline:
            raise SpoolError(f"timed out waiting for lock {path} ({_describe(path)}); "
                             "if no spoolq process holds it, remove the file")
        time.sleep(POLL)
    try:
        yield
    finally:
        _give_back(path, mine)


def _take(path: str, mine: str) -> bool:
    try:
        os.symlink(mine, path)
        return True
    except FileExistsError:
        pass
    try:
        theirs = os.readlink(path)
    except FileNotFoundError:
        return False  # given back meanwhile: try again
    except OSError:
        return False  # not a symlink: a marker of spoolq 0.1's lock; wait for it (or the timeout)
    if why_holder_gone(theirs):
        _break(path, theirs)
    return False


def _break(path: str, stale: str) -> None:
    aside = f"{path}.broken.{os.getpid()}.{layout.random_hex(4)}"
    # RACE: another taker may break the same stale lock and take it between our readlink and
    # this rename: the target check below sees that, and puts back the lock we moved.
    if not fsio.move(path, aside):
        return
    try:
        if os.readlink(aside) == stale:
            return
        try:
            os.symlink(os.readlink(aside), path)  # not the stale one: give it back to its holder
        except FileExistsError:
            pass  # a third taker holds it now; the one we moved finds it gone at release
    finally:
        fsio.unlink_quietly(aside)


def _give_back(path: str, mine: str) -> None:
    try:
        if os.readlink(path) == mine:
            os.unlink(path)
    except OSError:
        pass  # broken by someone who took us for dead: theirs now


def _describe(path: str) -> str:
    try:
        tag = os.readlink(path)
    except OSError:
        return "held"
    pid = tag.split(".", 1)[0]
    return f"held by pid {pid}" + ("" if _host_hash(layout.host_name()) == tag.rsplit(".", 1)[-1] else
                                    " on another host")


def _host_hash(host: str) -> str:
    return f"{zlib.crc32(host.encode()):08x}"
