"""fsck's checks of everything around the jobs: the layout's directories, config.json, worker
registrations, quarantine reason records, temp files, locks held for long, and modes."""

from __future__ import annotations

import os
import stat

from ..format.states import State
from ..format import layout, ours
from ..store import shards, trust
from ..system import fsio, locks
from ..format.modes import Modes
from ..format.errors import SpoolError
from .jobs import stale_temp
from .report import Report


class HousekeepingChecks:
    def __init__(self, report: Report):
        self.r = report
        self.spool = report.spool
        self.layout = report.layout
        self.settings_read = True  # False: config.json was refused, so whether the spool is shared is unknown

    def check_layout(self) -> bool:
        """Every directory of the layout is there; False if the rest cannot be checked."""
        r = self.r
        root = self.layout.root
        if not os.path.isdir(root):
            if os.path.lexists(root):
                p = r.report("not-a-directory", root, "the spool's path is not a directory")
                r.leave_alone(p, "name the spool's own directory (--spool DIR or SPOOLQ_DIR)")
            else:
                r.report("missing-dir", root, "the spool directory does not exist")
            return False
        if not self._safe(root, may_be_link=True):
            return False
        if self._someone_elses():
            p = r.report("not-a-spool", root, "it holds other files and none of a spool's "
                         "(no pending/, processing/, done/, dead/, waiting/ or config.json)")
            r.leave_alone(p, "nothing is created in it: name the spool's own directory (--spool DIR or SPOOLQ_DIR)")
            return False
        ok = True
        for name in layout.STATE_DIRS + layout.OTHER_DIRS:
            path = self.layout.dir(name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                if name in layout.MADE_ON_DEMAND:
                    continue  # a spool from before these existed: made when first needed
                p = r.report("missing-dir", path, f"{name}/ is missing")
                r.repair_with(p, lambda path=path: self.spool.store.make_dir(path), "created it")
                ok = ok and p.repaired
                continue
            if not stat.S_ISDIR(st.st_mode) and not stat.S_ISLNK(st.st_mode):
                p = r.report("not-a-directory", path, f"{name} is not a directory")
                r.leave_alone(p, "move it away by hand")
                ok = False
            elif not self._safe(path):
                ok = False
        return ok

    def _someone_elses(self) -> bool:
        """A directory with files in it and none of a spool's job directories or config.json is
        not a damaged spool but someone else's (`--spool /`, a home directory): a repair would
        scatter the layout into it."""
        if os.path.lexists(self.layout.config) or any(os.path.lexists(self.layout.dir(name))
                                                      for name in layout.STATE_DIRS):
            return False
        return self.spool.store.holds_other_files()

    def _safe(self, path: str, may_be_link: bool = False) -> bool:
        """A directory another user could write into (or a symlink) is reported, and fsck looks
        no further: its contents cannot be trusted, and a repair would act on them. One that is
        only too open for the spool's settings is the modes check's to narrow."""
        st = os.lstat(path)
        uid = self.spool.store.uid
        if stat.S_ISDIR(st.st_mode) and st.st_uid == uid:
            return True
        why = trust.unsafe_directory(path, shared=True, may_be_link=may_be_link, uid=uid)
        if why is None:
            return True
        p = self.r.report("unsafe-dir", path, why)
        self.r.leave_alone(p, "fix it by hand (chown, chmod go-w, or move it away); no spoolq command uses it")
        return False

    def check_config(self) -> None:
        try:
            problems = self.spool.config.problems
        except SpoolError as e:
            problems = (str(e),)
            self.spool.store.use_default_config()  # so the rest of the spool is still checked
            self.settings_read = False
        for problem in problems:
            p = self.r.report("config", self.layout.config, problem)
            self.r.leave_alone(p, "settings are the operator's: fix or remove config.json"
                               + ("" if self.settings_read else " (modes are judged once it is read)"))

    def check_registrations(self) -> None:
        for owner, why in self.spool.owners.stale_registrations():
            path = self.layout.worker_file(owner)
            p = self.r.report("stale-registration", path, f"worker {owner}: {why}")
            self.r.repair_with(p, lambda path=path: fsio.unlink_quietly(path), "removed it")
        for owner in self.spool.owners.registered():
            self._check_record(self.layout.worker_file(owner), "a registration: its worker is judged by its lease alone")
            self._check_record(os.path.join(self.layout.owned(owner), layout.GROUP_FILE),
                               "a job's process group: recovery will not signal it")

    def _check_record(self, path: str, ignored: str) -> None:
        """A record only spoolq writes that someone else wrote or could rewrite is not believed."""
        st = fsio.lstat_if_there(path)
        why = st is not None and stat.S_ISREG(st.st_mode) and self.spool.store.why_not_owners(st)
        if why:
            p = self.r.report("untrusted-record", path, f"it {why}; it is ignored as {ignored}")
            self.r.leave_alone(p, "find out who wrote it; remove it by hand")

    def check_reasons(self) -> None:
        r = self.r
        for entry, path, st in r.entries(self.layout.dir("quarantine")):
            if entry.startswith("."):
                continue
            qid = layout.stem(entry) if entry.endswith(".json") else None
            if qid is None or not layout.is_quarantine_id(qid):
                p = r.report("stray-entry", path, "not a reason record name")
                r.leave_alone(p, "not spoolq's; remove it by hand")
                continue
            if self.spool.quarantine.exists(qid) or not r.is_stale(st):
                continue
            p = r.report("orphan-reason", path, f"reason record for {qid}, which is not in dead/")
            r.repair_with(p, lambda path=path: fsio.unlink_quietly(path), "removed it")

    def check_batches(self) -> None:
        """Before the jobs and the markers are looked at: a batch cut short is published whole,
        and its jobs and markers are then where they belong."""
        for name, path, st in self.r.entries(self.layout.tmp):
            if layout.is_temp_name(name, "plan"):
                self._cut_batch(path, st)
        # A plan still there (its creator at work, or not yet judged from this host): its files
        # and markers are not leftovers.
        for name, path, _ in self.r.entries(self.layout.tmp):
            if layout.is_temp_name(name, "plan"):
                for tmp, _, job_id in self.spool.publisher.plan_entries(path) or []:
                    self.r.planned.add(tmp)
                    self.r.accounted.add(job_id)

    def check_tmp(self) -> None:
        for name, path, st in self.r.entries(self.layout.tmp):
            if layout.is_temp_name(name, "plan") or name in self.r.planned:
                continue  # check_batches
            if layout.is_temp_name(name):
                stale_temp(self.r, path, st)
            else:
                p = self.r.report("stray-entry", path, "not a temp file spoolq makes")
                self.r.leave_alone(p, "not spoolq's; remove it by hand")

    def _cut_batch(self, path: str, st: os.stat_result) -> None:
        """A batch's plan whose enqueuer is gone: it was cut between two renames (enqueue.py)."""
        creator = layout.creator_of_temp(os.path.basename(path))
        why = self.r.why_left_over(creator, st)
        if why is None or creator is None:
            return
        p = self.r.report("cut-batch", path, f"a batch cut short while it was being published: {why}")

        def publish_the_rest() -> None:
            self.spool.publisher.finish_batches(lambda c: why if c == creator else None)

        self.r.repair_with(p, publish_the_rest, "published the rest of it")

    def check_locks(self) -> None:
        """A lock held for long is reported, naming its holder (a dead holder's is let go by the
        file system, so this one is alive, stuck, or on a host the server has not yet given up);
        an earlier spoolq's lock files are removed; anything else in locks/ is reported."""
        r = self.r
        for entry, path, st in r.entries(self.layout.dir("locks")):
            if not stat.S_ISREG(st.st_mode) or not ours.is_spoolq_entry("locks", entry):
                p = r.report("stray-entry", path, "not a lock file")
                r.leave_alone(p, "not spoolq's; remove it by hand")
            elif not entry.endswith(".flock"):
                p = r.report("old-lock", path, "a lock file of an earlier spoolq (locks are flock(2)s on <name>.flock now)")
                r.repair_with(p, lambda path=path: fsio.unlink_quietly(path), "removed it")
            else:
                held = locks.holder(path)
                if held is not None and r.fs_now - held.since >= locks.LONG_HELD:
                    p = r.report("long-held-lock", path, f"lock {entry[:-len('.flock')]} held by {held} for "
                                 f"{r.age(st)}")
                    r.leave_alone(p, "its holder is alive (a dead one's lock is let go by the file system): "
                                  "find out why it holds it so long")

    def check_modes(self) -> None:
        """Nothing spoolq made is more open than the spool's settings allow. Not judged without
        them: a shared spool's config.json that an older spoolq rewrote group-writable would have
        every mode narrowed to a private spool's, config.json's too (which then counts as trusted)."""
        if not self.settings_read:
            return
        r = self.r
        shared = bool(self.spool.config.group_access)
        modes = Modes.for_spool(shared)
        # The root itself may predate the spool (a checked-out spool/); the directories inside guard it.
        dirs = [self.layout.dir(n) for n in layout.STATE_DIRS + layout.OTHER_DIRS]
        dirs += [self.layout.owned(e) for e in r.live_dirs]
        edges = self.layout.dir("after")
        dirs += [os.path.join(edges, e) for e in fsio.listdir(edges) if ours.is_spoolq_entry("after", e)]
        # Every shard by name: one another user made, or opened up, is not listed by workers (shards.py)
        dirs += [self.spool.store.shards.path(s) for s in fsio.listdir(self.layout.pending) if shards.is_shard(s)]
        for path in dirs:
            self._check_mode(path, modes.inbox if self.layout.is_inbox(path) else modes.dir, shared)
        for path in self._spoolq_files():
            self._check_mode(path, modes.file, shared)

    def _spoolq_files(self) -> list[str]:
        """What spoolq itself created (the user's own files under the spool are theirs)."""
        files = [self.layout.config]
        for name in layout.STATE_DIRS + layout.OTHER_DIRS:
            if name in (State.PROCESSING, "tmp", "after"):
                continue  # live owners' files change while we look; temp files are the temp check's;
                # after/ holds directories (above), and in them empty edges that come and go
            directory = self.layout.dir(name)
            entries = self.spool.store.shards.entries() if name == State.PENDING else fsio.listdir(directory)
            files += [os.path.join(directory, e) for e in entries
                      if ours.is_spoolq_entry(name, e) and not (name == State.DEAD and layout.is_quarantine_id(e))]
        return files

    def _check_mode(self, path: str, mode: int, shared: bool) -> None:
        st = fsio.lstat_if_there(path)
        if st is None:
            return  # moved on while we looked
        if stat.S_ISLNK(st.st_mode) or st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            return  # not spoolq's doing; a chmod would reach another name
        if st.st_uid != self.spool.store.uid:
            p = self.r.report("ownership", path, f"belongs to uid {st.st_uid}, not to the spool's user "
                              f"(uid {self.spool.store.uid})")
            self.r.leave_alone(p, "spoolq never changes an owner; chown it or move it away by hand")
            return
        extra = stat.S_IMODE(st.st_mode) & 0o777 & ~mode
        unguarded = mode & stat.S_ISVTX and not st.st_mode & stat.S_ISVTX  # members could move the owner's files
        if not extra and not unguarded:
            return
        p = self.r.report("permissions", path, f"mode {stat.S_IMODE(st.st_mode):04o} gives access beyond "
                          f"{mode:04o} ({'group_access is on' if shared else 'the spool is private'})")
        self.r.repair_with(p, lambda: None if trust.chmod_ours(path, mode, st) else "left alone: it moved on while "
                           "we looked", f"set mode {mode:04o}")
