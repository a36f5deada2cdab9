"""The spool: the only code that writes, renames or reads job files (format: layout.py)."""

from __future__ import annotations

import errno
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from . import config as config_mod
from . import fsio, job as job_mod, layout as L, liveness, retry
from .errors import InvalidJob, JobExists, JobNotFound, LostOwnership, NotRetryable, SpoolError
from .job import Job

_last_seq = 0
CONFIG_RECHECK = 0.2  # seconds


def next_seq() -> int:
    """Nanoseconds since the epoch, strictly increasing within this process: the FIFO order."""
    global _last_seq
    _last_seq = max(time.time_ns(), _last_seq + 1)
    return _last_seq


@dataclass
class JobView:
    """A job as a reader sees it: where it is and what its file says."""

    id: str
    state: str
    job: Job | None
    path: str
    reason: str | None = None  # quarantined files: why
    owner: str | None = None
    changed_at: float | None = None  # ctime of the file: when it last moved

    def to_dict(self) -> dict[str, Any]:
        if self.job is None:
            out: dict[str, Any] = {"id": self.id, "command": None, "state": self.state, "attempts": 0,
                                   "max_retries": None, "priority": None, "created_at": None,
                                   "updated_at": None, "run_at": None, "exit_code": None,
                                   "last_error": self.reason, "quarantined": True}
            return out
        out = self.job.to_dict()
        out.pop("seq", None)
        out["state"] = self.state
        if self.state == "processing":
            out["attempts"] = self.job.attempts + 1  # the running attempt counts from its claim
            out["worker"] = self.owner
        elif self.state == "done":
            # A success is recorded by the move into done/ alone (no rewrite, no fsync): the file
            # holds the attempts before it.
            out["attempts"] = self.job.attempts + 1
            out["exit_code"] = 0
            out["updated_at"] = job_mod.iso(self.changed_at) if self.changed_at else out["updated_at"]
        return {"id": out.pop("id"), "command": out.pop("command"), "state": out.pop("state"), **out}


def waiting_state(job: Job, now: float) -> str:
    """A job in pending/ is "scheduled" until its run_at, "pending" (ready) after."""
    return "scheduled" if job.run_at and job.run_at > now else "pending"


@dataclass
class Claimed:
    """A job this owner holds in processing/<owner>/."""

    job: Job
    owner: str
    path: str
    attempt: int  # the number of this attempt, counted from the claim


@dataclass
class Adoption:
    """The result of looking at a dropped file."""

    outcome: str  # "published", "quarantined", "wait", "gone", "ignored" (inspect_dropin: "refuse", "ok")
    job_id: str | None = None
    retry_at: float | None = None
    reason: str | None = None
    pending_name: str | None = None  # published: its canonical name in pending/
    stat: os.stat_result | None = None  # ok: the file as inspected


@dataclass
class Recovered:
    owner: str
    job_id: str
    state: str
    reason: str


