"""pending/ in shards: listings that stay bounded at any backlog (config `pending_shards`).

A listing of pending/ costs its servers a round trip per few hundred names, and every host lists it
while it changes (arrivals come with no event from other hosts). With ``pending_shards`` = W
seconds, spoolq writes each canonical name into ``pending/=<T>/`` instead, T being the time it
writes rounded down to W (10 digits): its clock, or the file system's if that is later (it touches
pending/ and reads its mtime), so that a writer whose clock is behind still writes into the newest
shard. Having written, it touches pending/ again (the "bump"): a worker's poll stays one stat of
pending/ while nothing arrives; when its stamp changed, the worker stats the shards anything can
have been written into since its last look (from the shard of pending/'s mtime then, less one) and
lists only one that changed; pending/ itself (drop-ins, new shards: few names) when no shard's
change explains it, or every TOP_EVERY seconds. So a poll lists what arrived since the last one,
whatever the backlog (rescans.Arrivals; kept out of here, which every enqueue imports). Older shards
only shrink (claims, cancels): the whole of pending/ is listed seldom (the worker's pacing), and an
empty shard PRUNE_AFTER older than pending/'s mtime is removed.

Readers always read both levels, sharded or not: canonical names in pending/ itself (older spools,
spools with pending_shards 0) and in its shards. Drop-ins stay where writers put them: pending/.
A shard entry that is not a real directory (a symlink) is never listed, and a writer that finds
one there (or a shard it cannot write into) writes into pending/ itself.
"""

from __future__ import annotations

import os
import stat
import time

from ..system import fsio

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

PREFIX = "="  # pending/=<10 digits>/: cannot start a canonical name (digits) or a hidden one (".")
PRUNE_AFTER = 3600.0  # seconds: a shard this much older than pending/'s mtime, found empty, is removed


def shard_of(when: float, width: int) -> str:
    start = int(when) // width * width
    return f"{PREFIX}{start:010d}"


def is_shard(name: str) -> bool:
    """``=`` and 10 ASCII digits (no regex: every enqueue imports this module)."""
    return len(name) == 11 and name[0] == PREFIX and name[1:].isascii() and name[1:].isdigit()


def split(entry: str) -> tuple[str, str]:
    """("=<T>", name) of a sharded entry, ("", name) of one in pending/ itself."""
    shard, _, name = entry.rpartition("/")
    return shard, name


def base(entry: str) -> str:
    """The name of an entry, without its shard."""
    return entry[entry.rfind("/") + 1:]


def start_of(shard: str) -> int:
    return int(shard[1:])


