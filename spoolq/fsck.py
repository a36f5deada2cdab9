"""fsck: check a spool against its on-disk format (layout.py) and repair what is safe to repair.

Core only: no click, no printing. ``check()`` returns the problems it found, each saying what
(if anything) was done about it; the CLI prints them.

Invariants checked:

* the layout's directories exist (and are directories);
* every job file parses, names the id its file name says, is a regular singly linked file
  owned by a trusted uid;
* every ``processing/<owner>`` directory has a live owner;
* no job id is in more than one place (state);
* every job has its ``ids/<id>`` marker and every marker has a job (or a quarantine record);
* every quarantined ``dead/+<qid>.json`` has its reason in ``quarantine/``, and every reason
  record has its file;
* no stale temp files (``tmp/``, and the dot-temp files spoolq writes in ``processing/<owner>/``
  and ``dead/``), stale lock markers (``locks/``) or stale worker registrations;
* nothing spoolq owns is more open than the configured modes (private unless group_access).

Repairs are only the safe ones: recover dead owners (``Spool.recover``, exactly what a worker
would do), quarantine files that can never run (bytes kept, reason recorded), remove stale temp
files, stale locks, stale registrations, orphan markers and orphan reason records, recreate
missing markers and reason records, create missing directories, narrow modes. Nothing a live
worker holds is touched, and no job file is ever deleted.

Anything that may belong to an operation still in flight (temp files, markers, reason records,
lock markers without a holder record) counts as stale only once older than ``stale_after``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

from . import fsio, job as job_mod, layout as L, liveness
from .errors import InvalidJob, JobNotFound, SpoolError
from .spool import Spool

STALE_AFTER = 3600.0
TMP_RE = re.compile(r"\.\d+\.[0-9a-f]{12}\.tmp")


@dataclass
class Problem:
    kind: str  # see KINDS
    path: str
    detail: str
    repaired: bool = False
    repair: str | None = None  # what --repair did, or why it left the problem alone

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


KINDS = {
    "missing-dir": "a directory of the layout is missing",
    "not-a-directory": "a layout path is not a directory",
    "config": "config.json cannot be read",
    "dead-owner": "a processing/ directory whose owner is gone",
    "bad-job-file": "a job file that does not parse or is not a trusted regular file",
    "bad-dropin": "a dropped file a worker would quarantine",
    "stray-entry": "a file where the format has no place for it",
    "duplicate": "a job id in more than one place",
    "missing-marker": "a job without its ids/ marker",
    "orphan-marker": "an ids/ marker without a job",
    "unrecorded-quarantine": "a quarantined file without its reason record",
    "orphan-reason": "a reason record without its quarantined file",
    "stale-temp": "a temp file left by a crash",
    "stale-lock": "a lock marker whose holder is gone",
    "stuck-adoption": "a dropped file half-adopted by a live worker long ago",
    "stale-registration": "a worker registration whose process is gone",
    "permissions": "a path more open than the spool's settings allow",
}


def check(spool: Spool, *, repair: bool = False, stale_after: float = STALE_AFTER,
          now: float | None = None) -> list[Problem]:
    """Check every invariant of the spool's format; with `repair`, fix what is safe to fix."""
    return _Fsck(spool, repair, stale_after, now).run()


