"""Recovery: take back the jobs of an owner that is gone (a dead pid on this host, or an expired
lease on any host). First the owner's whole ``processing/<owner>/`` is renamed to
``processing/<rescuer>~<owner>/``: that one rename is the fence, so an owner that was only frozen
and wakes up can no longer complete, fail or move its jobs. Then what is left of its process
groups on this host is killed, and each job's attempt is failed like any failure
(``Transitions.finish``): it is retried or dead. A drop-in it was adopting goes back to pending/.
"""

from __future__ import annotations

import errno
import os
from typing import NamedTuple

from ..format.states import State
from ..format import layout
from ..store import output
from ..system import fsio, liveness
from .cancel import CANCELLED, KillRequest
from ..format.errors import InvalidJob, LostOwnership
from ..store.judge import OwnerJudge
from ..store.owners import OwnerDir, Owners
from ..store.quarantine import Quarantine
from ..store.slots import Slots
from ..store.store import Store
from .transitions import Claimed, Transitions


DEPS_SWEEP_EVERY = 15  # sweeps (2 s apart in a worker) between looks through after/ (dependencies.py)


class Recovered(NamedTuple):
    owner: str
    job_id: str
    state: str
    reason: str

    def __str__(self) -> str:
        return f"recovered job {self.job_id} from dead worker {self.owner}: now {self.state}"


