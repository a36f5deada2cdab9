"""Spool locks: flock(2) on a file made with the layout, through filelock.FileLock (its one
use in spoolq), with the holder written into the file.

For a lock NAME, ``locks/NAME.flock`` is made with the layout and never removed. Taking the lock
is an exclusive flock on it; once held, the holder writes who it is over the start of the file
(a JSON record {"pid", "host"} padded to RECORD bytes) and blanks it again before it lets go. So:

- a holder that dies lets go with it: the kernel drops a dead process's flock at once, and a
  shared file system's server drops a dead client's (GlusterFS when the client's connection
  goes, NFSv4 when its lease runs out, NFSv3 through lockd): nobody judges a pid, and nothing is
  ever given back by hand;
- no step needs a new inode or block: the file is there, and its record is written in place over
  the block written when the layout was made (`purge`, the way to free space, locks on a full
  disk; if even that write fails the lock is held all the same, its holder unnamed);
- who holds a lock is read back (`holder`): the record, and the file's mtime (the file system's
  clock) as the moment it was taken. The record is only ever shown, never acted on: with
  group_access a group member can write it.

Where flock does not reach the server (a FUSE view that does not forward locks, NFS mounted
``nolock`` or ``local_lock=flock|all``, Lustre with ``localflock``), a lock excludes only the
processes of one host: mounts.py names such mounts and workers refuse them. A file system
without flock at all (ENOSYS: Lustre without ``-o flock``) fails the take in one line; filelock's
fallback to marker files (SoftFileLock, whose markers a killed holder strands) is never used.
"""

from __future__ import annotations

import errno
import os
import stat

from ..format import json_codec, layout
from . import disk_full
from ..format.lean import Record
from ..format.errors import DiskFull, LockBusy, StorageError

POLL = 0.02  # seconds between tries while a lock is held by another
RECORD = 256  # bytes of the holder record at the start of a lock file, always written whole
LONG_HELD = 600.0  # seconds: a lock held longer is said (fsck, a worker's log)
BLANK = b" " * (RECORD - 1) + b"\n"


class Holder(Record):
    """Who holds a lock, as its record says (pid None: not yet written), and since when (the
    lock file's mtime, on the file system's clock)."""

    __slots__ = ("pid", "host", "since")

    def __init__(self, pid: int | None, host: str, since: float):
        self.pid, self.host, self.since = pid, host, since

    def __str__(self) -> str:
        if self.pid is None:
            return "a holder that has not named itself yet"
        return f"pid {self.pid} on host {self.host}"


def locked(path: str, *, mode: int, timeout: float = 30.0) -> Held:
    """Hold the lock at `path` for the block; LockBusy if it is still held after `timeout`
    seconds (0: one try), naming its holder."""
    return Held(path, owners_only(mode), timeout)


class Held:
    """The `with` block of locked(). (A class, not a contextlib generator: contextlib is not worth
    loading on one enqueue's path, which takes no lock.)"""

    __slots__ = ("path", "mode", "timeout", "_lock", "_named")

    def __init__(self, path: str, mode: int, timeout: float):
        self.path, self.mode, self.timeout = path, mode, timeout
        self._named: list[int] = []
        self._lock = None

    def __enter__(self) -> None:
        import filelock  # 35 ms: only what takes a lock pays for it, never an enqueue

        named, path, timeout = self._named, self.path, self.timeout
        _refuse_if_directory_gone(path)
        lock = filelock.FileLock(path, timeout=timeout, mode=self.mode, poll_interval=POLL, fallback_to_soft=False,
                                 preserve_lock_file=True, on_acquired=lambda fd: _name_holder(fd, named))
        try:
            lock.acquire()
        except filelock.Timeout:
            raise LockBusy(f"timed out after {timeout:g}s waiting for lock {path}: held by "
                           f"{holder(path) or 'nobody any more'}") from None
        except OSError as e:
            kind = DiskFull if disk_full.is_disk_full(e) else StorageError
            raise kind(f"cannot take lock {path}: {_why_not(e)}", e.errno) from None
        self._lock = lock

    def __exit__(self, *exc: object) -> None:
        _blank(self._named)
        self._lock.release()


