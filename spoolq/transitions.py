"""Transitions: every rename of a job file, and nothing else (format: layout.py).

A job's state is the directory its file is in; each transition below is one rename (a few are
a rewrite in place first). "Proof" is what shows the caller still owns the file at that
moment; losing it is an answer (None, or LostOwnership), never a half-done move.

===========  ============================================  ==========  ===================  ==================================  ===========================
transition   from -> to                                    who         how                  proof                               fsync
===========  ============================================  ==========  ===================  ==================================  ===========================
publish      (caller) -> pending/<canonical>               enqueue     write tmp/, (a       ids/<id> linked (exclusive)         each file (a batch's
             (publish.py)                                                  batch: its plan),                                    in parallel), the plan,
                                                                           rename                                               pending/, ids/
adopt        pending/<drop-in> -> processing/<o>/~<drop>   worker      rename; replace      the first rename won; ids/<id>      the new content,
             -> pending/<canonical>                                    then move            linked (exclusive)                  pending/
claim        pending/<canonical> -> processing/<o>/<id>    worker      rename               the rename won                      none
finish ok    processing/<o>/<id> -> done/<id>              worker      rename only          no fence mark; the rename won       none
finish fail  processing/<o>/<id> -> pending/<due later>    worker,     replace then move:   no fence mark (owner); the take     the new content
             or dead/<id>                                  recovery    .next. written, take (a rename of the file itself) won
                                                                       to .taken., move
recover      processing/<o>/ -> processing/<r>~<o>/,       any owner,  mark .fenced, then   that rename won; per file, as       as finish fail
             then each job as "finish fail" (recovery.py)  fsck        directory rename     finish fail
retry        dead/<id> -> pending/<canonical>              dlq retry   rewrite, rename      lock "dlq"                          the rewrite, pending/
purge        done|dead/<id> -> (deleted)                   purge       unlink file, output  lock "dlq"                          none
                                                                       log, ids/<id>
quarantine   anywhere -> dead/+<qid>                       adopt,      rename               the rename won                      reason record, dead/
                                                           claim, fsck
===========  ============================================  ==========  ===================  ==================================  ===========================

A new transition (cancel, pause, dependencies, queues) is a row here and a method below.

Why no rename over a file in processing/: a client of a shared file system may reach an owner's
directory by a cached name after a rescuer renamed it (GlusterFS at its defaults, for about a
second), so the directory rename alone does not stop a woken owner. Every move out of it
therefore starts with a rename of the job file itself, which exactly one of owner and rescuer
wins; and new content is written under a new name first, never renamed over the old one, which
could bring back a file the rescuer had already taken.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from contextlib import contextmanager
from typing import Iterator, NamedTuple

from . import dropins, fsio, layout, retry
from .errors import InvalidJob, JobNotFound, LostOwnership, NotRetryable, SpoolError
from .job import Job
from .ids import Reservations
from .owners import Owners
from .publish import Publisher
from .quarantine import Quarantine
from .store import Store
from .views import Views, finished_at


class Moved(NamedTuple):
    """Where a transition left a job: its state (directory) and its file name there."""

    job_id: str
    state: str  # "pending" (to run again at its due time), "done" or "dead"
    name: str


@dataclass
class Claimed:
    """A job this owner holds in processing/<owner>/; its running attempt is job.running_attempt."""

    job: Job
    owner: str
    path: str


class Adopted(enum.Enum):
    PUBLISHED = "published"  # now a canonical pending job
    QUARANTINED = "quarantined"  # never a job: moved to dead/+<qid>.json
    WAIT = "wait"  # does not parse yet; its writer has drop_grace to finish it
    GONE = "gone"  # someone else took it first
    IGNORED = "ignored"  # a directory: left alone


class Adoption(NamedTuple):
    outcome: Adopted
    job_id: str | None = None
    reason: str | None = None
    retry_at: float | None = None  # WAIT: when to look again
    moved: Moved | None = None  # PUBLISHED: its canonical name in pending/


class Transitions:
    def __init__(self, store: Store, owners: Owners, quarantine: Quarantine, views: Views, publisher: Publisher):
        self.store = store
        self.layout = store.layout
        self.owners = owners
        self.quarantine = quarantine
        self.views = views
        self.publisher = publisher

    # ---- adopt ---------------------------------------------------------------------------

    def adopt(self, entry: str, owner: str, *, now: float | None = None) -> Adoption:
        """Turn a dropped file in pending/ into a canonical job, or quarantine it, or wait for its writer."""
        found = dropins.inspect(self.store, entry, now=now)
        now = self.store.now(now)
        if found.verdict is dropins.Verdict.GONE:
            return Adoption(Adopted.GONE)
        if found.verdict is dropins.Verdict.IGNORED:
            return Adoption(Adopted.IGNORED)
        if found.verdict is dropins.Verdict.WAIT:
            return Adoption(Adopted.WAIT, reason=found.reason, retry_at=found.retry_at)
        adopt_path = self._take_dropin(entry, owner)
        if adopt_path is None:
            return Adoption(Adopted.GONE)
        if found.verdict is dropins.Verdict.REFUSE:
            self.quarantine.put(adopt_path, entry, str(found.reason), now)
            return Adoption(Adopted.QUARANTINED, reason=found.reason)
        assert found.stat is not None
        arrived_ns = found.stat.st_ctime_ns  # its arrival (rename into pending/ or last write); our move resets ctime
        return self._publish_adopted(adopt_path, entry, arrived_ns, now)

    def _take_dropin(self, entry: str, owner: str) -> str | None:
        """Move a dropped file into our own directory; None if another worker took it first."""
        adopt_path = os.path.join(self.layout.owned(owner), layout.ADOPT_PREFIX + entry)
        try:
            # RACE: several workers may see the same drop-in; this rename admits one.
            if not fsio.move(os.path.join(self.layout.pending, entry), adopt_path):
                return None
        except FileNotFoundError:
            raise LostOwnership(f"{self.layout.owned(owner)} is gone") from None
        return adopt_path

    def _publish_adopted(self, adopt_path: str, entry: str, arrived_ns: int, now: float) -> Adoption:
        try:
            data, _ = self.store.read_bytes(adopt_path, "dropped file")
            job = dropins.job_from(self.store, data, entry, now=now, seq=arrived_ns)
        except (InvalidJob, OSError) as e:
            self.quarantine.put(adopt_path, entry, f"malformed: {e}", now)
            return Adoption(Adopted.QUARANTINED, reason=str(e))
        job.attempts, job.updated_at = 0, now
        owner = os.path.basename(os.path.dirname(adopt_path))
        with Reservations(self.store, owner) as ids:
            # A crash from here on leaves a marker naming this owner; once recovery has given the
            # file back, its next adopter finds that owner gone and no job with the id, and takes
            # the marker over (_reserve): the job is adopted again, never lost as a duplicate.
            if not self.publisher.reserve(ids, job.id):
                reason = dropins.duplicate_reason(job.id)
                self.quarantine.put(adopt_path, entry, reason, now)
                return Adoption(Adopted.QUARANTINED, job_id=job.id, reason=reason)
            try:
                moved = self._replace_then_move(adopt_path, job, "pending")
            except BaseException:
                ids.release(job.id)
                raise
        fsio.fsync_dir(self.layout.pending)
        return Adoption(Adopted.PUBLISHED, job_id=job.id, moved=moved)

    # ---- claim and finish ----------------------------------------------------------------

    def claim(self, entry: str, owner: str, *, now: float | None = None) -> Claimed | None:
        """Take a canonical pending job for `owner`. None if another worker took it first or the
        file was quarantined. Raises LostOwnership if this owner was recovered elsewhere."""
        parsed = layout.parse_pending(entry)
        if parsed is None:
            return None
        owned = self.layout.owned(owner)
        path = os.path.join(owned, layout.job_file(parsed.job_id))
        try:
            if not fsio.move(os.path.join(self.layout.pending, entry), path):
                return None  # RACE: another worker renamed it first; losing is an answer, not an error
        except FileNotFoundError:
            raise LostOwnership(f"{owned} is gone") from None
        now = self.store.now(now)
        try:
            job, _ = self.store.read_job(path, now=now, expect_id=parsed.job_id, trusted_only=True)
        except InvalidJob as e:
            self.quarantine.put(path, entry, f"malformed job file: {e}", now)
            return None
        finished = self._finished_copy(parsed.job_id)
        if finished:
            # Never run (and then overwrite) a job that has finished: this file is a copy of it.
            self.quarantine.put(path, entry, f"duplicate: job {parsed.job_id} is already {finished}", now)
            return None
        return Claimed(job, owner, path)

    def _finished_copy(self, job_id: str) -> str | None:
        name = layout.job_file(job_id)
        for state in ("done", "dead"):
            if os.path.lexists(os.path.join(self.layout.dir(state), name)):
                return state
        return None

    def finish(self, claimed: Claimed, *, ok: bool, exit_code: int | None, error: str | None,
               now: float | None = None, rescuing: bool = False) -> Moved:
        """Record an attempt's outcome and move the job on: done, pending again (backoff) or dead.
        An owner raises LostOwnership once fenced; a rescuer (`rescuing`) works inside the fence."""
        job = claimed.job
        if not rescuing:
            self._check_fence(claimed.path)
        if ok:
            # The success is the move itself: the file keeps the attempts before this one, which
            # readers add back (JobView). No rewrite means no temp file, no fsync, no freed inode.
            name = layout.job_file(job.id)
            self._move_out_of_owned(claimed.path, os.path.join(self.layout.done, name))
            return Moved(job.id, "done", name)
        now = self.store.now(now)
        cfg = self.store.config
        attempt = job.running_attempt
        job = job.copy()  # the claim stays as it was: a caller may try again
        job.attempts, job.exit_code, job.last_error, job.updated_at = attempt, exit_code, error, now
        decision = retry.decide(ok=False, attempts=attempt, max_retries=job.max_retries, now=now,
                                base=cfg.backoff_base, cap=cfg.backoff_max)
        if decision.state == "pending":
            job.run_at = decision.run_at
        return self._replace_then_move(claimed.path, job, decision.state)

    def _check_fence(self, path: str) -> None:
        """Has a rescuer marked the directory `path` is in? Asked before an owner records a
        result: the mark is inside the directory, so an owner whose client still reaches it by
        its old name (a cached name, after the rescuer's rename) sees it all the same."""
        directory = os.path.dirname(path)
        if os.path.lexists(os.path.join(directory, layout.FENCE_FILE)):
            raise LostOwnership(f"{directory} was fenced by a rescuer")

    def _replace_then_move(self, path: str, job: Job, state: str) -> Moved:
        """Move an owned file out of processing/<owner>/ with new content, so that its owner and a
        rescuer can never both do it: write the new content beside it (.next.), take the file by
        renaming it (.taken.: the one step that decides, as the rescuer's own take of the same
        name), then rename the new content into `state`. No name is ever renamed over, so a late
        owner cannot bring a file back that a rescuer took (as a rewrite in place could)."""
        directory = os.path.dirname(path)
        moving = layout.transit(state, os.path.basename(path))
        next_path = os.path.join(directory, moving.next_name)
        try:
            self.store.write_file(next_path, job.to_json(), durable=True)
        except FileNotFoundError:
            raise LostOwnership(f"{directory} is gone") from None
        try:
            # RACE: a rescuer may take `path` at the same moment (recovery.py); one rename wins.
            taken = fsio.move(path, os.path.join(directory, moving.taken_name))
        except FileNotFoundError:
            taken = False
        if not taken:
            fsio.unlink_quietly(next_path)
            raise LostOwnership(f"{path} was taken from us")
        return self.complete_transit(directory, moving, job)

    def complete_transit(self, directory: str, moving: layout.Transit, job: Job) -> Moved:
        """The last step of a replace-then-move (by the owner, or by a rescuer that found it
        half done): the new content into its state, then the taken file goes."""
        name = layout.pending_name_of(job) if moving.state == "pending" else layout.job_file(job.id)
        # RACE: the owner and a rescuer may both get here; the rename of .next. admits one, and
        # the other finds it gone: the move is done either way.
        fsio.move(os.path.join(directory, moving.next_name), os.path.join(self.layout.dir(moving.state), name))
        fsio.unlink_quietly(os.path.join(directory, moving.taken_name))
        return Moved(job.id, moving.state, name)

    def _rewrite_then_move(self, path: str, job: Job, state: str) -> Moved:
        """Rewrite a job file in place (temp beside it, fsync, rename over), then move it to
        `state`: for dead/ only, whose files change under the "dlq" lock alone. (Out of
        processing/, where an owner and a rescuer may race, see _replace_then_move.)"""
        directory = os.path.dirname(path)
        tmp = self.store.temp_path(directory)
        try:
            self.store.write_file(tmp, job.to_json(), durable=True)
        except FileNotFoundError:
            raise LostOwnership(f"{directory} is gone") from None
        try:
            os.rename(tmp, path)
        except FileNotFoundError:
            raise LostOwnership(f"{directory} is gone") from None
        except OSError:
            fsio.unlink_quietly(tmp)
            raise
        name = layout.pending_name_of(job) if state == "pending" else layout.job_file(job.id)
        self._move_out_of_owned(path, os.path.join(self.layout.dir(state), name))
        return Moved(job.id, state, name)

    def _move_out_of_owned(self, path: str, dest: str) -> None:
        """The last step of every transition out of an owned file; the source's existence is
        the proof of ownership."""
        try:
            moved = fsio.move(path, dest)
        except FileNotFoundError:
            moved = False
        if not moved:
            raise LostOwnership(f"{path} was taken from us")

    # ---- dead-letter queue and purge ------------------------------------------------------

    def retry_dead(self, job_ids: list[str] | None = None, *, now: float | None = None) -> list[str]:
        """Make dead jobs pending again with their attempts reset. None means every dead job."""
        now = self.store.now(now)
        with self.store.locked("dlq"):
            if job_ids is None:
                job_ids = [layout.stem(e) for e in sorted(fsio.listdir(self.layout.dead))
                           if layout.is_json_entry(e) and not layout.is_quarantine_id(e)]
            else:
                for job_id in job_ids:
                    self._check_retryable(job_id)
            done = []
            for job_id in job_ids:
                if self._retry_one(job_id, now):
                    done.append(job_id)
            fsio.fsync_dir(self.layout.pending)
            return done

    def _retry_one(self, job_id: str, now: float) -> bool:
        path = os.path.join(self.layout.dead, layout.job_file(job_id))
        try:
            job, _ = self.store.read_job(path, now=now, trusted_only=True)  # it runs next
        except FileNotFoundError:
            return False
        except InvalidJob as e:
            raise NotRetryable(f"{job_id}: the dead file cannot be retried ({e}); fix it and drop it "
                               "into pending/ again (fsck --repair quarantines it)") from None
        job.attempts, job.exit_code, job.run_at, job.updated_at = 0, None, None, now
        job.seq = self.store.next_seq()
        try:
            self._rewrite_then_move(path, job, "pending")  # safe: dead/ files change only under this lock
        except LostOwnership:
            return False
        return True

    def _check_retryable(self, job_id: str) -> None:
        if layout.is_quarantine_id(job_id):
            if self.quarantine.exists(job_id):
                raise NotRetryable(f"{job_id} is a quarantined file ({self.quarantine.reason(job_id)}); "
                                   f"fix it and drop it into pending/ again: {self.quarantine.file(job_id)}")
            raise JobNotFound(f"no job {job_id!r}")
        view = self.views.find(job_id)
        if view.state != "dead":
            raise NotRetryable(f"job {job_id} is {view.state}, not dead")

    def purge(self, state: str, *, older_than: float = 0.0, now: float | None = None) -> int:
        """Delete finished jobs (done or dead) and their output; frees their ids."""
        if state not in ("done", "dead"):
            raise InvalidJob("only done or dead jobs can be purged")
        now = self.store.fs_clock() if now is None else now  # ctime is the file system's clock
        count = 0
        with self.store.locked("dlq"), self._opened(state, "output", "ids", "quarantine") as dirs, \
                Reservations(self.store) as ids:
            finished = dirs[state]
            for entry in finished.names():
                if not layout.is_json_entry(entry):
                    continue
                try:
                    if now - finished_at(finished.lstat(entry)) < older_than:
                        continue
                except FileNotFoundError:
                    continue
                self._delete_finished(dirs, ids, state, layout.stem(entry))
                count += 1
        return count

    @contextmanager
    def _opened(self, *names: str) -> Iterator[dict[str, fsio.Directory]]:
        """Layout directories to delete in, opened without following a symlink."""
        opened: dict[str, fsio.Directory] = {}
        try:
            for name in names:
                try:
                    opened[name] = fsio.Directory(self.layout.dir(name))
                except OSError as e:
                    raise SpoolError(f"refusing to use {self.layout.dir(name)}: {e.strerror} "
                                     "(a spool directory must be a real directory)") from None
            yield opened
        finally:
            for directory in opened.values():
                directory.__exit__()

    def _delete_finished(self, dirs: dict[str, fsio.Directory], ids: Reservations, state: str,
                         job_id: str) -> None:
        """The job file, its output, its reason record or id marker: the marker made ours first,
        so that a crash half-way leaves an id that is freed at once, not one blocked for good."""
        if not layout.is_quarantine_id(job_id):
            try:
                ids.retag(job_id)
            except FileNotFoundError:
                pass  # no marker (fsck would have said): nothing to hand over
        dirs[state].unlink_quietly(layout.job_file(job_id))
        dirs["output"].unlink_quietly(f"{job_id}.log")
        if layout.is_quarantine_id(job_id):
            dirs["quarantine"].unlink_quietly(layout.job_file(job_id))
        else:
            dirs["ids"].unlink_quietly(job_id)
