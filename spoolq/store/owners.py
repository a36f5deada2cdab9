"""Owners: the registry of live workers and supervisors (``workers/<owner>.json``, its mtime the
heartbeat) and stop requests. Whether an owner is gone is the judge's to say (judge.py)."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..format import job, layout
from ..system import disk_full, fsio, liveness
from ..format.errors import SpoolError
from .judge import OwnerJudge, Registration, beat_interval
from .store import Store


@dataclass
class WorkerInfo:
    owner: str
    host: str
    pid: int
    role: str
    started_at: str | None
    heartbeat: float
    job: str | None = None  # the first of `jobs`
    extra: dict[str, Any] = field(default_factory=dict)
    jobs: tuple[str, ...] = ()  # the jobs it runs now (more than one: a worker of several slots)

    @property
    def slots(self) -> int:
        """How many jobs it runs at once (`worker start --slots`): 1 when its registration says none."""
        n = self.extra.get("slots", 1)
        return n if job.is_int(n) and n >= 1 else 1


TICK = 0.011  # a clock tick, and a little: the resolution of a process's start time
FS_TICK = 0.011  # and of the file system's clock, measured against ours (plus what it rounds)
MAX_REGISTRATION_BYTES = 256 * 1024  # a worker's, with shares.MAX_QUEUES queues named: about 70 KB


class StartedAt(NamedTuple):
    """When a worker's command began: on this host's clock, and on the spool file system's (what
    a stop request from another host, whose clock may be off, is compared with)."""

    local: float
    fs: float


class StopRequest(NamedTuple):
    """What control/stop says: when the stop was asked for (on the asking host's clock, and on
    the file system's), from which host, and whether the running jobs are to be killed too."""

    at: float
    at_fs: float
    host: str | None
    kill_jobs: bool

    def stops(self, since: StartedAt) -> bool:
        """Is this a request for a worker whose command began at `since`? One asked for no
        earlier: start times are known to a clock tick (10 ms), and a tie stops it (`worker
        start & worker stop`, typed together, means stop). A request from this host is judged on
        this host's clock; one from another host on the file system's, whatever the skew."""
        if self.host == layout.host_hash():
            return self.at >= since.local - TICK
        return self.at_fs >= since.fs - FS_TICK


class OwnerDir(NamedTuple):
    """A processing/ sub-directory: an owner's, or one a rescuer fenced (``R~...~W``)."""

    name: str

    @property
    def chain(self) -> list[str]:
        """Its owner tokens, the current holder first."""
        return self.name.split(layout.RESCUE_SEP)

    @property
    def holder(self) -> str:
        return self.chain[0]


class Owners:
    def __init__(self, store: Store):
        self.store = store
        self.layout = store.layout
        self._stop_cache: tuple[tuple[int, ...], StopRequest | None] | None = None

    def judge(self, lease: float | None = None) -> OwnerJudge:
        return OwnerJudge(self.store, self.store.config.lease_timeout if lease is None else lease)

    # ---- registration and heartbeat ------------------------------------------------------

    def register(self, role: str = "worker", **extra: Any) -> str:
        """Announce a live owner; returns its token. The registration file's mtime is its heartbeat,
        judged by the lease it records (`lease`: the one its owner beats under; by default the
        configured one)."""
        host = layout.host_name()
        owner = layout.owner_token(host, os.getpid())
        record = {"owner": owner, "host": host, "pid": os.getpid(), "role": role,
                  "start": liveness.start_token(os.getpid()), "boot": liveness.boot_id(),
                  "pidns": liveness.pid_namespace(), "lease": self.store.config.lease_timeout,
                  "started_at": job.iso(self.store.clock()), **extra}
        self._write_registration(owner, record)
        # RACE: the registration exists before the owner's directory, and outlives it at
        # unregister, so a processing/<owner> without a registration always means a dead owner.
        try:
            self.store.make_dir(self.layout.owned(owner))
        except BaseException:
            fsio.unlink_quietly(self.layout.worker_file(owner))
            raise
        return owner

    def _write_registration(self, owner: str, record: dict[str, Any]) -> None:
        data = json.dumps(record).encode()
        if len(data) > MAX_REGISTRATION_BYTES:  # others could not read it, and would judge its owner gone
            raise SpoolError(f"a registration of {len(data)} bytes is over the limit of {MAX_REGISTRATION_BYTES}")
        self.store.publish(self.layout.worker_file(owner), data, durable=False)

    def heartbeat(self, owner: str, lease: float | None = None) -> bool:
        """Touch the registration (with `lease`: rewrite it to record that lease, the one its owner
        beats under from now on); False if it is gone (this owner was declared dead elsewhere),
        or if a rescuer has marked its directory (seen even through a cached old name)."""
        try:
            if lease is None:
                os.utime(self.layout.worker_file(owner))
            elif not self._record_lease(owner, lease):
                return False
        except OSError as e:
            if fsio.is_gone(e):
                return False
            raise
        owned = self.layout.owned(owner)
        return os.path.isdir(owned) and not os.path.lexists(os.path.join(owned, layout.FENCE_FILE))

    def unregister(self, owner: str) -> None:
        owned = self.layout.owned(owner)
        for entry in fsio.listdir(owned):
            if entry.startswith(".") and layout.parse_transit(entry) is None:  # a move half done is a job
                fsio.unlink_quietly(os.path.join(owned, entry))
        try:
            os.rmdir(owned)
        except OSError as e:
            if not fsio.is_gone(e):  # gone (fenced, here or on another host): the registration goes too
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                return  # still holds a job: leave it for recovery rather than lose it
        fsio.unlink_quietly(self.layout.worker_file(owner))

    def _record_lease(self, owner: str, lease: float) -> bool:
        """Rewrite a registration under a new lease; False if it is gone."""
        reg = self.registration(owner)
        if reg is None:
            return False
        if not reg.record:  # unreadable (another program's bytes): touched, judged by the configured lease
            os.utime(self.layout.worker_file(owner))
            return True
        # RACE: a rescuer may fence this owner and remove its registration between the read and
        # the rename, which then brings it back: the look at the directory that follows (in
        # heartbeat) finds the fence, the owner goes on under a new identity and removes it.
        self._write_registration(owner, {**reg.record, "lease": lease})
        return True

    def heartbeat_interval(self) -> float:
        """How often a live owner touches its registration under the configured lease."""
        return beat_interval(self.store.config.lease_timeout)

    def registration(self, owner: str) -> Registration | None:
        """None if there is none; an empty record if it cannot be read or believed. One that someone
        else wrote or could rewrite (modes.py) is judged by its lease alone, from the file's mtime:
        whoever can write a file can make it look fresh, never old, so no live worker is ever taken
        for dead from a record it did not write; nor from a file system that does not answer (EIO,
        ENOTCONN, ESTALE: a client just reconnected). Its owner's own file that is no registration
        (torn by a crash) has no heartbeat."""
        path = self.layout.worker_file(owner)
        try:  # never blocking on a fifo, nor reading a file of any size, that someone put there
            data, st = fsio.read_regular(path, MAX_REGISTRATION_BYTES, single_link=False)
            if self.store.why_not_owners(st):
                return Registration(owner, {}, st.st_mtime)
            record = json.loads(data)
            return Registration(owner, record if isinstance(record, dict) else {}, st.st_mtime)
        except FileNotFoundError:
            return None
        except (ValueError, RecursionError):
            # Its owner's own file, and not a registration: torn by a crash (it is written without
            # fsync), so its owner is gone; judged so at once, as a record with no heartbeat.
            return Registration(owner, {}, 0.0)
        except OSError:
            return self._unreadable(path, owner)

    @staticmethod
    def _unreadable(path: str, owner: str) -> Registration | None:
        """A registration that cannot be read just now (EMFILE, EIO, ENOTCONN): its mtime; if even
        that cannot be had, a heartbeat never too old (fail closed: rescued only once known gone)."""
        try:
            return Registration(owner, {}, os.lstat(path).st_mtime)
        except FileNotFoundError:
            return None
        except OSError:
            return Registration(owner, {}, math.inf)  # cannot tell: never judged gone on this

    def record(self, owner: str) -> dict[str, Any] | None:
        """What an owner's registration says; None if it is gone, {} if it cannot be read."""
        reg = self.registration(owner)
        return reg.record if reg is not None else None

    def registered(self) -> list[str]:
        return [layout.stem(e) for e in fsio.listdir(self.layout.dir("workers")) if layout.is_json_entry(e)]

    # ---- who is alive --------------------------------------------------------------------

    def workers(self, *, role: str | None = None, live: bool = True) -> list[WorkerInfo]:
        """Registered owners (of one role: "worker" or "supervisor"); by default only the live ones."""
        out = []
        judge = self.judge()
        for owner in self.registered():
            reg = self.registration(owner)
            if reg is None or not reg.record:
                continue  # gone while we looked, or unreadable
            if role is not None and reg.record.get("role", "worker") != role:
                continue
            if live and judge.why_gone(reg):
                continue
            out.append(self._worker_info(reg))
        return sorted(out, key=lambda w: (w.host, w.pid, w.owner))

    def _worker_info(self, reg: Registration) -> WorkerInfo:
        jobs = sorted(layout.stem(e) for e in fsio.listdir(self.layout.owned(reg.owner))
                      if layout.is_json_entry(e) and not e.startswith(layout.ADOPT_PREFIX))
        record = reg.record
        known = ("owner", "host", "pid", "role", "started_at", "lease")
        pid = record.get("pid")
        return WorkerInfo(owner=reg.owner, host=str(record.get("host", "?")), pid=pid if job.is_int(pid) else 0,
                          role=str(record.get("role", "worker")), started_at=record.get("started_at"),
                          heartbeat=reg.heartbeat, job=jobs[0] if jobs else None, jobs=tuple(jobs),
                          extra={k: v for k, v in record.items() if k not in known})

    def gone_dirs(self, *, lease: float | None = None) -> list[OwnerDir]:
        """processing/ sub-directories whose holder is gone: a dead pid on this host, an expired
        lease on any host, or no registration at all."""
        judge = self.judge(lease)
        gone = []
        for entry in fsio.listdir(self.layout.processing):
            if entry.startswith(".") or not self._ours(self.layout.owned(entry)):
                continue  # not a directory a worker of ours made: never followed, fsck reports it
            owned = OwnerDir(entry)
            reg = self.registration(owned.holder)
            if reg is None or judge.why_gone(reg):
                gone.append(owned)
        return gone

    def why_gone(self, owner: str) -> str | None:
        """Why `owner` counts as gone (its process dead here, its lease run out elsewhere, no
        registration), or None while it lives."""
        reg = self.registration(owner)
        return "it has no registration" if reg is None else self.judge().why_gone(reg)

    def held_by_gone(self) -> list[str]:
        """The ids of the jobs in processing/ whose worker is gone (killed, a reboot): nothing
        runs them until a recovery (a worker's start or sweep, `fsck --repair`) takes them back."""
        return sorted(layout.stem(name) for owned in self.gone_dirs()
                      for name in fsio.listdir(self.layout.owned(owned.name))
                      if layout.is_json_entry(name) and not name.startswith(layout.ADOPT_PREFIX))

    def _ours(self, path: str) -> bool:
        try:
            st = os.lstat(path)
        except OSError:
            return False
        return stat.S_ISDIR(st.st_mode) and st.st_uid == self.store.uid and not self.store.why_not_owners(st)

    def stale_registrations(self) -> list[tuple[str, str]]:
        """(owner, why) for registrations of owners that are gone and hold no directory (an owner
        with one is recovery's: its jobs go first)."""
        judge = self.judge()
        stale = []
        for owner in sorted(self.registered()):
            reg = self.registration(owner)
            if reg is None or os.path.isdir(self.layout.owned(owner)):
                continue
            why = judge.why_gone(reg)
            if why:
                stale.append((owner, why))
        return stale

    def drop_stale_registrations(self, *, keep: str | None = None) -> None:
        """Remove the registrations of gone owners that hold no directory; never `keep`'s (the
        owner doing this, alive whatever a failing file system says of it)."""
        for owner, _ in self.stale_registrations():
            if owner != keep:
                fsio.unlink_quietly(self.layout.worker_file(owner))

    def why_creator_gone(self, creator: layout.Creator, judge: OwnerJudge | None = None) -> str | None:
        """Is the process that made a temp file or a marker gone? A worker's registration (and
        lease) speaks for it; any other process can be judged only on its own machine."""
        judge = judge or self.judge()
        if creator.owner:
            reg = self.registration(creator.owner)
            return f"worker {creator.owner} is gone" if reg is None else judge.why_gone(reg)
        here = creator.host in (judge.here, layout.safe_host(judge.here))
        return judge.why_process_gone(judge.here if here else creator.host, creator.pid,
                                      start=creator.start, boot=creator.boot, pidns=creator.pidns)

    # ---- stop requests -------------------------------------------------------------------

    def since(self, local: float) -> StartedAt:
        """`local` (this host's clock) with its equivalent on the file system's clock."""
        return StartedAt(local, local + self.store.fs_clock() - time.time())

    def stop_request(self) -> StopRequest | None:
        """The stop request in control/stop, if any: "stop|now <time> <token> <host> <fs time>";
        "idle" (as init leaves it) is none; a file that names no time (another program's, or one
        rewritten on a full disk) counts from its mtime. Read again only when the file changes.
        Only an entry the owner (or a trusted uid) made, and no one else can rewrite, is a request:
        whatever it is (a file, a fifo, a directory, a symlink, never followed)."""
        try:
            st = os.lstat(self.layout.stop_file)
        except OSError:
            return None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_uid, st.st_mode)
        if self._stop_cache is None or self._stop_cache[0] != stamp:
            self._stop_cache = (stamp, self._read_stop_request(st))
        return self._stop_cache[1]

    def _read_stop_request(self, entry: os.stat_result) -> StopRequest | None:
        if self.store.why_not_owners(entry):
            return None  # made by someone else, or open to them: not the owner's request, even unread
        mtime = entry.st_mtime
        try:
            data, st = fsio.read_regular(self.layout.stop_file, 256)
            words = [w.decode("ascii", "replace") for w in data.split()]
        except (OSError, ValueError):
            words = []
        else:
            if self.store.why_not_owners(st):
                return None  # a request someone else wrote, or could have: not the owner's
        if words[:1] == ["idle"]:
            return None
        number = re.compile(r"[0-9]+(\.[0-9]+)?")
        at = float(words[1]) if len(words) > 1 and number.fullmatch(words[1]) else mtime
        at_fs = float(words[4]) if len(words) > 4 and number.fullmatch(words[4]) else at if len(words) > 1 else mtime
        host = words[3] if len(words) > 3 else None
        return StopRequest(at, at_fs, host, kill_jobs=words[:1] == ["now"])

    def request_stop(self, *, kill_jobs: bool = False, at: float | None = None) -> None:
        """Ask every worker of this spool, on every host, whose command began before `at` (now,
        unless the caller knows better: `worker stop` gives the moment the user asked), to stop
        after its current job (with `kill_jobs`, at once: its job's attempt is killed, and counts)."""
        at = time.time() if at is None else at
        at_fs = self.since(at).fs
        word = "now" if kill_jobs else "stop"
        content = f"{word} {at:.6f} {layout.random_hex(8)} {layout.host_hash()} {at_fs:.6f}\n".encode()
        try:
            self.store.publish(self.layout.stop_file, content)
        except OSError as e:
            if not disk_full.is_disk_full(e):
                raise
            self._rewrite_stop_file(content if kill_jobs else b"")  # no inode (and, empty, no block) needed

    def _rewrite_stop_file(self, content: bytes) -> None:
        fd = os.open(self.layout.stop_file, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            fsio.write_all(fd, content)
        finally:
            os.close(fd)

    def stop_requested(self, since: StartedAt) -> StopRequest | None:
        """The stop request that concerns a worker whose command began at `since`, if any."""
        request = self.stop_request()
        return request if request is not None and request.stops(since) else None
