"""fsck's checks of job files: owners of processing/, every job file in every state, drop-ins,
one place per id, and the ids/ markers."""

from __future__ import annotations

import os
import stat

from ..format.states import State
from ..format import job, layout
from ..store import dropins, maildir, shards
from ..system import fsio
from ..store.ids import Reservations, creator_of
from ..moves.recovery import only_a_fence
from ..format.errors import InvalidJob, JobNotFound, SpoolError
from .report import Problem, Report


class JobChecks:
    def __init__(self, report: Report):
        self.r = report
        self.spool = report.spool
        self.layout = report.layout

    def check_owners(self) -> None:
        r = self.r
        gone = {owned.name for owned in self.spool.owners.gone_dirs()}
        found: list[tuple[Problem, str]] = []
        for entry, path, st in r.entries(self.layout.processing):
            if entry.startswith("."):
                continue
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != self.spool.store.uid:
                p = r.report("stray-entry", path, "processing/ should hold only the owner directories of "
                             "this spool's workers")
                r.leave_alone(p, "not spoolq's; remove it by hand")
                continue
            if entry not in gone:
                r.live_dirs.append(entry)
                continue
            if only_a_fence(path):
                continue  # an emptied fence, kept while a cached old name may still reach it
            names = fsio.listdir(path)
            # A move its owner began holds its job under the .taken. name (recovery finishes it).
            taken = {t.taken_name: t.original for t in map(layout.parse_transit, names) if t is not None and t.taken}
            jobs = sorted([n for n in names if layout.is_json_entry(n)] + list(taken))
            held = ", ".join(layout.stem(taken.get(n, n)) for n in jobs[:5]) + (" …" if len(jobs) > 5 else "")
            p = r.report("dead-owner", path, f"owner {layout.owner_of(entry)} is gone; it holds "
                         f"{len(jobs)} file(s){': ' + held if jobs else ''}")
            found.append((p, entry))
            if not r.repair:
                for name in jobs:
                    if not taken.get(name, name).startswith(layout.ADOPT_PREFIX):
                        r.record_place(layout.stem(taken.get(name, name)), State.PROCESSING, os.path.join(path, name))
        if found and r.repair:
            self._recover(found)

    def _recover(self, found: list[tuple[Problem, str]]) -> None:
        try:
            recovered = self.spool.recovery.run(self.r.rescuer)
        except (OSError, SpoolError) as e:
            for p, _ in found:
                p.repair = f"repair failed: {getattr(e, 'strerror', None) or e}"
            return
        for p, entry in found:
            owner = layout.owner_of(entry)
            mine = [f"job {x.job_id} is now {x.state}" for x in recovered if x.owner == owner]
            if os.path.lexists(self.layout.owned(entry)):
                p.repair = "repair failed: the directory is still there (a live worker took it over?)"
                continue
            p.repaired = True
            p.repair = "recovered: " + ("; ".join(mine) if mine else "it held no job")

    def check_job_file(self, path: str, state: str, expected: str, source: str, may_fix: bool = True) -> None:
        """One file that claims to be job `expected`: it must be a trusted regular file that parses."""
        r = self.r
        reason = None
        try:
            self.spool.store.read_job(path, now=r.now, expect_id=expected, trusted_only=True)
        except FileNotFoundError:
            return  # moved on while we looked
        except InvalidJob as e:
            reason = str(e)
        r.record_place(expected, state, path)
        if reason is None:
            return
        p = r.report("bad-job-file", path, f"{state} job {expected}: {reason}")
        if may_fix:
            r.repair_with(p, lambda: r.quarantine(path, source, f"malformed job file: {reason}"))
        else:
            r.leave_alone(p, "a live worker holds it")

    def check_pending(self) -> None:
        for entry in sorted(self.spool.store.shards.entries()):
            if shards.base(entry).startswith("."):
                continue  # staging names belong to whoever is writing them
            path = os.path.join(self.layout.pending, entry)
            parsed = layout.parse_pending(entry)
            if parsed is not None:
                self.check_job_file(path, State.PENDING, parsed.job_id, entry)
            elif layout.is_dropin(entry):
                self.check_dropin(path, entry)
            elif "/" in entry and layout.is_json_entry(shards.base(entry)):
                self.check_misplaced(path, entry)

    def check_strays(self) -> None:
        """What no worker will ever take (maildir.py): said, never moved (its name is its writer's)."""
        for stray in maildir.strays(self.layout, self.r.fs_now):
            p = self.r.report("never-picked-up", stray.path, stray.why)
            self.r.leave_alone(p, "its name or place is its writer's to fix")

    def check_misplaced(self, path: str, entry: str) -> None:
        """A file another program put into a shard of pending/ (shards.py), where no worker looks
        for dropped files: it belongs in pending/ itself."""
        r = self.r
        p = r.report("misplaced-dropin", path, "a dropped file inside a shard of pending/ is never run there")
        target = os.path.join(self.layout.pending, shards.base(entry))
        r.repair_with(p, lambda: self._move_out(path, target))

    def _move_out(self, path: str, target: str) -> str:
        try:
            if not fsio.move_no_replace(path, target):
                return "left alone: it moved on while fsck looked"
        except FileExistsError:
            return "left alone: pending/ has a file of that name"
        return f"moved to {os.path.relpath(target, self.layout.root)}"

    def check_dropin(self, path: str, entry: str) -> None:
        """Report what a worker would quarantine (and do the same when repairing)."""
        r = self.r
        reason = dropins.rejection(self.spool.store, entry, now=r.now, fs_now=r.fs_now)
        if reason is None:
            return
        p = r.report("bad-dropin", path, reason)
        r.repair_with(p, lambda: r.quarantine(path, entry, reason))

    def check_live_processing(self) -> None:
        r = self.r
        for entry in r.live_dirs:
            for name, path, st in r.entries(self.layout.owned(entry)):
                if name.startswith("."):
                    if layout.is_temp_name(name):
                        stale_temp(r, path, st)
                elif name.startswith(layout.ADOPT_PREFIX):
                    if r.is_stale(st):
                        p = r.report("stuck-adoption", path, f"dropped file half-adopted "
                                     f"{r.age(st)} ago by live owner {layout.owner_of(entry)}")
                        r.leave_alone(p, "its owner is alive; stop it and fsck again")
                elif name.endswith(".json"):
                    self.check_job_file(path, State.PROCESSING, layout.stem(name), name, may_fix=False)
                else:
                    p = r.report("stray-entry", path, "not a job file")
                    r.leave_alone(p, "not spoolq's; remove it by hand")

    def check_finished(self, state: str) -> None:
        r = self.r
        for entry, path, st in r.entries(self.layout.dir(state)):
            if entry.startswith("."):
                if layout.is_temp_name(entry):
                    stale_temp(r, path, st)
                continue
            stem = layout.stem(entry) if entry.endswith(".json") else None
            if stem is not None and layout.is_quarantine_id(stem) and state == State.DEAD:
                self.check_quarantined(stem, path)
            elif stem is not None and job.valid_id(stem):
                self.check_job_file(path, state, stem, entry)
            else:
                p = r.report("stray-entry", path, f"not a job file name in {state}/")
                if stat.S_ISDIR(st.st_mode):
                    r.leave_alone(p, "a directory; remove it by hand")
                else:
                    r.repair_with(p, lambda path=path, entry=entry: r.quarantine(
                        path, entry, f"not a job file name in {state}/"))

    def check_quarantined(self, qid: str, path: str) -> None:
        r = self.r
        quarantine = self.spool.quarantine
        record = quarantine.record(qid)
        if record is not None and isinstance(record.get("reason"), str):
            r.account_for(record.get("source"))
            return
        p = r.report("unrecorded-quarantine", path,
                     "quarantined file without a readable reason record in quarantine/")

        def write() -> str:
            fsio.unlink_quietly(self.layout.reason_file(qid))
            quarantine.write_record(qid, "quarantined; its reason record was lost (recreated by fsck)", None, r.now)
            return "wrote a reason record saying the original reason was lost"

        r.repair_with(p, write)

    def check_duplicates(self) -> None:
        r = self.r
        rank = {State.PROCESSING: 0, State.DONE: 1, State.DEAD: 2, State.PENDING: 3}
        for job_id, places in sorted(r.census.items()):
            places = [(s, p) for s, p in places if os.path.lexists(p)]  # RACE: moved while we looked
            if len(places) < 2:
                continue
            places.sort(key=lambda sp: (rank[sp[0]], sp[1]))
            keep_state, keep_path = places[0]
            for state, path in places[1:]:
                p = r.report("duplicate", path, f"job {job_id} is also {keep_state}: "
                             f"{os.path.relpath(keep_path, self.layout.root)}")
                if state in (State.PENDING, State.DEAD):
                    r.repair_with(p, lambda path=path: r.quarantine(
                        path, os.path.basename(path), f"duplicate: job {job_id} is also {keep_state}"))
                else:
                    r.leave_alone(p, f"a {state} job is never moved by fsck; decide by hand")

    def check_markers(self) -> None:
        r = self.r
        ids_dir = self.layout.dir("ids")
        markers = set(fsio.listdir(ids_dir))
        for job_id in sorted(set(r.census) - markers):
            marker = self.layout.id_marker(job_id)
            if os.path.lexists(marker) or not any(os.path.lexists(p) for _, p in r.census[job_id]):
                continue
            p = r.report("missing-marker", marker, f"job {job_id} has no id marker (its id could be reused)")
            r.repair_with(p, lambda job_id=job_id: self._make_marker(job_id), "created it")
        for name in sorted(markers - set(r.census) - r.accounted):
            path = os.path.join(ids_dir, name)
            if name.startswith("."):
                if layout.is_temp_name(name):
                    st = os.lstat(path) if os.path.lexists(path) else None
                    if st is not None:
                        stale_temp(r, path, st)
                continue
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if not job.valid_id(name):
                p = r.report("stray-entry", path, "not a valid job id")
                r.leave_alone(p, "not spoolq's; remove it by hand")
                continue
            why = r.why_left_over(creator_of(self.spool.store, name), st)
            if why is None or self._still_exists(name):
                continue  # an enqueue or adoption may be under way, or the job moved while we looked
            p = r.report("orphan-marker", path, f"id {name} is reserved but no job has it: {why}")
            r.repair_with(p, lambda path=path: fsio.unlink_quietly(path), "removed it (the id is free again)")

    def _make_marker(self, job_id: str) -> None:
        with Reservations(self.spool.store) as ids:
            ids.reserve(job_id)

    def _still_exists(self, job_id: str) -> bool:
        try:
            self.spool.views.find(job_id)
            return True
        except (JobNotFound, InvalidJob):
            return False


def stale_temp(r: Report, path: str, st: os.stat_result) -> None:
    """A temp file whose writer crashed (a live one renames or removes it at once)."""
    why = r.why_left_over(layout.creator_of_temp(os.path.basename(path)), st)
    if why is None:
        return
    p = r.report("stale-temp", path, f"temp file: {why}")
    if stat.S_ISDIR(st.st_mode):
        r.leave_alone(p, "a directory; remove it by hand")
    else:
        r.repair_with(p, lambda: fsio.unlink_quietly(path), "removed it")