@dataclass
class Counts:
    pending: int = 0
    scheduled: int = 0
    processing: int = 0
    done: int = 0
    dead: int = 0
    workers: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class WorkerInfo:
    owner: str
    host: str
    pid: int
    role: str
    started_at: str | None
    heartbeat: float
    job: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Spool:
    """A spool directory and every state transition of its jobs."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True):
        self.layout = L.Layout(os.fspath(path))
        self._config: config_mod.Config | None = None
        self._config_stamp: tuple[int, int] | None = None
        self._config_checked = 0.0
        self._issued_ids: set[str] = set()
        if create:
            self.init()

    # ---- layout and settings -------------------------------------------------------------

    def init(self) -> None:
        """Create the layout; idempotent."""
        try:
            self._apply_modes()
            os.makedirs(os.path.dirname(self.layout.root) or ".", exist_ok=True)
            fsio.make_dir(self.layout.root)
            for name in L.STATE_DIRS + L.OTHER_DIRS:
                fsio.make_dir(self.layout.dir(name))
        except OSError as e:
            raise SpoolError(f"cannot create spool at {self.layout.root}: {e.strerror}") from None

    def _apply_modes(self) -> None:
        shared = self.config.group_access
        fsio.set_modes(0o660 if shared else 0o600, 0o2770 if shared else 0o700)

    @property
    def root(self) -> str:
        return self.layout.root

    @property
    def config(self) -> config_mod.Config:
        """The settings, re-read when config.json changes (looked at no more than every 0.2 s:
        a worker asks many times per job)."""
        checked = time.monotonic()
        if self._config is not None and checked - self._config_checked < CONFIG_RECHECK:
            return self._config
        self._config_checked = checked
        try:
            st = os.stat(self.layout.config)
            stamp = (st.st_ino, st.st_mtime_ns)
        except FileNotFoundError:
            stamp = None
        if self._config is None or stamp != self._config_stamp:
            self._config = config_mod.load(self.layout)
            self._config_stamp = stamp
        return self._config

    def use_default_config(self) -> None:
        """Carry on with the defaults while config.json stays unreadable (fsck reports it)."""
        st = os.stat(self.layout.config)
        self._config = config_mod.Config({})
        self._config_stamp = (st.st_ino, st.st_mtime_ns)

    def set_config(self, key: str, value: Any) -> config_mod.Config:
        self._config = config_mod.save(self.layout, key, value)
        self._config_stamp = None
        if key == "group_access":
            self._apply_modes()
            self._chmod_tree()
        return self._config

    def _chmod_tree(self) -> None:
        for dirpath, dirnames, filenames in os.walk(self.layout.root):
            os.chmod(dirpath, fsio.DIR_MODE)
            for name in filenames:
                try:
                    os.chmod(os.path.join(dirpath, name), fsio.FILE_MODE, follow_symlinks=False)
                except (OSError, NotImplementedError):
                    pass

    # ---- enqueue -------------------------------------------------------------------------

    def make_job(self, spec: dict[str, Any], *, now: float | None = None) -> Job:
        """Validate a job spec and fill in what spoolq decides (id, seq, defaults). Writes nothing."""
        now = time.time() if now is None else now
        job = job_mod.from_dict(spec, now=now, default_max_retries=self.config.max_retries, seq=next_seq())
        job.attempts, job.exit_code, job.updated_at = 0, None, None
        if not job.id:
            job.id = self._fresh_id()
        return job

    def _fresh_id(self) -> str:
        # A batch gets all its ids before any marker exists, and 32 random bits collide within a
        # 100k batch more often than not: remember what this instance handed out.
        while True:
            job_id = L.random_hex(4)
            if job_id not in self._issued_ids and not os.path.lexists(self.layout.id_marker(job_id)):
                self._issued_ids.add(job_id)
                return job_id

    def enqueue(self, spec: dict[str, Any] | Job, *, now: float | None = None) -> Job:
        """Publish one job durably: when this returns, the job survives a power cut."""
        return self.enqueue_many([spec], now=now)[0]

    def enqueue_many(self, specs: Iterable[dict[str, Any] | Job], *, now: float | None = None,
                     progress: Any = None) -> list[Job]:
        """Publish jobs all-or-nothing as far as the caller can cause it: every spec is checked and
        every id reserved before the first job is written; one file-system barrier for the batch."""
        jobs = [s if isinstance(s, Job) else self.make_job(s, now=now) for s in specs]
        seen: set[str] = set()
        for n, job in enumerate(jobs, 1):
            if job.id in seen:
                raise JobExists(f"job {n}: id {job.id!r} appears twice in the input")
            seen.add(job.id)
        reserved: list[str] = []
        written: list[tuple[str, str]] = []
        try:
            ids_dir = self.layout.dir("ids") + os.sep  # plain concatenation: 100k joins add up
            tmp_dir = self.layout.tmp + os.sep
            pending_dir = self.layout.pending + os.sep
            for job in jobs:
                if not fsio.create_exclusive(ids_dir + job.id):
                    raise JobExists(f"job id {job.id!r} already exists", job.id)
                reserved.append(job.id)
            durable_each = len(jobs) == 1
            for job in jobs:
                tmp = tmp_dir + L.tmp_name()
                fsio.write_file(tmp, job.to_json(), durable=durable_each)
                written.append((tmp, L.pending_name_of(job)))
                if progress:
                    progress(1)
            if not durable_each:
                fsio.sync_filesystem(self.layout.tmp)
            for tmp, name in written:
                os.rename(tmp, pending_dir + name)
            fsio.fsync_dir(self.layout.pending)
            fsio.fsync_dir(self.layout.dir("ids"))
        except BaseException as e:  # nothing published: take back every temp file and reserved id
            for tmp, _ in written:
                fsio.unlink_quietly(tmp)
            for job_id in reserved:
                fsio.unlink_quietly(self.layout.id_marker(job_id))
            if isinstance(e, OSError):
                raise SpoolError(_io_message("cannot enqueue", e)) from None
            raise
        return jobs

    # ---- reading -------------------------------------------------------------------------

    def find(self, job_id: str) -> JobView:
        if job_id.startswith(L.QUARANTINE_PREFIX):
            path = os.path.join(self.layout.dead, L.job_file(job_id))
            if os.path.lexists(path):
                return JobView(job_id, "dead", None, path, reason=self._reason(job_id))
            raise JobNotFound(f"no job {job_id!r}")
        job_mod.check_id(job_id)
        # RACE: a job can move between the directories while we look; a second pass finds it.
        for _ in range(3):
            view = self._locate(job_id)
            if view is not None:
                return view
            if not os.path.lexists(self.layout.id_marker(job_id)):
                break
        raise JobNotFound(f"no job {job_id!r}")

    def _locate(self, job_id: str) -> JobView | None:
        name = L.job_file(job_id)
        for state, directory in (("done", self.layout.done), ("dead", self.layout.dead)):
            view = self._view(os.path.join(directory, name), state, job_id)
            if view is not None:
                return view
        for owner in fsio.listdir(self.layout.processing):
            view = self._view(os.path.join(self.layout.owned(owner), name), "processing", job_id, owner)
            if view is not None:
                return view
        suffix = f"@{job_id}.json"
        dropped = []
        for entry in fsio.listdir(self.layout.pending):
            if entry.endswith(suffix):
                parsed = L.parse_pending(entry)
                if parsed is not None:
                    view = self._view(os.path.join(self.layout.pending, entry), "pending", job_id)
                    if view is not None:
                        return view
            elif L.is_dropin(entry):
                dropped.append(entry)
        return self._find_dropped(job_id, dropped)

    def _find_dropped(self, job_id: str, entries: list[str]) -> JobView | None:
        """A dropped file no worker has taken yet is a pending job too: by its `id` field, or by
        its name when it has none (so `wait ID` right after a drop works)."""
        for entry in entries:
            view = self._view(os.path.join(self.layout.pending, entry), "pending", entry[:-5])
            if view is None or view.job is None:
                continue
            if view.job.id == job_id or (not view.job.id and entry[:-5] == job_id):
                view.id = view.job.id = job_id
                return view
        return None

    def _view(self, path: str, state: str, job_id: str, owner: str | None = None,
              now: float | None = None) -> JobView | None:
        try:
            job, st = self.read_job(path, now=time.time())
        except FileNotFoundError:
            return None
        except InvalidJob as e:
            return JobView(job_id, state, None, path, reason=str(e))
        if state == "pending":
            state = waiting_state(job, time.time() if now is None else now)
        return JobView(job.id or job_id, state, job, path, owner=owner, changed_at=st.st_ctime)

    def read_job(self, path: str, *, now: float, expect_id: str | None = None,
                  trusted_only: bool = False) -> tuple[Job, os.stat_result]:
        """Read one job file. FileNotFoundError if it is gone; InvalidJob saying why for whatever
        makes it no job: not a regular singly linked file, unreadable, malformed, another id than
        its name says, or (`trusted_only`, for files about to run) an untrusted owner."""
        try:
            data, st = fsio.read_regular(path, job_mod.MAX_JOB_BYTES)
        except FileNotFoundError:
            raise
        except ValueError as e:
            raise InvalidJob(f"the file {e}") from None
        except OSError as e:
            raise InvalidJob(f"the file cannot be read: {e.strerror}") from None
        if trusted_only and not self.trusts_uid(st.st_uid):
            raise InvalidJob(f"the file is owned by untrusted uid {st.st_uid}")
        job = job_mod.from_json(data, now=now, default_max_retries=self.config.max_retries)
        if expect_id is not None and job.id != expect_id:
            raise InvalidJob(f"the file's id {job.id!r} does not match its name")
        return job, st

    def _reason(self, qid: str) -> str:
        try:
            with open(self.layout.reason_file(qid), "rb") as f:
                return str(json.loads(f.read()).get("reason", "quarantined"))
        except (OSError, ValueError):
            return "quarantined (reason record missing)"

    def list(self, state: str | None = None, limit: int | None = None,
             now: float | None = None) -> list[JobView]:
        now = time.time() if now is None else now
        out: list[JobView] = []
        if limit is not None and limit <= 0:
            return out
        for view in self._iter_views(state, now):
            out.append(view)
            if limit is not None and len(out) >= limit:
                break
        return out

    def _iter_views(self, state: str | None, now: float) -> Iterator[JobView]:
        now_ms = int(now * 1000)
        if state in (None, "pending", "scheduled"):
            ready, later = [], []
            for entry in sorted(fsio.listdir(self.layout.pending)):
                parsed = L.parse_pending(entry)
                if parsed is None:
                    if L.is_dropin(entry) and not _is_real_dir(os.path.join(self.layout.pending, entry)):
                        ready.append((entry, entry[:-5]))
                    continue
                (later if parsed.due_ms > now_ms else ready).append((entry, parsed.job_id))
            later.sort(key=lambda pair: pair[0][L.DUE_FIELD])  # scheduled: soonest first
            groups = []
            if state in (None, "pending"):
                groups.append(ready)
            if state in (None, "scheduled"):
                groups.append(later)
            for group in groups:
                for entry, job_id in group:
                    view = self._view(os.path.join(self.layout.pending, entry), "pending", job_id, now=now)
                    if view is not None and (state is None or view.state == state):
                        yield view
        if state in (None, "processing"):
            for owner in fsio.listdir(self.layout.processing):
                for entry in sorted(fsio.listdir(self.layout.owned(owner))):
                    if L.is_json_entry(entry):
                        job_id = entry[:-5].lstrip(L.ADOPT_PREFIX)
                        view = self._view(os.path.join(self.layout.owned(owner), entry), "processing",
                                          job_id, L.owner_of(owner))
                        if view is not None:
                            yield view
        for name in ("done", "dead"):
            if state in (None, name):
                yield from self._finished_views(name)

    def _finished_views(self, state: str) -> Iterator[JobView]:
        directory = self.layout.dir(state)
        entries = []
        for entry in fsio.listdir(directory):
            if L.is_json_entry(entry):
                try:
                    entries.append((os.lstat(os.path.join(directory, entry)).st_mtime_ns, entry))
                except FileNotFoundError:
                    continue
        for _, entry in sorted(entries):
            job_id = entry[:-5]
            path = os.path.join(directory, entry)
            if job_id.startswith(L.QUARANTINE_PREFIX):
                if os.path.lexists(path):
                    yield JobView(job_id, state, None, path, reason=self._reason(job_id))
                continue
            view = self._view(path, state, job_id)
            if view is not None:
                yield view

    def counts(self, now: float | None = None) -> Counts:
        now_ms = str(int((time.time() if now is None else now) * 1000)).zfill(13)
        c = Counts()
        for entry in fsio.listdir(self.layout.pending):
            if L.CANONICAL_RE.fullmatch(entry):
                # The due field sits at a fixed offset; comparing digit strings avoids int() per entry.
                if entry[L.DUE_FIELD] > now_ms:
                    c.scheduled += 1
                else:
                    c.pending += 1
            elif L.is_dropin(entry) and not _is_real_dir(os.path.join(self.layout.pending, entry)):
                c.pending += 1  # a dropped file not adopted yet (directories are left alone, not jobs)
        for owner in fsio.listdir(self.layout.processing):
            c.processing += _count_json(self.layout.owned(owner))
        c.done = _count_json(self.layout.done)
        c.dead = _count_json(self.layout.dead)
        c.workers = len(self.workers(role="worker"))
        return c

    def worker_log(self) -> str:
        """Where detached workers of this host write their log."""
        return os.path.join(self.layout.dir("log"), f"worker-{L.host_name()}.log")

    def output_path(self, job_id: str) -> str:
        return self.layout.output(job_id)

    def pending_entries(self) -> list[str]:
        """Every name in pending/: canonical and dropped alike (the worker's index filters)."""
        return fsio.listdir(self.layout.pending)

    # ---- workers -------------------------------------------------------------------------

    def register(self, role: str = "worker", **extra: Any) -> str:
        """Announce a live owner; returns its token. The registration file's mtime is its heartbeat."""
        host = L.host_name()
        owner = L.owner_token(host, os.getpid())
        record = {"owner": owner, "host": host, "pid": os.getpid(), "role": role,
                  "start": liveness.start_token(os.getpid()), "boot": liveness.boot_id(),
                  "started_at": job_mod.iso(time.time()),
                  **extra}
        path = self.layout.worker_file(owner)
        fsio.publish(os.path.join(self.layout.tmp, L.tmp_name()), json.dumps(record).encode(), path,
                     durable=False)
        # RACE: the registration exists before the owner's directory, and outlives it at
        # unregister, so a processing/<owner> without a registration always means a dead owner.
        fsio.make_dir(self.layout.owned(owner))  # its mode exactly, whatever the umask
        return owner

    def heartbeat(self, owner: str) -> bool:
        """Touch the registration; False if it is gone (this owner was declared dead elsewhere)."""
        try:
            os.utime(self.layout.worker_file(owner))
        except FileNotFoundError:
            return False
        return os.path.isdir(self.layout.owned(owner))

    def unregister(self, owner: str) -> None:
        owned = self.layout.owned(owner)
        for entry in fsio.listdir(owned):
            if entry.startswith("."):
                fsio.unlink_quietly(os.path.join(owned, entry))
        try:
            os.rmdir(owned)
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            return  # still holds a job: leave it for recovery rather than lose it
        fsio.unlink_quietly(self.layout.worker_file(owner))

    def workers(self, *, role: str | None = None, live: bool = True) -> list[WorkerInfo]:
        """Registered owners (of one role: "worker" or "supervisor"); by default only the live ones."""
        out = []
        why_gone = self._liveness()
        for owner in self._registered():
            info = self._registration(owner)
            if not info or not info[0]:
                continue  # gone while we looked, or unreadable
            record, heartbeat = info
            if role is not None and record.get("role", "worker") != role:
                continue
            if live and why_gone(record, heartbeat):
                continue
            out.append(self._worker_info(owner, record, heartbeat))
        return sorted(out, key=lambda w: (w.host, w.pid, w.owner))

    def _registered(self) -> list[str]:
        return [e[:-5] for e in fsio.listdir(self.layout.dir("workers")) if L.is_json_entry(e)]

    def _liveness(self, lease: float | None = None) -> Callable[[dict[str, Any], float], str | None]:
        """A judge of registered owners: why one is gone, None while it lives. On this machine a
        dead pid means gone at once; on any host, so does no heartbeat within the lease, measured
        on the file system's clock (read once, when first needed)."""
        here = L.host_name()
        lease = self.config.lease_timeout if lease is None else lease
        fs_now: float | None = None

        def why_gone(record: dict[str, Any], heartbeat: float) -> str | None:
            nonlocal fs_now
            if _local(record, here) and not liveness.alive(record.get("pid"), record.get("start")):
                return f"pid {record.get('pid')} is gone"
            fs_now = self.fs_clock() if fs_now is None else fs_now
            if fs_now - heartbeat > lease:
                return f"no heartbeat from {record.get('host', '?')} for {fs_now - heartbeat:.0f}s"
            return None

        return why_gone

    def _worker_info(self, owner: str, record: dict[str, Any], heartbeat: float) -> WorkerInfo:
        jobs = [e[:-5] for e in fsio.listdir(self.layout.owned(owner))
                if L.is_json_entry(e) and not e.startswith(L.ADOPT_PREFIX)]
        known = ("owner", "host", "pid", "role", "started_at")
        return WorkerInfo(owner=owner, host=str(record.get("host", "?")), pid=int(record.get("pid", 0)),
                          role=str(record.get("role", "worker")), started_at=record.get("started_at"),
                          heartbeat=heartbeat, job=jobs[0] if jobs else None,
                          extra={k: v for k, v in record.items() if k not in known})

    def heartbeat_interval(self) -> float:
        """How often a live owner touches its registration: well inside the lease, at most 5 s."""
        return max(0.2, min(self.config.lease_timeout / 4, 5.0))

    def registered_at(self, owner: str) -> float:
        """When `owner` registered, on the file system's clock (ask before its first heartbeat)."""
        return os.stat(self.layout.worker_file(owner)).st_mtime

    def fs_clock(self) -> float:
        """Now, on the spool file system's own clock: the mtime of a file just written there. Where
        nothing can be written (a full disk, a read-only mount) the local clock stands in."""
        path = os.path.join(self.layout.tmp, L.tmp_name())
        try:
            fsio.write_file(path, b"", durable=False)
        except OSError:
            return time.time()
        try:
            return os.stat(path).st_mtime
        finally:
            fsio.unlink_quietly(path)

    def request_stop(self) -> float:
        """Ask every worker of this spool, on every host, to stop after its current job."""
        path = self.layout.stop_file
        fsio.publish(os.path.join(self.layout.tmp, L.tmp_name()), b"stop\n", path)
        return os.stat(path).st_mtime

    def stop_requested_after(self, since: float) -> bool:
        try:
            return os.stat(self.layout.stop_file).st_mtime >= since
        except FileNotFoundError:
            return False

    # ---- the worker's transitions --------------------------------------------------------

    def claim(self, entry: str, owner: str, *, now: float | None = None) -> Claimed | None:
        """Take a canonical pending job for `owner`. None if another worker took it first or the
        file was quarantined. Raises LostOwnership if this owner was recovered elsewhere."""
        parsed = L.parse_pending(entry)
        if parsed is None:
            return None
        owned = self.layout.owned(owner)
        path = os.path.join(owned, L.job_file(parsed.job_id))
        try:
            if not fsio.move(os.path.join(self.layout.pending, entry), path):
                return None  # RACE: another worker renamed it first; losing is an answer, not an error
        except FileNotFoundError:
            raise LostOwnership(f"{owned} is gone") from None
        now = time.time() if now is None else now
        try:
            job, _ = self.read_job(path, now=now, expect_id=parsed.job_id, trusted_only=True)
        except InvalidJob as e:
            self.quarantine(path, entry, f"malformed job file: {e}", now)
            return None
        return Claimed(job, owner, path, job.attempts + 1)

    def finish(self, claimed: Claimed, *, ok: bool, exit_code: int | None, error: str | None,
               now: float | None = None) -> retry.Decision:
        """Record an attempt's outcome and move the job on: done, pending again (backoff) or dead."""
        now = time.time() if now is None else now
        if ok:
            # The success is the move itself: the file keeps the attempts before this one, which
            # readers add back (JobView). No rewrite means no temp file, no fsync, no freed inode.
            self._move_away(claimed.path, os.path.join(self.layout.done, L.job_file(claimed.job.id)))
            return retry.Decision("done")
        cfg = self.config
        job = claimed.job
        job.attempts, job.exit_code, job.last_error, job.updated_at = claimed.attempt, exit_code, error, now
        decision = retry.decide(ok=False, attempts=job.attempts, max_retries=job.max_retries, now=now,
                                base=cfg.backoff_base, cap=cfg.backoff_max)
        self._move_owned(claimed.path, job, decision)
        return decision

    def _move_owned(self, path: str, job: Job, decision: retry.Decision) -> None:
        """Rewrite an owned job file in place, then rename it to its next state.

        Both steps need `path`'s directory to still be ours: a rescuer's rename of it is the fence."""
        directory = os.path.dirname(path)
        job.run_at = decision.run_at if decision.state == "pending" else job.run_at
        tmp = os.path.join(directory, L.tmp_name())
        try:
            fsio.write_file(tmp, job.to_json(), durable=True)
        except FileNotFoundError:
            raise LostOwnership(f"{directory} is gone") from None
        try:
            os.rename(tmp, path)
        except FileNotFoundError:
            raise LostOwnership(f"{directory} is gone") from None
        except OSError:
            fsio.unlink_quietly(tmp)
            raise
        if decision.state == "pending":
            dest = os.path.join(self.layout.pending, L.pending_name_of(job))
        else:
            dest = os.path.join(self.layout.dir(decision.state), L.job_file(job.id))
        self._move_away(path, dest)

    def _move_away(self, path: str, dest: str) -> None:
        """The last step of every transition out of an owned directory; the source's existence
        is the proof of ownership."""
        try:
            moved = fsio.move(path, dest)
        except FileNotFoundError:
            moved = False
        if not moved:
            raise LostOwnership(f"{path} was taken from us")

    def adopt(self, entry: str, owner: str, *, now: float | None = None) -> Adoption:
        """Turn a dropped file in pending/ into a canonical job, or quarantine it, or wait for its writer."""
        found = self.inspect_dropin(entry, now=now)
        now = time.time() if now is None else now
        src = os.path.join(self.layout.pending, entry)
        if found.outcome in ("gone", "ignored", "wait"):
            return found
        if found.outcome == "refuse":
            return self._adopt_refused(src, entry, owner, str(found.reason), now)
        assert found.stat is not None
        arrived_ns = found.stat.st_ctime_ns  # its arrival (rename into pending/ or last write); our move resets ctime
        adopt_path = os.path.join(self.layout.owned(owner), L.ADOPT_PREFIX + entry)
        try:
            if not fsio.move(src, adopt_path):
                return Adoption("gone")
        except FileNotFoundError:
            raise LostOwnership(f"{self.layout.owned(owner)} is gone") from None
        try:
            data, _ = fsio.read_regular(adopt_path, job_mod.MAX_JOB_BYTES)
            job = self.job_from_dropin(data, entry, now=now, seq=arrived_ns)
        except (InvalidJob, ValueError, OSError) as e:
            self.quarantine(adopt_path, entry, f"malformed: {e}", now)
            return Adoption("quarantined", reason=str(e))
        job.attempts, job.updated_at = 0, now
        if not fsio.create_exclusive(self.layout.id_marker(job.id)):
            reason = f"duplicate: a job with id {job.id!r} already exists"
            self.quarantine(adopt_path, entry, reason, now)
            return Adoption("quarantined", job_id=job.id, reason=reason)
        try:
            self._move_owned(adopt_path, job, retry.Decision("pending", job.run_at))
        except BaseException:
            fsio.unlink_quietly(self.layout.id_marker(job.id))
            raise
        fsio.fsync_dir(self.layout.pending)
        return Adoption("published", job_id=job.id,
                        pending_name=L.pending_name_of(job))

    def inspect_dropin(self, entry: str, *, now: float | None = None, fs_now: float | None = None) -> Adoption:
        """What a dropped file in pending/ is, before anyone takes it: "gone", "ignored" (a
        directory: left alone), "refuse" (never a job: reason says why), "wait" (unparseable,
        but its writer has drop_grace to finish it) or "ok" (parses: worth taking).

        The writer may be another host, so a file's age is judged on the file system's clock
        (`fs_now`, else `now` when the caller fixes time, else read when first needed)."""
        path = os.path.join(self.layout.pending, entry)
        try:
            data, st = fsio.read_regular(path, job_mod.MAX_JOB_BYTES)
        except FileNotFoundError:
            return Adoption("gone")
        except ValueError as e:
            if os.path.isdir(path) and not os.path.islink(path):
                return Adoption("ignored")
            return Adoption("refuse", reason=f"dropped file {e}")
        except OSError as e:
            return Adoption("refuse", reason=f"dropped file cannot be read: {e.strerror}")
        if not self.trusts_uid(st.st_uid):
            return Adoption("refuse", reason=f"dropped file is owned by untrusted uid {st.st_uid}")
        try:
            job_mod.parse_json_object(data, "dropped file")
        except InvalidJob as e:
            if fs_now is None:
                fs_now = self.fs_clock() if now is None else now
            age = fs_now - st.st_mtime
            if age < self.config.drop_grace:
                local_now = time.time() if now is None else now
                return Adoption("wait", retry_at=local_now + self.config.drop_grace - age, reason=str(e))
            return Adoption("refuse", reason=f"malformed: {e}")
        return Adoption("ok", stat=st)

    def job_from_dropin(self, data: bytes, entry: str, *, now: float, seq: int | None = None) -> Job:
        """The job a dropped file describes: the `id` inside wins, else the file name if it is a
        valid id, else a fresh one. InvalidJob if its fields are not a job's."""
        spec = job_mod.parse_json_object(data, "dropped file")
        if spec.get("id") is None:
            stem = entry[:-5]
            spec["id"] = stem if job_mod.valid_id(stem) else self._fresh_id()
        return job_mod.from_dict(spec, now=now, default_max_retries=self.config.max_retries, seq=seq)

    def _adopt_refused(self, src: str, entry: str, owner: str, reason: str, now: float) -> Adoption:
        adopt_path = os.path.join(self.layout.owned(owner), L.ADOPT_PREFIX + entry)
        if not fsio.move(src, adopt_path):
            return Adoption("gone")
        self.quarantine(adopt_path, entry, reason, now)
        return Adoption("quarantined", reason=reason)

    def trusts_uid(self, uid: int) -> bool:
        # Our own uid too: a file only we (or root) could have made is as trusted as we are.
        return uid in (_spool_owner_uid(self.layout.root), os.geteuid()) or uid in self.config.trusted_uids

    def quarantine(self, path: str, source_name: str, reason: str, now: float) -> str:
        """Move a file that must never run to dead/ with its bytes unchanged; record why."""
        qid = L.quarantine_id(source_name)
        record = {"id": qid, "reason": reason, "source": source_name, "quarantined_at": job_mod.iso(now)}
        fsio.publish(os.path.join(self.layout.tmp, L.tmp_name()),
                     json.dumps(record, ensure_ascii=True).encode(), self.layout.reason_file(qid))
        if not fsio.move(path, os.path.join(self.layout.dead, L.job_file(qid))):
            fsio.unlink_quietly(self.layout.reason_file(qid))
            return qid
        fsio.fsync_dir(self.layout.dead)
        return qid

    # ---- recovery ------------------------------------------------------------------------

    def dead_owners(self, *, now: float | None = None, lease: float | None = None) -> list[str]:
        """processing/ sub-directories whose owner is gone: a dead pid on this host, an expired
        lease (judged on the file system's clock) on any host, or no registration at all."""
        why_gone = self._liveness(lease)
        dead = []
        for entry in fsio.listdir(self.layout.processing):
            if entry.startswith("."):
                continue
            info = self._registration(L.owner_of(entry))
            if info is None or why_gone(*info):
                dead.append(entry)
        return dead

    def _registration(self, owner: str) -> tuple[dict[str, Any], float] | None:
        path = self.layout.worker_file(owner)
        try:
            with open(path, "rb") as f:
                record = json.loads(f.read())
            return (record if isinstance(record, dict) else {}), os.stat(path).st_mtime
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}, 0.0

    def recover(self, rescuer: str, *, now: float | None = None, lease: float | None = None) -> list[Recovered]:
        """Take back every job held by a dead owner: kill what is left of its process groups on
        this host, then count the attempt as failed and move the job on like any failure."""
        out: list[Recovered] = []
        for entry in self.dead_owners(now=now, lease=lease):
            out.extend(self._rescue(entry, rescuer, now))
        self._drop_stale_registrations()
        return out

    def _rescue(self, entry: str, rescuer: str, now: float | None) -> list[Recovered]:
        chain = entry.split(L.RESCUE_SEP)
        for owner in chain:
            liveness.kill_leftovers(owner)  # tokens are unique: only that owner's jobs carry it
        fenced = f"{rescuer}{L.RESCUE_SEP}{entry}"
        if len(fenced) > 200:
            fenced = f"{rescuer}{L.RESCUE_SEP}{L.random_hex(4)}"
        src_dir = self.layout.owned(entry)
        dst_dir = self.layout.owned(fenced)
        # RACE: two rescuers may both find the owner dead; the directory rename admits one.
        if not fsio.move(src_dir, dst_dir):
            return []
        info = self._registration(chain[0])
        host = (info[0].get("host") if info else None) or "?"
        out = []
        for name in sorted(fsio.listdir(dst_dir)):
            out.extend(self._rescue_file(dst_dir, name, chain[0], host, now))
        try:
            os.rmdir(dst_dir)
        except OSError:
            pass
        for owner in chain:
            fsio.unlink_quietly(self.layout.worker_file(owner))
        return out

    def _rescue_file(self, directory: str, name: str, owner: str, host: str,
                     now: float | None) -> list[Recovered]:
        path = os.path.join(directory, name)
        now = time.time() if now is None else now
        if name.startswith("."):
            fsio.unlink_quietly(path)
            return []
        if name.startswith(L.ADOPT_PREFIX):
            original = name[len(L.ADOPT_PREFIX):]
            dest = os.path.join(self.layout.pending, original)
            if os.path.lexists(dest):
                dest = os.path.join(self.layout.pending, f"{original[:-5]}.{L.random_hex(3)}.json")
            fsio.move(path, dest)
            return []
        if not name.endswith(".json"):
            return []
        try:
            job, _ = self.read_job(path, now=now)
        except (InvalidJob, FileNotFoundError) as e:
            qid = self.quarantine(path, name, f"malformed job file found in processing/: {e}", now)
            return [Recovered(owner, qid, "dead", str(e))]
        attempt = job.attempts + 1
        reason = f"worker {owner} on {host} stopped during attempt {attempt} (killed, crashed or lost its lease)"
        if attempt > job.max_retries:
            reason += "; the job ran out of attempts this way: it may be what kills its worker"
        claimed = Claimed(job, owner, path, attempt)
        decision = self.finish(claimed, ok=False, exit_code=None, error=reason, now=now)
        return [Recovered(owner, job.id, decision.state, reason)]

    def stale_registrations(self) -> list[tuple[str, str]]:
        """(owner, why) for registrations of owners that are gone and hold no directory (an owner
        with one is recover()'s: its jobs go first)."""
        why_gone = self._liveness()
        stale = []
        for owner in sorted(self._registered()):
            info = self._registration(owner)
            if info is None or os.path.isdir(self.layout.owned(owner)):
                continue
            why = why_gone(*info)
            if why:
                stale.append((owner, why))
        return stale

    def _drop_stale_registrations(self) -> None:
        for owner, _ in self.stale_registrations():
            fsio.unlink_quietly(self.layout.worker_file(owner))

    # ---- dead-letter queue ---------------------------------------------------------------

    def retry_dead(self, job_ids: list[str] | None = None, *, now: float | None = None) -> list[str]:
        """Make dead jobs pending again with their attempts reset. None means every dead job."""
        now = time.time() if now is None else now
        with config_mod.locked(self.layout, "dlq"):
            if job_ids is None:
                job_ids = [e[:-5] for e in sorted(fsio.listdir(self.layout.dead))
                           if L.is_json_entry(e) and not e.startswith(L.QUARANTINE_PREFIX)]
            else:
                for job_id in job_ids:
                    self._check_retryable(job_id)
            done = []
            for job_id in job_ids:
                path = os.path.join(self.layout.dead, L.job_file(job_id))
                try:
                    job, _ = self.read_job(path, now=now)
                except FileNotFoundError:
                    continue
                except InvalidJob as e:
                    raise NotRetryable(f"{job_id}: the dead file is unreadable ({e}); fix it and drop it "
                                       "into pending/ again") from None
                job.attempts, job.exit_code, job.run_at, job.updated_at = 0, None, None, now
                job.seq = next_seq()
                tmp = os.path.join(self.layout.dead, L.tmp_name())
                fsio.write_file(tmp, job.to_json(), durable=True)
                os.rename(tmp, path)  # safe: dead/ files change only under this lock
                dest = os.path.join(self.layout.pending, L.pending_name_of(job))
                if fsio.move(path, dest):
                    done.append(job_id)
            fsio.fsync_dir(self.layout.pending)
            return done

    def _check_retryable(self, job_id: str) -> None:
        if job_id.startswith(L.QUARANTINE_PREFIX):
            path = os.path.join(self.layout.dead, L.job_file(job_id))
            if os.path.lexists(path):
                raise NotRetryable(f"{job_id} is a quarantined file ({self._reason(job_id)}); "
                                   f"fix it and drop it into pending/ again: {path}")
            raise JobNotFound(f"no job {job_id!r}")
        view = self.find(job_id)
        if view.state != "dead":
            raise NotRetryable(f"job {job_id} is {view.state}, not dead")

    # ---- maintenance ---------------------------------------------------------------------

    def purge(self, state: str, *, older_than: float = 0.0, now: float | None = None) -> int:
        """Delete finished jobs (done or dead) and their output; frees their ids."""
        if state not in ("done", "dead"):
            raise InvalidJob("only done or dead jobs can be purged")
        now = time.time() if now is None else now
        directory = self.layout.dir(state)
        count = 0
        with config_mod.locked(self.layout, "dlq"):
            for entry in fsio.listdir(directory):
                if not L.is_json_entry(entry):
                    continue
                path = os.path.join(directory, entry)
                try:
                    if now - os.lstat(path).st_mtime < older_than:
                        continue
                except FileNotFoundError:
                    continue
                job_id = entry[:-5]
                fsio.unlink_quietly(path)
                fsio.unlink_quietly(self.layout.output(job_id))
                if job_id.startswith(L.QUARANTINE_PREFIX):
                    fsio.unlink_quietly(self.layout.reason_file(job_id))
                else:
                    fsio.unlink_quietly(self.layout.id_marker(job_id))
                count += 1
        return count


def _local(record: dict[str, Any], here: str) -> bool:
    """Was this owner on this machine, in this boot? Only then does its pid mean anything here;
    elsewhere (a host with the same name, or before a reboot) only its lease counts."""
    if record.get("host") != here:
        return False
    boot = record.get("boot")
    return boot is None or boot == liveness.boot_id()


def _is_real_dir(path: str) -> bool:
    return os.path.isdir(path) and not os.path.islink(path)


def _count_json(path: str) -> int:
    return sum(1 for e in fsio.listdir(path) if L.is_json_entry(e))


_owner_uid_cache: dict[str, int] = {}


def _spool_owner_uid(root: str) -> int:
    uid = _owner_uid_cache.get(root)
    if uid is None:
        uid = _owner_uid_cache[root] = os.stat(root).st_uid
    return uid


def _io_message(what: str, e: OSError) -> str:
    if fsio.is_disk_full(e):
        return f"{what}: the file system is full ({e.strerror}); nothing was written"
    return f"{what}: {e.strerror or e}" + (f" ({e.filename})" if e.filename else "")
