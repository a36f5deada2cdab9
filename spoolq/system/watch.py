"""The wake-up source: file-system events as "this name arrived" (watchdog's only home).

The worker's own thread reads inotify, through watchdog's binding of it (inotify_c): an arrival
wakes the worker from its select() with no thread in between. watchdog's observer handed each
event through four threads (the descriptor's reader, its dispatcher, the emitter, the observer)
before the worker heard of it, and each hand-over is a wake-up of its own: on a busy two-core
machine that was most of a pickup's time above a bare spawn.

Events are a hint, never the truth: the worker also rescans on poll_interval, because inotify
can overflow, and another host's writes to a shared file system produce none. When the events
stop working (a watched directory removed, the descriptor failing), check() says why once and
the worker polls from then on.
"""

from __future__ import annotations

import errno
import os
import struct
from typing import Iterator

from . import fsio

EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then len bytes of name
READ_SIZE = 64 * 1024  # room for ~2,000 events a read; a larger burst is read on the next turn
WAKE = ("", "")  # a wake-up that names nothing: a poke, or events lost to an overflow


class Wakeups:
    """Names that land in the watched directories, delivered to the one thread that waits."""

    def __init__(self, directories: list[str], *, events: bool = True, recursive: tuple[str, ...] = ()):
        """`events=False`: no inotify at all, only timeouts and pokes (mode "none"). Directories
        in `recursive` are watched with their sub-directories (pending/'s shards). It logs
        nothing itself: check() gives the worker what to say."""
        self._poke_r, self._poke_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._inotify: Inotify | None = None
        self.mode = "polling" if events else "none"
        self.failure: str | None = None
        if not events:
            return
        try:
            self._inotify = Inotify(directories, recursive)
            self.mode = "events"
        except Exception as e:  # no inotify here (another OS), out of watches or instances
            self.failure = f"{type(e).__name__}: {e}"

    def poke(self) -> None:
        """Wake the waiting thread now. Safe in a signal handler and from another thread: one
        write to a pipe; a full pipe already holds a wake-up."""
        fd = self._poke_w
        if fd < 0:
            return  # closed: the worker is leaving anyway
        try:
            os.write(fd, b"!")
        except OSError:
            pass

    def wait(self, timeout: float) -> list[tuple[str, str]]:
        """Block until something arrives or `timeout` seconds pass; returns (directory, name)
        pairs, ("", "") for a wake-up that names nothing."""
        watched = [self._poke_r] if self._inotify is None else [self._poke_r, self._inotify.fd]
        ready = fsio.readable(watched, max(0.0, timeout))
        out: list[tuple[str, str]] = []
        if self._poke_r in ready:
            _drain(self._poke_r)
            out.append(WAKE)
        if self._inotify is not None and self._inotify.fd in ready:
            try:
                out += self._inotify.read()
            except OSError as e:  # the descriptor failed
                self._lose(f"{type(e).__name__}: {e}")
            if self._inotify.lost is not None:
                self._lose(self._inotify.lost)
            if self.failure is not None:
                self._close_inotify()  # no more of it: from now on only pokes and timeouts
                out.append(WAKE)  # the worker's next turn hears of it (check())
        return out

    def _lose(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason

    def check(self) -> str | None:
        """If the events have stopped working, switch to polling and say why (once)."""
        if self.mode != "events" or self.failure is None:
            return None  # polling, no events asked for, or all is well
        self.mode = "polling"
        self._close_inotify()
        return self.failure

    def close(self) -> None:
        self._close_inotify()
        # RACE: a signal handler's poke() may run between any two lines here; it reads
        # _poke_w once, and -1 is set before the descriptor is closed, so it never writes
        # into a descriptor number reused since.
        w, self._poke_w = self._poke_w, -1
        r, self._poke_r = self._poke_r, -1
        for fd in (w, r):
            if fd >= 0:
                os.close(fd)

    def _close_inotify(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None


class Inotify:
    """One inotify descriptor watching directories (and, for `recursive` ones, their
    sub-directories, added as they appear), read without blocking."""

    def __init__(self, directories: list[str], recursive: tuple[str, ...] = ()):
        from watchdog.observers import inotify_c  # Linux only: elsewhere this raises, and the worker polls

        c = inotify_c.InotifyConstants
        # What a worker wakes for: a name that lands (renamed in, or created and written). Not
        # IN_MOVED_FROM: a claim renames jobs out of pending/ all the time, and waking for it is waste.
        self._mask = (c.IN_CLOSE_WRITE | c.IN_MOVED_TO | c.IN_CREATE | c.IN_DELETE_SELF | c.IN_MOVE_SELF
                      | c.IN_ONLYDIR | c.IN_DONT_FOLLOW)
        self._gone = c.IN_DELETE_SELF | c.IN_MOVE_SELF | c.IN_UNMOUNT | c.IN_IGNORED
        self._move_self, self._overflow, self._is_dir = c.IN_MOVE_SELF, c.IN_Q_OVERFLOW, c.IN_ISDIR
        self._add_watch = inotify_c.inotify_add_watch
        fd = inotify_c.inotify_init()
        if fd < 0:
            raise _errno_error("inotify_init")
        os.set_inheritable(fd, False)  # a job must not hold it (inotify_init takes no flags)
        os.set_blocking(fd, False)
        self.fd = fd
        self._roots = set(directories)
        self._recursive = set(recursive)
        self._paths: dict[int, str] = {}
        self.lost: str | None = None  # why the events stopped, once a watched directory went
        try:
            for directory in directories:
                self._watch(directory)
                if directory in self._recursive:
                    for name in _subdirectories(directory):
                        self._watch(f"{directory}/{name}")
        except BaseException:
            self.close()
            raise

    def _watch(self, path: str) -> None:
        wd = self._add_watch(self.fd, os.fsencode(path), self._mask)
        if wd < 0:
            raise _errno_error(f"cannot watch {path}")
        self._paths[wd] = path

    def read(self) -> list[tuple[str, str]]:
        """The names that arrived since the last read (all of them, even when a watched
        directory went meanwhile: then `lost` says so). OSError if the descriptor failed."""
        try:
            data = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return []
        if not data:
            raise OSError(errno.EBADF, "the inotify descriptor reads as closed")
        out: list[tuple[str, str]] = []
        for wd, mask, name in _events(data):
            if mask & self._overflow:
                out += self._rewalk()
                continue
            directory = self._paths.get(wd)
            if directory is None:
                continue
            if mask & self._gone:
                out += self._gone_away(wd, mask, directory)
                continue
            if mask & self._is_dir:
                out += self._new_subdirectory(directory, name)
                continue
            out.append((directory, name))
        return out

    def _gone_away(self, wd: int, mask: int, directory: str) -> list[tuple[str, str]]:
        if directory in self._roots:
            self._paths.pop(wd, None)
            self.lost = self.lost or f"{directory} was removed or moved: its events stopped"
            return []
        if mask & self._move_self:
            # A shard renamed: its watch stays with it. The parent's IN_MOVED_TO came first and
            # gave the watch its new name (inotify_add_watch on a watched directory returns the
            # same watch); moved out of pending/, its events name a path without the job, which
            # a claim finds gone, as it finds a job another worker took.
            return []
        self._paths.pop(wd, None)  # a shard removed: nothing more lands there
        return []

    def _rewalk(self) -> list[tuple[str, str]]:
        """The kernel's queue overflowed: events were lost, the creation of a shard perhaps.
        Watch every sub-directory of the recursive ones again (the known ones keep their
        watch) and report what is in them; names lost elsewhere wait for the rescan."""
        out = [WAKE]
        for directory in sorted(self._recursive):
            for name in _subdirectories(directory):
                out += self._new_subdirectory(directory, name)
        return out

    def _new_subdirectory(self, directory: str, name: str) -> list[tuple[str, str]]:
        """A directory appeared in a recursive one: watch it, and report what landed in it
        before the watch (a shard's first job arrives just after the shard)."""
        if directory not in self._recursive:
            return []
        path = f"{directory}/{name}"
        try:
            self._watch(path)
        except OSError:
            return []  # gone again already, or out of watches: the rescan covers it
        try:
            return [(path, entry) for entry in os.listdir(path)]
        except OSError:
            return []

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)  # its watches go with it


def _events(data: bytes) -> Iterator[tuple[int, int, str]]:
    offset = 0
    while offset + EVENT.size <= len(data):
        wd, mask, _cookie, length = EVENT.unpack_from(data, offset)
        start = offset + EVENT.size
        yield wd, mask, os.fsdecode(data[start:start + length].split(b"\0", 1)[0])
        offset = start + length


def _subdirectories(directory: str) -> list[str]:
    try:
        with os.scandir(directory) as entries:
            return [e.name for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def _errno_error(what: str) -> OSError:
    import ctypes

    code = ctypes.get_errno() or errno.EIO
    return OSError(code, f"{what}: {os.strerror(code)}")