class Recovery:
    def __init__(self, store: Store, owners: Owners, quarantine: Quarantine, transitions: Transitions):
        self.store = store
        self.layout = store.layout
        self.owners = owners
        self.quarantine = quarantine
        self.transitions = transitions
        self.slots = Slots(store)
        self.deps = transitions.publisher.deps
        self._rescuer = ""
        self._sweeps = 0
        self._fs_now: float | None = None  # read once a sweep, when a fence's age is asked

    def run(self, rescuer: str, *, now: float | None = None, lease: float | None = None) -> list[Recovered]:
        """Take back every job held by a dead owner: kill what is left of its process groups on
        this host, then count the attempt as failed and move the job on like any failure."""
        out: list[Recovered] = []
        self._rescuer = rescuer
        # RACE: the rescuer is alive (it is this process) whatever a look at a file system that
        # fails just now says of its registration or its directory: it never rescues itself.
        for owned in self.owners.gone_dirs(lease=lease):
            if owned.holder != rescuer:
                out.extend(self._rescue(owned, rescuer, now))
        self._fs_now: float | None = None
        for entry in fsio.listdir(self.layout.processing):
            if entry.startswith(rescuer + layout.RESCUE_SEP):  # ours, kept until its mark is old
                out.extend(self._drain(self.layout.owned(entry), OwnerDir(entry).chain[1], "?", now))
        out.extend(self._complete_own_transits(rescuer, now))
        self._sweeps += 1
        if self._sweeps % DEPS_SWEEP_EVERY == 1:  # the first sweep, then now and then: after the rescues
            self.deps.sweep(rescuer)
        judge = self.owners.judge()
        self.slots.return_orphans(lambda owner: owner != rescuer and self._owner_gone(owner, judge))
        self.owners.drop_stale_registrations(keep=rescuer)
        self.transitions.publisher.finish_batches(lambda creator: self.owners.why_creator_gone(creator, judge))
        return out

    def _owner_gone(self, owner: str, judge: OwnerJudge) -> bool:
        reg = self.owners.registration(owner)
        return reg is None or judge.why_gone(reg) is not None

    def _rescue(self, owned: OwnerDir, rescuer: str, now: float | None) -> list[Recovered]:
        fenced = f"{rescuer}{layout.RESCUE_SEP}{owned.name}"
        if len(fenced) > 200:
            fenced = f"{rescuer}{layout.RESCUE_SEP}{layout.random_hex(4)}"
        src_dir, dst_dir = self.layout.owned(owned.name), self.layout.owned(fenced)
        if only_a_fence(src_dir):  # an emptied fence its rescuer kept, and left at its death
            self._remove_when_old(src_dir)
            return []
        if not self._mark_fenced(src_dir):
            return []
        # RACE: two rescuers may both find the owner dead; the directory rename admits one.
        if not fsio.move(src_dir, dst_dir):
            return []
        reg = self.owners.registration(owned.holder)
        host = (reg.record.get("host") if reg else None) or "?"
        local = reg is not None and self.owners.judge().is_local(reg.record.get("host"), reg.record.get("boot"),
                                                                 reg.record.get("pidns"))
        self._kill_job_groups(dst_dir, owned.holder, local=local)
        if local:
            self._remove_temp_files_of(reg.record)
        out = self._drain(dst_dir, owned.holder, host, now)
        for owner in owned.chain:
            fsio.unlink_quietly(self.layout.worker_file(owner))
        return out

    @staticmethod
    def _mark_fenced(directory: str) -> bool:
        """The mark an owner looks for before it records a result (handoff.py). False
        if the directory is gone: another rescuer has it."""
        try:
            os.close(os.open(os.path.join(directory, layout.FENCE_FILE),
                             os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
        except FileExistsError:
            pass  # another rescuer's, or one that died before its rename: the rename decides
        except OSError as e:
            if fsio.is_gone(e):
                return False
            raise
        return True

    def _drain(self, directory: str, owner: str, host: str, now: float | None) -> list[Recovered]:
        """Move every job out of a fenced directory, then remove it. A woken owner may still reach
        the directory by an old name (a client's cache) and move a file at the same moment: each
        file is taken by a rename of its own, and the directory is listed again until nothing is
        left of it (a few rounds at most: each of the owner's slots has one job and stops at the
        fence mark)."""
        out: list[Recovered] = []
        for _ in range(8):
            names = sorted(fsio.listdir(directory), key=_drain_order)
            if not [n for n in names if n != layout.FENCE_FILE]:
                break
            for name in names:
                out.extend(self._rescue_entry(directory, name, owner, host, self.store.now(now)))
        self._remove_when_old(directory)
        return out

    def _remove_when_old(self, directory: str) -> None:
        """An emptied fenced directory stays, its mark in it, until the mark is older than a lease
        and a minute: while a client may still reach it by a cached old name, the mark is what
        tells a woken owner (a claim landing there is not run). run() looks at it again."""
        mark = os.path.join(directory, layout.FENCE_FILE)
        marked = fsio.lstat_if_there(mark)
        if marked is not None:
            if self._fs_now is None:
                self._fs_now = self.store.fs_clock()
            if self._fs_now - marked.st_mtime < self.store.config.lease_timeout + 60:
                return
        fsio.unlink_quietly(mark)
        try:
            os.rmdir(directory)
        except OSError:
            pass  # a late owner's file landed after all: the next sweep drains it

    def _complete_own_transits(self, rescuer: str, now: float | None) -> list[Recovered]:
        """A move out of this owner's own directory that a passing I/O error cut after its take
        (transitions: adopt, finish): completed here, never left for a rescuer at this owner's death."""
        own = self.layout.owned(rescuer)
        out: list[Recovered] = []
        for name in fsio.listdir(own):
            moving = layout.parse_transit(name)
            if moving is not None and moving.taken:
                out.extend(self._finish_transit(own, moving, rescuer, self.store.now(now)))
        return out

    def _rescue_entry(self, directory: str, name: str, owner: str, host: str, now: float) -> list[Recovered]:
        path = os.path.join(directory, name)
        moving = layout.parse_transit(name)
        if moving is not None:
            return self._finish_transit(directory, moving, owner, now)
        if name == layout.FENCE_FILE:
            return []
        if name.startswith(layout.CANCEL_PREFIX):
            if not os.path.lexists(os.path.join(directory, layout.job_file(name[len(layout.CANCEL_PREFIX):]))):
                fsio.unlink_quietly(path)  # its job is not here (any more): the request is void
            return []  # else its job's rescue reads it (_rescue_file), sorted after it
        if name.startswith("."):
            fsio.unlink_quietly(path)  # the job group record, a temp file
            return []
        if name.startswith(layout.ADOPT_PREFIX):
            self._return_dropin(path, name[len(layout.ADOPT_PREFIX):])
            return []
        if not name.endswith(".json"):
            return []
        return self._rescue_file(directory, name, owner, host, now)

    def _finish_transit(self, directory: str, moving: layout.Transit, owner: str, now: float) -> list[Recovered]:
        """A move out of the directory its owner began (transitions._replace_then_move). Taken
        (the old file renamed): the owner decided, and its new content goes where it chose. Not
        taken: the new content is void once the old file is gone (its owner can no longer take
        it), and waits while the old file is there (its owner, or this rescue, takes it first)."""
        next_path = os.path.join(directory, moving.next_name)
        if not moving.taken:
            # RACE: the old file becomes the .taken. one in a single rename; looked at in this
            # order, neither can appear once both were seen missing.
            if not os.path.lexists(os.path.join(directory, moving.original)) and \
                    not os.path.lexists(os.path.join(directory, moving.taken_name)):
                fsio.unlink_quietly(next_path)
            return []
        try:
            job, _ = self.store.read_job(next_path, now=now, trusted_only=True)
        except FileNotFoundError as e:
            if e.errno == errno.ESTALE:
                return []  # our directory was fenced on another host: its rescuer completes the move
            fsio.unlink_quietly(os.path.join(directory, moving.taken_name))  # the move is done
            return []
        except InvalidJob:
            # Never written whole (it is fsync'd before the take, so only another program's
            # file): the old file goes back under its name, to be rescued as it was.
            fsio.move(os.path.join(directory, moving.taken_name), os.path.join(directory, moving.original))
            fsio.unlink_quietly(next_path)
            return []
        moved = self.transitions.finishing.complete(directory, moving, job, self._rescuer or owner)
        return [Recovered(owner, job.id, moved.seen_as(now), "the move its owner began, completed")]

    def _kill_job_groups(self, directory: str, holder: str, *, local: bool) -> None:
        """Kill the process groups of the jobs the dead owner was running (one a slot), as its
        .pgroup file records them: exactly the jobs' processes, on the owner's own host only. A
        process a job moved out of its group on purpose (a daemon) is not touched. A directory
        without the file is a worker of spoolq 0.1's (or an owner that ran nothing), one whose
        record this version cannot read an earlier spoolq's: its jobs are found as 0.1 found them,
        by the owner's token in their environment (`local` holds only for an owner registered in
        workers/, which nobody but the spool's owner writes)."""
        if not local:
            return
        try:  # no fifo waited on, no symlink followed; a record only its owner could have written
            data, st = fsio.read_regular(os.path.join(directory, layout.GROUP_FILE),
                                         liveness.GROUP_RECORD_SIZE * layout.MAX_SLOTS, single_link=False)
        except FileNotFoundError:
            liveness.kill_groups_of_owner(holder)
            return
        except (OSError, ValueError):
            return
        if self.store.why_not_owners(st):
            return  # a process group named by anyone else is never signalled (fsck reports the file)
        records = liveness.parse_group_records(data)
        if not records and data.strip():  # an earlier spoolq's record ("<pgid> <start>" in 40 bytes)
            liveness.kill_groups_of_owner(holder)
        for record in records:
            liveness.kill_job_group(*record)

    def _remove_temp_files_of(self, record: dict) -> None:
        """What the dead owner was writing in tmp/ (a marker's record, a config half-saved):
        its temp names say who made them, so they go now, not at an fsck an hour later."""
        made_by = (layout.safe_host(str(record.get("host"))), record.get("pid"), record.get("start"),
                   record.get("pidns"))
        for name in fsio.listdir(self.layout.tmp):
            creator = layout.creator_of_temp(name)
            if creator is not None and (creator.host, creator.pid, creator.start, creator.pidns) == made_by:
                fsio.unlink_quietly(os.path.join(self.layout.tmp, name))

    def _rescue_file(self, directory: str, name: str, owner: str, host: str, now: float) -> list[Recovered]:
        path = os.path.join(directory, name)
        try:
            # trusted_only: what recovery moves on runs next, so it must be a file the claim
            # would have run (any directory in processing/ can hold anyone's file).
            job, _ = self.store.read_job(path, now=now, trusted_only=True)
        except FileNotFoundError:
            return []
        except InvalidJob as e:
            qid = self.quarantine.put(path, name, f"malformed job file found in processing/: {e}", now)
            return [Recovered(owner, qid, State.DEAD, str(e))]
        attempt = job.running_attempt
        reason = f"worker {owner} on {host} stopped during attempt {attempt} (killed, crashed or lost its lease)"
        if attempt > job.max_retries:
            reason += "; the job ran out of attempts this way: it may be what kills its worker"
        kill = KillRequest(path, job)
        cancelled = kill.asked()  # `cancel --kill` asked for it: its owner died before it could
        # An attempt that died before it wrote anything has no log (store/output.py), and the
        # marker below makes none: one is made now, while the job is still held here (once moved
        # on, it could be purged before the marker is written).
        output.make(self.layout.output(job.id), self.store.modes.file)
        try:
            moved = self.transitions.finish(Claimed(job, owner, path), ok=False, exit_code=None,
                                            error=CANCELLED if cancelled else reason, now=now, rescuer=self._rescuer,
                                            final=cancelled)
        except LostOwnership:
            return []  # RACE: its woken owner took the file first; the next listing finishes its move
        kill.withdraw()
        why = CANCELLED if cancelled else reason
        # The attempt's log had no closing line: a killed worker writes none. RACE: on another
        # host, the lost attempt's processes may still be writing; their last words then follow it.
        state = moved.seen_as(now)
        output.mark(self.layout.output(job.id), f"attempt {attempt} ended without a result: {why}; the job is "
                    f"{state} now")
        return [Recovered(owner, job.id, state, why)]

    def _return_dropin(self, path: str, original: str) -> None:
        """A drop-in its adopter died holding goes back to pending/ to be adopted again."""
        if self._returned_already(path, original):
            # RACE: a return cut between its link into pending/ and the unlink of this name (the
            # fallback where renameat2 is refused: fsio.move_no_replace) left the file under both;
            # no adopter takes it there while it has two links, and a second return would only
            # add a third name. This name goes: the file is a drop-in in pending/ as any other,
            # judged there by its adopter. Only this rescuer's drain reaches the fenced directory;
            # an adopter that took the pending/ name meanwhile holds the same file, judged the same.
            fsio.unlink_quietly(path)
            return
        try:
            fsio.move_no_replace(path, os.path.join(self.layout.pending, original))
        except FileExistsError:  # another file of that name arrived meanwhile: never replace it
            fsio.move_no_replace(path, os.path.join(self.layout.pending,
                                                    f"{layout.stem(original)}.{layout.random_hex(3)}.json"))

    def _returned_already(self, path: str, original: str) -> bool:
        """Whether the drop-in at `path` has a second link in pending/, under a name a return gives
        it (`original`, or one made from it): a return began and was cut before its unlink."""
        st = fsio.lstat_if_there(path)
        if st is None or st.st_nlink < 2:
            return False
        alternative = layout.stem(original) + "."
        for name in fsio.listdir(self.layout.pending):
            if name == original or (name.startswith(alternative) and name.endswith(".json")):
                there = fsio.lstat_if_there(os.path.join(self.layout.pending, name))
                if there is not None and os.path.samestat(there, st):
                    return True
        return False


def _drain_order(name: str) -> tuple[int, str]:
    """Half-done moves first (their owner decided), then the files, then what is void."""
    moving = layout.parse_transit(name)
    if moving is not None:
        return (0 if moving.taken else 2, name)
    return (1, name)


def only_a_fence(directory: str) -> bool:
    """A fenced directory emptied and kept for a while (Recovery._remove_when_old): nothing to rescue."""
    return fsio.listdir(directory) == [layout.FENCE_FILE]
