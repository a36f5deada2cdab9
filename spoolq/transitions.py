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

Moves out of processing/ (finish, adopt, recover) follow takes.py: why no file there is ever
renamed over, and how an owner and a rescuer never both move one.
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
from .takes import Moved, Takes
from .views import Views, finished_at


@dataclass
class Claimed:
    """A job this owner holds in processing/<owner>/; its running attempt is job.running_attempt."""

    job: Job
    owner: str
    path: str
    # Once its file is taken for a move out (replace-then-move), what is left to do: a retry of
    # finish() after a passing I/O error only completes that move.
    transit: tuple[str, layout.Transit, Job] | None = None


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
        self.takes = Takes(store)

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
        """Move a dropped file into our own directory; None if another worker took it first. A
        long name is taken under a short one: the moves out of processing/ (takes.py) add to it."""
        short = entry if len(entry.encode()) <= 160 else f"long-name.{layout.random_hex(8)}.json"
        adopt_path = os.path.join(self.layout.owned(owner), layout.ADOPT_PREFIX + short)
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
                moving = self.takes.take_with(adopt_path, job, "pending")
            except BaseException:
                ids.release(job.id)
                raise
        # Taken: the job exists (as .next.), its marker must stay; should the last rename fail,
        # this worker's own recovery sweep completes it.
        moved = self.takes.complete(os.path.dirname(adopt_path), moving, job)
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
        # A fenced owner whose client still knows its directory's old name lands its claim in the
        # fenced directory: it must not run the job, which the rescuer puts back (and counts).
        self.takes.check_fence(path)
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
               now: float | None = None, rescuing: bool = False, final: bool = False) -> Moved:
        """Record an attempt's outcome and move the job on: done, pending again (backoff) or dead
        (`final`: a failure never retried, a cancelled job). An owner raises LostOwnership once
        fenced; a rescuer (`rescuing`) works inside the fence."""
        if claimed.transit is not None:
            return self.takes.complete(*claimed.transit)
        job = claimed.job
        if not rescuing:
            self.takes.check_fence(claimed.path)
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
        if final:
            decision = retry.Decision("dead", None)
        if decision.state == "pending":
            job.run_at = decision.run_at
        moving = self.takes.take_with(claimed.path, job, decision.state)
        claimed.transit = (os.path.dirname(claimed.path), moving, job)
        return self.takes.complete(*claimed.transit)

    def _rewrite_then_move(self, path: str, job: Job, state: str) -> Moved:
        """Rewrite a job file in place (temp beside it, fsync, rename over), then move it to
        `state`: for dead/ only, whose files change under the "dlq" lock alone. (Out of
        processing/, where an owner and a rescuer may race, see takes.py.)"""
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