class _Fsck:
    def __init__(self, spool: Spool, repair: bool, stale_after: float, now: float | None):
        self.spool = spool
        self.layout = spool.layout
        self.repair = repair
        self.stale_after = stale_after
        self.given_now = now is not None
        self.now = time.time() if now is None else now
        self.fs_now = self.now
        self.problems: list[Problem] = []
        self.census: dict[str, list[tuple[str, str]]] = {}  # id -> [(state, path)]
        self.accounted: set[str] = set()  # ids kept reserved by a quarantined file
        self.live_dirs: list[str] = []
        self.rescuer = L.owner_token(L.host_name(), os.getpid())

    # ---- helpers -------------------------------------------------------------------------

    def add(self, kind: str, path: str, detail: str) -> Problem:
        p = Problem(kind, path, detail)
        self.problems.append(p)
        return p

    def fix(self, problem: Problem, action: Callable[[], str | None], done: str = "") -> None:
        """Run a repair when repairing; record what it did (its return value, else `done`)."""
        if not self.repair:
            return
        try:
            said = action()
        except (OSError, SpoolError) as e:
            problem.repair = f"repair failed: {getattr(e, 'strerror', None) or e}"
            return
        problem.repair = said or done
        problem.repaired = not problem.repair.startswith("left alone")

    def leave(self, problem: Problem, why: str) -> None:
        if self.repair:
            problem.repair = f"left alone: {why}"

    def entries(self, directory: str) -> Iterator[tuple[str, str, os.stat_result]]:
        """(name, path, lstat) of each entry of `directory` still there, in name order."""
        for name in sorted(fsio.listdir(directory)):
            path = os.path.join(directory, name)
            try:
                yield name, path, os.lstat(path)
            except FileNotFoundError:
                continue  # moved on while we looked

    def old(self, st: os.stat_result) -> bool:
        return self.fs_now - st.st_mtime >= self.stale_after

    def note(self, job_id: str, state: str, path: str) -> None:
        self.census.setdefault(job_id, []).append((state, path))

    def quarantine(self, path: str, source: str, reason: str) -> str:
        qid = self.spool.quarantine(path, source, f"{reason} (found by fsck)", self.now)
        if not os.path.lexists(os.path.join(self.layout.dead, L.job_file(qid))):
            return "left alone: it moved on while fsck looked"
        self.accounted_source(source)
        return f"quarantined as dead/{qid}.json (bytes kept, reason recorded)"

    def accounted_source(self, source: object) -> None:
        """A quarantined file's source name keeps its id reserved: the marker is not an orphan."""
        if not isinstance(source, str) or not source.endswith(".json"):
            return
        parsed = L.parse_pending(source)
        if parsed is not None:
            self.accounted.add(parsed.job_id)
        elif job_mod.valid_id(source[:-5]):
            self.accounted.add(source[:-5])

    # ---- the passes ----------------------------------------------------------------------

    def run(self) -> list[Problem]:
        if not self.check_layout():
            return self.problems
        self.check_config()
        if not self.given_now:
            self.fs_now = self.spool.fs_clock()  # ages are judged on the file system's clock
        self.check_registrations()  # before check_owners: recover() would drop stale ones unreported
        self.check_owners()
        self.check_pending()
        self.check_live_processing()
        self.check_finished("done")
        self.check_finished("dead")
        self.check_reasons()
        self.check_duplicates()
        self.check_markers()
        self.check_tmp()
        self.check_locks()
        self.check_modes()
        return self.problems

    def check_layout(self) -> bool:
        root = self.layout.root
        if not os.path.isdir(root):
            self.add("missing-dir", root, "the spool directory does not exist")
            return False
        ok = True
        for name in L.STATE_DIRS + L.OTHER_DIRS:
            path = self.layout.dir(name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                p = self.add("missing-dir", path, f"{name}/ is missing")
                self.fix(p, lambda path=path: fsio.make_dir(path), "created it")
                ok = ok and p.repaired
                continue
            if not stat.S_ISDIR(st.st_mode):
                p = self.add("not-a-directory", path, f"{name} is not a directory")
                self.leave(p, "move it away by hand")
                ok = False
        return ok

    def check_config(self) -> None:
        try:
            self.spool.config
        except SpoolError as e:
            p = self.add("config", self.layout.config, str(e))
            self.leave(p, "settings are the operator's: fix or remove config.json")
            self.spool.use_default_config()  # so the rest of the spool is still checked

    def check_owners(self) -> None:
        dead = set(self.spool.dead_owners())
        found: list[tuple[Problem, str]] = []
        for entry, path, st in self.entries(self.layout.processing):
            if entry.startswith("."):
                continue
            if not stat.S_ISDIR(st.st_mode):
                p = self.add("stray-entry", path, "processing/ should hold only owner directories")
                self.leave(p, "not spoolq's; remove it by hand")
                continue
            if entry not in dead:
                self.live_dirs.append(entry)
                continue
            jobs = sorted(n for n in fsio.listdir(path) if L.is_json_entry(n))
            held = ", ".join(n[:-5] for n in jobs[:5]) + (" …" if len(jobs) > 5 else "")
            p = self.add("dead-owner", path, f"owner {L.owner_of(entry)} is gone; it holds "
                         f"{len(jobs)} file(s){': ' + held if jobs else ''}")
            found.append((p, entry))
            if not self.repair:
                for name in jobs:
                    if not name.startswith(L.ADOPT_PREFIX):
                        self.note(name[:-5], "processing", os.path.join(path, name))
        if not (found and self.repair):
            return
        try:
            recovered = self.spool.recover(self.rescuer)
        except (OSError, SpoolError) as e:
            for p, _ in found:
                p.repair = f"repair failed: {getattr(e, 'strerror', None) or e}"
            return
        for p, entry in found:
            owner = L.owner_of(entry)
            mine = [f"job {r.job_id} is now {r.state}" for r in recovered if r.owner == owner]
            if os.path.lexists(self.layout.owned(entry)):
                p.repair = "repair failed: the directory is still there (a live worker took it over?)"
                continue
            p.repaired = True
            p.repair = "recovered: " + ("; ".join(mine) if mine else "it held no job")

    def check_job_file(self, path: str, state: str, expected: str, source: str,
                       may_fix: bool = True) -> None:
        """One file that claims to be job `expected`: it must be a trusted regular file that parses."""
        reason = None
        try:
            self.spool.read_job(path, now=self.now, expect_id=expected,
                                 trusted_only=state in ("pending", "processing"))
        except FileNotFoundError:
            return  # moved on while we looked
        except InvalidJob as e:
            reason = str(e)
        self.note(expected, state, path)
        if reason is None:
            return
        p = self.add("bad-job-file", path, f"{state} job {expected}: {reason}")
        if may_fix:
            self.fix(p, lambda: self.quarantine(path, source, f"malformed job file: {reason}"))
        else:
            self.leave(p, "a live worker holds it")

    def check_pending(self) -> None:
        for entry in sorted(fsio.listdir(self.layout.pending)):
            if entry.startswith("."):
                continue  # staging names belong to whoever is writing them
            path = os.path.join(self.layout.pending, entry)
            parsed = L.parse_pending(entry)
            if parsed is not None:
                self.check_job_file(path, "pending", parsed.job_id, entry)
            elif L.is_dropin(entry):
                self.check_dropin(path, entry)

    def check_dropin(self, path: str, entry: str) -> None:
        """Report what a worker would quarantine (and do the same when repairing)."""
        found = self.spool.inspect_dropin(entry, now=self.now, fs_now=self.fs_now)
        if found.outcome in ("gone", "ignored", "wait"):
            return  # a directory is left alone; an unparseable file's writer may still be at it
        reason = found.reason
        if found.outcome == "ok":
            reason = self.dropin_rejection(path, entry)
            if reason is None:
                return  # a good drop-in, waiting for a worker
        p = self.add("bad-dropin", path, reason)
        self.fix(p, lambda: self.quarantine(path, entry, str(reason)))

    def dropin_rejection(self, path: str, entry: str) -> str | None:
        """What adopt() would still refuse in a file that parses: ill-typed fields, a duplicate id."""
        try:
            data, _ = fsio.read_regular(path, job_mod.MAX_JOB_BYTES)
            job = self.spool.job_from_dropin(data, entry, now=self.now)
        except FileNotFoundError:
            return None
        except (InvalidJob, ValueError, OSError) as e:
            return f"malformed: {e}"
        if not os.path.lexists(self.layout.id_marker(job.id)):
            return None
        if not os.path.lexists(path):
            return None  # RACE: a worker adopted it (and made the marker) while we looked
        return f"duplicate: a job with id {job.id!r} already exists"

    def check_live_processing(self) -> None:
        for entry in self.live_dirs:
            for name, path, st in self.entries(self.layout.owned(entry)):
                if name.startswith("."):
                    if self.old(st):
                        self.stale_temp(path, st)
                elif name.startswith(L.ADOPT_PREFIX):
                    if self.old(st):
                        p = self.add("stuck-adoption", path, f"dropped file half-adopted "
                                     f"{_age(self.fs_now, st)} ago by live owner {L.owner_of(entry)}")
                        self.leave(p, "its owner is alive; stop it and fsck again")
                elif name.endswith(".json"):
                    self.check_job_file(path, "processing", name[:-5], name, may_fix=False)
                else:
                    p = self.add("stray-entry", path, "not a job file")
                    self.leave(p, "not spoolq's; remove it by hand")

    def check_finished(self, state: str) -> None:
        for entry, path, st in self.entries(self.layout.dir(state)):
            if entry.startswith("."):
                if TMP_RE.fullmatch(entry) and self.old(st):
                    self.stale_temp(path, st)
                continue
            stem = entry[:-5] if entry.endswith(".json") else None
            if stem is not None and stem.startswith(L.QUARANTINE_PREFIX) and state == "dead":
                self.check_quarantined(stem, path)
            elif stem is not None and job_mod.valid_id(stem):
                self.check_job_file(path, state, stem, entry)
            else:
                p = self.add("stray-entry", path, f"not a job file name in {state}/")
                if stat.S_ISDIR(st.st_mode):
                    self.leave(p, "a directory; remove it by hand")
                else:
                    self.fix(p, lambda path=path, entry=entry: self.quarantine(
                        path, entry, f"not a job file name in {state}/"))

    def check_quarantined(self, qid: str, path: str) -> None:
        record = self.read_reason(qid)
        if isinstance(record, dict) and isinstance(record.get("reason"), str):
            self.accounted_source(record.get("source"))
            return
        p = self.add("unrecorded-quarantine", path,
                     "quarantined file without a readable reason record in quarantine/")

        def write() -> str:
            fsio.unlink_quietly(self.layout.reason_file(qid))
            rec = {"id": qid, "reason": "quarantined; its reason record was lost (recreated by fsck)",
                   "source": None, "quarantined_at": job_mod.iso(self.now)}
            fsio.publish(os.path.join(self.layout.tmp, L.tmp_name()), json.dumps(rec).encode(),
                         self.layout.reason_file(qid))
            return "wrote a reason record saying the original reason was lost"

        self.fix(p, write)

    def read_reason(self, qid: str) -> object:
        try:
            data, _ = fsio.read_regular(self.layout.reason_file(qid), 1 << 20)
            return json.loads(data)
        except (OSError, ValueError):
            return None

    def check_reasons(self) -> None:
        for entry, path, st in self.entries(self.layout.dir("quarantine")):
            if entry.startswith("."):
                continue
            qid = entry[:-5] if entry.endswith(".json") else None
            if qid is None or not qid.startswith(L.QUARANTINE_PREFIX):
                p = self.add("stray-entry", path, "not a reason record name")
                self.leave(p, "not spoolq's; remove it by hand")
                continue
            if os.path.lexists(os.path.join(self.layout.dead, L.job_file(qid))) or not self.old(st):
                continue
            p = self.add("orphan-reason", path, f"reason record for {qid}, which is not in dead/")
            self.fix(p, lambda path=path: fsio.unlink_quietly(path), "removed it")

    def check_duplicates(self) -> None:
        rank = {"processing": 0, "done": 1, "dead": 2, "pending": 3}
        for job_id, places in sorted(self.census.items()):
            places = [(s, p) for s, p in places if os.path.lexists(p)]  # RACE: moved while we looked
            if len(places) < 2:
                continue
            places.sort(key=lambda sp: (rank[sp[0]], sp[1]))
            keep_state, keep_path = places[0]
            for state, path in places[1:]:
                p = self.add("duplicate", path, f"job {job_id} is also {keep_state}: "
                             f"{os.path.relpath(keep_path, self.layout.root)}")
                if state in ("pending", "dead"):
                    self.fix(p, lambda path=path: self.quarantine(
                        path, os.path.basename(path), f"duplicate: job {job_id} is also {keep_state}"))
                else:
                    self.leave(p, f"a {state} job is never moved by fsck; decide by hand")

    def check_markers(self) -> None:
        ids_dir = self.layout.dir("ids")
        markers = set(fsio.listdir(ids_dir))
        for job_id in sorted(set(self.census) - markers):
            marker = self.layout.id_marker(job_id)
            if os.path.lexists(marker) or not any(os.path.lexists(p) for _, p in self.census[job_id]):
                continue
            p = self.add("missing-marker", marker, f"job {job_id} has no id marker (its id could be reused)")
            self.fix(p, lambda marker=marker: fsio.create_exclusive(marker) and None, "created it")
        for name in sorted(markers - set(self.census) - self.accounted):
            path = os.path.join(ids_dir, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if not job_mod.valid_id(name):
                p = self.add("stray-entry", path, "not a valid job id")
                self.leave(p, "not spoolq's; remove it by hand")
                continue
            if not self.old(st) or self.still_exists(name):
                continue  # an enqueue or adoption may be under way, or the job moved while we looked
            p = self.add("orphan-marker", path, f"id {name} is reserved but no job has it")
            self.fix(p, lambda path=path: fsio.unlink_quietly(path), "removed it (the id is free again)")

    def still_exists(self, job_id: str) -> bool:
        try:
            self.spool.find(job_id)
            return True
        except (JobNotFound, InvalidJob):
            return False

    def check_tmp(self) -> None:
        for _, path, st in self.entries(self.layout.tmp):
            if self.old(st):
                self.stale_temp(path, st)

    def stale_temp(self, path: str, st: os.stat_result) -> None:
        """A temp file older than stale_after: its writer crashed (a live one renames it at once)."""
        p = self.add("stale-temp", path, f"temp file {_age(self.fs_now, st)} old")
        if stat.S_ISDIR(st.st_mode):
            self.leave(p, "a directory; remove it by hand")
        else:
            self.fix(p, lambda: fsio.unlink_quietly(path), "removed it")

    def check_locks(self) -> None:
        directory = self.layout.dir("locks")
        here = {socket.gethostname(), L.host_name()}
        for entry in sorted(fsio.listdir(directory)):
            path = os.path.join(directory, entry)
            try:
                st = os.lstat(path)
                data, st = fsio.read_regular(path, 1024)
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as e:
                if self.old(st):
                    p = self.add("stale-lock", path, f"lock marker {e}")
                    self.fix(p, lambda path=path: fsio.unlink_quietly(path), "removed it")
                continue
            holder = _lock_holder(data)
            if holder is None:
                # No record: a holder between creating and writing it, or one that crashed there.
                if not self.old(st):
                    continue
                why = "lock marker without a holder record"
            else:
                pid, host = holder
                if host not in here or liveness.alive(pid):
                    continue  # fail closed: another host's holder cannot be probed from here
                why = f"lock holder pid {pid} on {host} is gone"
            p = self.add("stale-lock", path, why)

            def unlock(path: str = path, ino: int = st.st_ino) -> str:
                if os.lstat(path).st_ino != ino:
                    return "left alone: it was taken again meanwhile"
                fsio.unlink_quietly(path)
                return "removed it"

            self.fix(p, unlock)

    def check_registrations(self) -> None:
        for owner, why in self.spool.stale_registrations():
            path = self.layout.worker_file(owner)
            p = self.add("stale-registration", path, f"worker {owner}: {why}")
            self.fix(p, lambda path=path: fsio.unlink_quietly(path), "removed it")

    def check_modes(self) -> None:
        shared = bool(self.spool.config.group_access)
        dir_mode, file_mode = (0o2770, 0o660) if shared else (0o700, 0o600)
        # The root itself may predate the spool (a checked-out spool/); the directories inside guard it.
        dirs = [self.layout.dir(n) for n in L.STATE_DIRS + L.OTHER_DIRS]
        dirs += [self.layout.owned(e) for e in self.live_dirs]
        files = [self.layout.config]
        for state in ("done", "dead"):
            files += [os.path.join(self.layout.dir(state), e) for e in fsio.listdir(self.layout.dir(state))
                      if L.is_json_entry(e) and not e.startswith(L.QUARANTINE_PREFIX)]
        files += [os.path.join(self.layout.pending, e) for e in fsio.listdir(self.layout.pending)
                  if L.parse_pending(e) is not None]
        out = self.layout.dir("output")
        files += [os.path.join(out, e) for e in fsio.listdir(out)]
        for paths, mode in ((dirs, dir_mode), (files, file_mode)):
            for path in paths:
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue
                if stat.S_ISLNK(st.st_mode) or st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                    continue  # not spoolq's doing; a chmod would reach another name
                extra = stat.S_IMODE(st.st_mode) & 0o777 & ~mode
                if not extra:
                    continue
                p = self.add("permissions", path, f"mode {stat.S_IMODE(st.st_mode):04o} gives access beyond "
                             f"{mode:04o} ({'group_access is on' if shared else 'the spool is private'})")
                self.fix(p, lambda path=path, mode=mode: os.chmod(path, mode), f"set mode {mode:04o}")


def _lock_holder(data: bytes) -> tuple[int, str] | None:
    """filelock's SoftFileLock record: "<pid>\\n<host>\\n[<start token>\\n]"."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = text.strip().splitlines()
    if not text.endswith("\n") or len(lines) not in (2, 3) or not lines[0].isdigit():
        return None
    return int(lines[0]), lines[1]


def _age(now: float, st: os.stat_result) -> str:
    seconds = max(0.0, now - st.st_mtime)
    if seconds >= 7200:
        return f"{seconds / 3600:.0f}h"
    if seconds >= 120:
        return f"{seconds / 60:.0f}min"
    return f"{seconds:.0f}s"