class PendingShards:
    """pending/ and its shards, for readers (entries) and writers (place, move_in)."""

    def __init__(self, pending: str, dir_mode: Callable[[], int], width: Callable[[], int],
                 clock: Callable[[], float], uid: Callable[[], int] = os.geteuid):
        self.pending = pending
        self._uid = uid  # whose spool: a shard is listed only if that user made it
        self._dir_mode = dir_mode
        self._width = width  # 0: spoolq writes into pending/ itself
        self.clock = clock
        self._durable: dict[str, int] = {}  # shards this process knows to be in pending/ for good: inode
        self._chosen: tuple[float, int, str] | None = None  # (monotonic, width, shard) of the last place()

    # ---- reading -----------------------------------------------------------------------------

    def shards(self, names: list[str] | None = None) -> list[str]:
        """The shards in pending/ (of `names`, its listing, if given), oldest first: real
        directories only (a symlink there could lead anywhere)."""
        names = fsio.listdir(self.pending) if names is None else names
        return sorted(n for n in names if is_shard(n) and self._is_real_dir(n))

    def _is_real_dir(self, shard: str) -> bool:
        try:
            return _is_ours(os.lstat(os.path.join(self.pending, shard)), self._uid())
        except OSError:
            return False

    def listed(self, shard: str) -> list[str]:
        """A shard's entries, as "=<T>/<name>": none if it went, or if it is not a real directory
        (opened without following a symlink another program may have put there)."""
        try:
            fd = os.open(self.path(shard), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            return []
        try:
            return [f"{shard}/{name}" for name in os.listdir(fd)]
        finally:
            os.close(fd)

    def entries(self) -> list[str]:
        """Every name in pending/ and in its shards (paths relative to pending/)."""
        top = fsio.listdir(self.pending)
        out = [name for name in top if not is_shard(name)]
        for shard in self.shards(top):
            out.extend(self.listed(shard))
        return out

    def path(self, entry: str) -> str:
        return os.path.join(self.pending, entry)

    # ---- writing ---------------------------------------------------------------------------

    def place(self, name: str) -> str:
        """Where a canonical name is written now: "=<T>/<name>", the shard made (and made durable)
        if need be; or the name itself in pending/ when sharding is off or the shard is unusable."""
        width = self._width()
        if width <= 0:
            return name
        shard = self._current(width)
        return f"{shard}/{name}" if self._ready(shard) else name

    def _current(self, width: int) -> str:
        """The shard of now: the later of this clock and the file system's (pending/ touched, then
        its mtime read: a writer whose clock is behind, on a spool idle for long, must not write
        into a shard as old as the last write). Kept for a second: a batch asks per job."""
        at = time.monotonic()
        if self._chosen is not None and at - self._chosen[0] < 1.0 and self._chosen[1] == width:
            return self._chosen[2]
        self.bump()
        try:
            latest = os.stat(self.pending).st_mtime
        except OSError:
            latest = 0.0
        shard = shard_of(max(self.clock(), latest), width)
        self._chosen = (at, width, shard)
        return shard

    def _ready(self, shard: str) -> bool:
        if shard in self._durable:
            return True
        path = self.path(shard)
        try:
            fsio.make_dir(path, self._dir_mode())
        except OSError:
            return False  # e.g. no inode left for a directory: pending/ itself still takes the job
        try:
            st = os.lstat(path)
        except OSError:
            return False
        # Not a real directory of ours (a symlink, or one a member of a shared spool's group made
        # in pending/, where it may create entries): pending/ itself takes the job.
        if not _is_ours(st, self._uid()):
            return False
        # RACE: another process may have made the shard and not yet fsync'd pending/: a rename into
        # it is durable only once the shard's own name is, so each process fsyncs once per shard.
        fsio.fsync_dir(self.pending)
        self._durable[shard] = st.st_ino
        return True

    def move_in(self, src: str, name: str, *, bump: bool = True) -> str | None:
        """Rename `src` to canonical `name` in pending/ (the shard of now). The entry, or None if
        `src` is gone (another mover won). Durable once sync() is called on the entry; `bump`:
        touch pending/ at once (a batch does it once, in sync())."""
        for _ in range(3):
            entry = self.place(name)
            try:
                if not fsio.move(src, self.path(entry)):
                    return None
            except FileNotFoundError:
                # RACE: a pruner removed the (empty, old) shard after place() made sure of it:
                # make it again (or, if that fails, write into pending/ itself).
                self._durable.pop(split(entry)[0], None)
                self._chosen = None
                continue
            if bump and entry != name:
                self.bump()
            return entry
        return name if fsio.move(src, self.path(name)) else None

    def sync(self, entries: list[str]) -> None:
        """fsync the directories that `entries` (written with place/move_in) were renamed into, and
        tell pollers that something arrived."""
        for directory in sorted({split(e)[0] for e in entries}):
            if not directory:
                fsio.fsync_dir(self.pending)
            elif self._fsync_shard(directory):
                # RACE: the shard was pruned and made again by another process since this one
                # made sure of it; its name in pending/ may not be durable yet.
                fsio.fsync_dir(self.pending)
        if any("/" in e for e in entries):
            self.bump()

    def sync_all(self) -> None:
        """fsync pending/ and every shard: for jobs another process renamed in (a batch rolled
        forward), into shards this one cannot know."""
        fsio.fsync_dir(self.pending)
        for shard in self.shards():
            self._fsync_shard(shard)

    def _fsync_shard(self, shard: str) -> bool:
        """fsync a shard; True if it is not the directory this process made sure of."""
        try:
            fd = os.open(self.path(shard), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as e:
            if not fsio.is_gone(e):
                raise
            return False  # RACE: what was renamed into it was claimed, and the empty shard pruned
        try:
            os.fsync(fd)
            return os.fstat(fd).st_ino != self._durable.get(shard)
        except OSError as e:
            if not fsio.is_gone(e):
                raise
            return False  # pruned by another host after our open (ESTALE): nothing in it to keep
        finally:
            os.close(fd)

    def bump(self) -> None:
        """Touch pending/: its stamp is what every host's workers poll. A hint only: a bump lost to
        a crash delays the pickup until the next bump or the next full listing."""
        try:
            os.utime(self.pending)
        except OSError:
            pass

    def prune(self, shard: str, now: float) -> bool:
        """Remove `shard` if it is empty and PRUNE_AFTER older than `now` (the file system's clock:
        a shard made by a host whose clock is ahead must not age the others)."""
        if now - start_of(shard) < PRUNE_AFTER:
            return False
        try:
            os.rmdir(os.path.join(self.pending, shard))  # RACE: a late writer's rename makes it fail
        except OSError:
            return False
        self._durable.pop(shard, None)
        return True


def _is_ours(st: os.stat_result, uid: int) -> bool:
    """A shard the spool's user made and no one else can write into: only such a one is listed or written into."""
    return stat.S_ISDIR(st.st_mode) and st.st_uid == uid and not st.st_mode & 0o022
