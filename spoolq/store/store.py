"""The store: one spool root and what every room shares (layout, settings, file modes, clocks,
fresh ids and sequence numbers, and the one reader of job files).

Every file or directory spoolq creates goes through the store's ``write_file``, ``publish``,
``make_dir`` and ``create_exclusive``, so each gets the spool's mode. The store renames no job
file: that is transitions.py's job.
"""

from __future__ import annotations

import _thread  # a lock, without threading's imports: a plain enqueue loads none of them (quick.py)
import errno
import os
import time

from . import config, shards, trust
from ..format import job, layout
from ..system import disk_full, fsio, liveness, locks
from .access import Access
from ..format.modes import Modes
from ..format.errors import DiskFull, InvalidJob, SpoolError, StorageError
from ..format.job import Job

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, ContextManager

CONFIG_RECHECK = 0.2  # seconds


class Sequencer:
    """Nanoseconds since the epoch, strictly increasing for one store: the FIFO order."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = _thread.allocate_lock()

    def next(self) -> int:
        # RACE: the slots of one worker (--slots) make numbers at once, each retry a new pending
        # name. Reading the last number and storing the next is two steps the interpreter may switch
        # threads between: two threads would read the same last number and, whenever the clock has
        # not passed it (a coarse or stepped-back clock), hand out the same one. The lock makes it
        # one step; it is held for no I/O, so a slot waits on it for nanoseconds.
        with self._lock:
            self._last = max(time.time_ns(), self._last + 1)
            return self._last


class Store(Access):
    """A spool directory: its layout, settings, modes, clocks, ids, and job-file reader."""

    def __init__(self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time):
        self.layout = layout.Layout(os.fspath(path))
        self.clock = clock
        self._config: config.Config | None = None
        self._config_stamp: tuple[int, int] | None = None
        self._config_checked = 0.0
        self._issued_ids: set[str] = set()
        self._sequencer = Sequencer()
        self._owner_uid: int | None = None
        self._creator: layout.Creator | None = None
        # Whose spool it is used as: this user, or for a reader (open_for_reading) its owner.
        self.uid = os.geteuid()
        self.reading = False  # a reader: nothing in the spool is created, changed or removed
        self.config_error: str | None = None  # why config.json could not be read just now
        self._held_root: int | None = None  # the root's directory, held open (hold_root)
        self._held_links = 0  # its link count then
        self._let_go: Callable[[], object] = lambda: None  # closes it
        self.shards = shards.PendingShards(self.layout.pending, lambda: self.modes.dir,
                                           lambda: self.config.pending_shards, self.clock, lambda: self.uid)

    @property
    def root(self) -> str:
        return self.layout.root

    def now(self, given: float | None = None) -> float:
        """`given` when the caller fixes time, else this store's clock."""
        return self.clock() if given is None else given

    def init(self) -> None:
        """Create the layout (idempotent), in a new or empty directory or an existing spool only,
        then check it is safe to use."""
        self.check_safe()  # what is there already, before anything is created in it
        self._refuse_foreign_root()
        try:
            trust.make_private_parents(self.root)
            self.make_dir(self.root)
            for name in layout.STATE_DIRS + layout.OTHER_DIRS:
                self.make_dir(self.layout.dir(name))
            for name in config.LOCKS:
                locks.make(self.layout.lock(name), self.modes.file)
            self._make_idle_stop_file()
        except OSError as e:
            raise io_error(f"cannot create spool at {self.root}", e) from None
        self.check_safe()

    def _make_idle_stop_file(self) -> None:
        """control/stop holding no request: a later one can then be written into it in place when
        the disk has no inode left (see Owners.request_stop)."""
        try:
            self.write_file(self.layout.stop_file, b"idle\n", durable=False)
        except FileExistsError:
            pass

    def is_spool(self) -> bool:
        return os.path.isdir(self.layout.pending)

    def hold_root(self) -> None:
        """Hold the directory the root names now open (a worker, as it starts), for root_moved."""
        import weakref  # a worker's alone, never an enqueue's

        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if self._held_root is not None:
            self._let_go()
        self._held_root = fd
        self._held_links = os.fstat(fd).st_nlink  # 0 where a FUSE file system counts no links: never 'deleted'
        self._let_go = weakref.finalize(self, os.close, fd)  # closed with the Store (in-process workers)

    def root_moved(self) -> str | None:
        """Why the root no longer names the directory hold_root found (moved away or deleted,
        and perhaps made anew at its path), or None: a worker's registration, its jobs in
        processing/ and their results went with the old one, and no rename finds them here."""
        if self._held_root is None:
            return None
        # RACE: a move right after this look is found by the next (a worker looks every 2 s, and
        # whenever its registration or a job it holds is gone); what it does meanwhile fails on
        # paths that name nothing, or in a new spool at the path, which holds none of its jobs.
        gone = f"the spool {self.root} was moved away or deleted under this worker"
        try:
            st = os.stat(self.root)
        except FileNotFoundError:
            return gone
        except OSError:
            return None  # out of reach, not moved: said as such by whoever reads it next
        try:
            held = os.fstat(self._held_root)
        except OSError as e:  # ESTALE: deleted on an NFS server (by another host)
            return gone if e.errno in (errno.ESTALE, errno.ENOENT) else None
        if held.st_nlink == 0 < self._held_links:  # deleted, though a new root may have its inode number
            return f"{gone}, and another directory is there now"
        if os.path.samestat(st, held) or st.st_ino == held.st_ino and self._remounted():
            return None
        return f"{gone}, and another directory is there now"

    def _remounted(self) -> bool:
        """Whether the root, its inode the held one's on another device number, is the same
        directory mounted anew (a network or FUSE mount's remount gives it a device number of
        its own): its pending/ and workers/ are the held ones' too."""
        try:
            held_names = (os.path.relpath(path, self.root)
                          for path in (self.layout.pending, self.layout.dir("workers")))
            return all(os.stat(name, dir_fd=self._held_root).st_ino == os.stat(os.path.join(self.root, name)).st_ino
                       for name in held_names)
        except OSError:
            return False

    def _refuse_foreign_root(self) -> None:
        """Never scatter the layout into a directory that holds something else (`--spool /`)."""
        if not self.is_spool() and self.holds_other_files():
            raise SpoolError(f"{self.root} is not empty and not a spool; give a new or empty directory")

    def holds_other_files(self) -> bool:
        """Whether the root is a directory with entries besides dot files (`/`, a home directory):
        one that is not a spool is never made one, by init or by fsck --repair."""
        if not os.path.isdir(self.root):
            return False
        try:
            return any(not e.startswith(".") for e in os.listdir(self.root))
        except OSError as e:
            raise SpoolError(f"cannot read {self.root}: {e.strerror}") from None

    # ---- settings ------------------------------------------------------------------------

    @property
    def config(self) -> config.Config:
        """The settings, re-read when config.json changes (looked at no more than every 0.2 s:
        a worker asks many times per job)."""
        checked = time.monotonic()
        if self._config is not None and checked - self._config_checked < CONFIG_RECHECK:
            return self._config
        self._config_checked = checked
        try:
            st = os.stat(self.layout.config)
            stamp = (st.st_ino, st.st_mtime_ns)
        except (FileNotFoundError, NotADirectoryError):  # none; or the spool's path is a file, said by its check
            stamp = None
        if self._config is None or stamp != self._config_stamp:
            self._reload_config(stamp)
        return self._config

    def _reload_config(self, stamp: tuple[int, int] | None) -> None:
        """A config.json that cannot be read (an editor half-way through saving it) keeps the
        settings last read, and says so in config_error; a first read that fails raises."""
        if self._config is None:
            self._refuse_another_users_spool()  # its settings are believed only as its owner's
        try:
            self._config = config.load(self.layout, self.uid)
            self.config_error = None
        except SpoolError as e:
            if self._config is None:
                raise
            self.config_error = str(e)
        self._config_stamp = stamp


    def use_default_config(self) -> None:
        """Carry on with the defaults while config.json stays unreadable (fsck reports it)."""
        st = os.stat(self.layout.config)
        self._config = config.Config({})
        self._config_stamp = (st.st_ino, st.st_mtime_ns)

    def set_config(self, key: str, value: Any) -> config.Config:
        self.refuse_if_reading("change the settings")
        self.refuse_if_no_spool()  # its lock would make locks/ at a wrong path
        self._config = config.save(self.layout, key, value, mode=self.modes.file, temp_path=self.temp_path())
        self._config_stamp = None
        if key == "group_access":
            trust.give_modes(self.layout, Modes.for_spool(bool(value)))
        return self._config

    # ---- creating files with the spool's modes -------------------------------------------

    @property
    def modes(self) -> Modes:
        return Modes.for_spool(bool(self.config.group_access))

    def make_dir(self, path: str) -> None:
        self.refuse_if_reading("create a directory")
        fsio.make_dir(path, self.modes.inbox if self.layout.is_inbox(path) else self.modes.dir)

    def write_file(self, path: str, data: bytes, *, durable: bool) -> None:
        self.refuse_if_reading("write a file")
        fsio.write_file(path, data, durable=durable, mode=self.modes.file)

    def publish(self, final_path: str, data: bytes, *, durable: bool = True) -> None:
        """Write `data` under a temp name in tmp/, then rename it to `final_path`."""
        self.refuse_if_reading("write a file")
        fsio.publish(self.temp_path(), data, final_path, durable=durable, mode=self.modes.file)

    def temp_path(self, directory: str | None = None) -> str:
        """A fresh temp name, invisible to every reader, naming this process as its creator: in
        tmp/, or beside where it will land."""
        return os.path.join(directory or self.layout.tmp, layout.tmp_name(self.creator()))

    def creator(self, owner: str | None = None) -> layout.Creator:
        """This process, as the creator of a temp file or an id marker (asked again after a fork)."""
        pid = os.getpid()
        if self._creator is None or self._creator.pid != pid:
            self._creator = layout.Creator(layout.host_name(), pid, liveness.start_token(pid), liveness.boot_id(),
                                           pidns=liveness.pid_namespace())
        return self._creator._replace(owner=owner) if owner else self._creator

    def locked(self, name: str, *, timeout: float = 30.0) -> ContextManager[None]:
        """Hold the named spool lock (locks.py: a flock on a file made with the layout, so purge,
        the way to free space, takes it on a full disk too; a holder that dies lets go); LockBusy,
        naming its holder, after `timeout` seconds (0: at once)."""
        self.refuse_if_reading("take a lock")
        self.refuse_if_no_spool()  # filelock makes the lock's directories: never a spool at a wrong path
        return config.locked(self.layout, name, mode=self.modes.file, timeout=timeout)

    # ---- clocks, ids, order --------------------------------------------------------------

    def fs_clock(self) -> float:
        """Now, on the spool file system's own clock: the mtime of a file just written there. Where
        nothing can be written (a full disk, a read-only mount, a reader) the local clock stands in."""
        if self.reading:
            return self.clock()
        path = self.temp_path()
        try:
            self.write_file(path, b"", durable=False)
        except OSError:
            return self.clock()
        try:
            return os.stat(path).st_mtime
        finally:
            fsio.unlink_quietly(path)

    def next_seq(self) -> int:
        return self._sequencer.next()

    def fresh_id(self) -> str:
        # A batch gets all its ids before any marker exists, and 32 random bits collide within a
        # 100k batch more often than not: remember what this store handed out.
        while True:
            job_id = layout.random_hex(4)
            if job_id not in self._issued_ids and not os.path.lexists(self.layout.id_marker(job_id)):
                self._issued_ids.add(job_id)
                return job_id

    def make_job(self, spec: dict[str, Any], *, now: float | None = None, seq: int | None = None) -> Job:
        """Validate a job spec and fill in what spoolq decides (id, seq, defaults). Writes nothing."""
        made = job.from_dict(spec, now=self.now(now), default_max_retries=self.config.max_retries,
                             seq=self.next_seq() if seq is None else seq)
        made.attempts, made.exit_code, made.updated_at = 0, None, None  # a new job has no history
        if not made.id:
            made.id = self.fresh_id()
        return made

    # ---- reading job files ---------------------------------------------------------------

    def read_job(self, path: str, *, now: float, expect_id: str | None = None,
                 trusted_only: bool = False) -> tuple[Job, os.stat_result]:
        """Read one job file. FileNotFoundError if it is gone; InvalidJob saying why for whatever
        makes it no job: not a regular singly linked file, unreadable, malformed, another id than
        its name says, or (`trusted_only`, for files about to run) an untrusted owner."""
        data, st = self.read_bytes(path, "the file")
        untrusted = trusted_only and self.why_untrusted(st)
        if untrusted:
            raise InvalidJob(f"the file {untrusted}")
        found = job.from_json(data, now=now, default_max_retries=self.config.max_retries)
        if expect_id is not None and found.id != expect_id:
            raise InvalidJob(f"the file's id {found.id!r} does not match its name")
        return found, st

    def read_bytes(self, path: str, what: str) -> tuple[bytes, os.stat_result]:
        """The bytes of a regular, singly linked file of at most a job's size. FileNotFoundError
        if it is gone; InvalidJob ("<what> is a symbolic link", ...) for anything else."""
        try:
            return fsio.read_regular(path, job.MAX_JOB_BYTES)
        except FileNotFoundError:
            raise
        except ValueError as e:
            raise InvalidJob(f"{what} {e}") from None
        except OSError as e:
            if fsio.is_gone(e):  # ESTALE: moved on by another host, at any of the read's calls
                raise fsio.as_gone(e, path) from None
            raise InvalidJob(f"{what} cannot be read: {e.strerror}") from None

def io_message(what: str, e: OSError, *, nothing_written: bool = True) -> str:
    """One line for an OSError met while changing the spool."""
    if disk_full.is_disk_full(e):
        return f"{what}: {disk_full.full_cause(e)} ({e.strerror})" + ("; nothing was written" if nothing_written else "")
    return f"{what}: {e.strerror or e}" + (f" ({e.filename})" if e.filename else "")


def io_error(what: str, e: OSError, *, nothing_written: bool = True) -> StorageError:
    """An OSError met while using the spool, as the error a caller catches by type: DiskFull for
    a full disk, StorageError for the rest (its errno kept)."""
    kind = DiskFull if disk_full.is_disk_full(e) else StorageError
    return kind(io_message(what, e, nothing_written=nothing_written), e.errno)