def load_before_forking() -> None:
    """Import filelock now: a process about to fork workers that each take a lock (retention at
    its start) pays its ~30 ms once, not once a worker."""
    import filelock  # noqa: F401


def owners_only(mode: int) -> int:
    """A lock file's mode: never the group's, even on a shared spool. flock(2) needs only an open
    descriptor, so whoever may read the file may take the lock, and hold it for good."""
    return mode & 0o600


def make(path: str, mode: int) -> None:
    """The lock file with its record's block already written (with the layout): later takes
    write over it in place, on a full disk too."""
    mode = owners_only(mode)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, mode)  # whatever the umask
        os.pwrite(fd, BLANK, 0)
    finally:
        os.close(fd)


def holder(path: str) -> Holder | None:
    """Who holds the lock at `path` now, or None if nobody does (or there is no such lock).
    Probed with a shared flock that is let go at once: a taker meanwhile tries again."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        # RACE: the lock may be taken or let go right after the probe; the answer is what was true
        # at it. A taker that tries during the probe's moment fails that try and polls again.
        import fcntl  # only a probe of who holds a lock: one enqueue takes none

        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None  # free: closing the descriptor lets the probe's lock go
        except BlockingIOError:
            return _parse(os.pread(fd, RECORD, 0), st.st_mtime)
        except OSError:
            return None  # no flock here: nothing can be held
    finally:
        os.close(fd)


def _name_holder(fd: int, named: list[int]) -> None:
    """Write this process into the lock file it now holds (filelock calls this once the flock is
    taken; `named` keeps the descriptor, to blank the record before letting go)."""
    record = json_codec.dumps({"pid": os.getpid(), "host": layout.host_name()[:128]}).encode()
    # RACE: a reader (a timed-out wait, fsck) between the flock and this write finds the lock held
    # and the record blank: it says "a holder that has not named itself yet", never a wrong one.
    try:
        os.pwrite(fd, record.ljust(RECORD - 1)[: RECORD - 1] + b"\n", 0)
    except OSError:
        return  # a full disk or quota: the lock is held all the same, its holder unnamed
    named.append(fd)


def _blank(named: list[int]) -> None:
    """The record blanked before the lock is let go: a reader never names a holder that has gone."""
    for fd in named:
        try:
            os.pwrite(fd, BLANK, 0)
        except OSError:
            pass  # the next holder writes over it; until then a reader sees the last one


def _parse(data: bytes, since: float) -> Holder:
    try:
        record = json_codec.loads(data.decode("utf-8", "replace").strip() or "null")
        pid, host = record["pid"], record["host"]
        if isinstance(pid, int) and not isinstance(pid, bool) and isinstance(host, str):
            return Holder(pid, layout.only(layout.NAME_CHARS, host)[:128], since)  # shown, so printable
    except (ValueError, TypeError, KeyError, RecursionError):
        pass
    return Holder(None, "", since)


def _refuse_if_directory_gone(path: str) -> None:
    """StorageError unless the lock's directory is there. filelock would make the missing
    directories (mkdir -p, modes from the umask): a spool deleted under a worker would come back
    as a bare locks/ in a 0755 root. A directory out of reach (ENOTCONN, EIO: a mount whose
    client died) is not gone: its own error is said, errno kept."""
    # RACE: an `rm -rf` of the spool between this look and filelock's mkdir brings that back; a
    # worker's next look at its root (root_moved) stops it a moment later.
    try:
        if stat.S_ISDIR(os.stat(os.path.dirname(path) or ".").st_mode):
            return
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as e:
        raise StorageError(f"cannot take lock {path}: {_why_not(e)}", e.errno) from None
    raise StorageError(f"cannot take lock {path}: its directory is gone (the spool was moved or deleted)",
                       errno.ENOENT)


def _why_not(e: OSError) -> str:
    if disk_full.is_disk_full(e):
        return disk_full.full_cause(e)
    if e.errno in (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK):
        return (f"{e.strerror}: this file system does not take flock(2) locks (Lustre needs -o flock; "
                "see docs/hosts.md, Running on several hosts)")
    return e.strerror or str(e)
