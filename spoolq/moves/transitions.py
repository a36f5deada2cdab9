"""Transitions: every rename of a job file, and nothing else (format: layout.py).

A job's state is the directory its file is in; each transition below is one rename (a few are
a rewrite in place first). "Proof" is what shows the caller still owns the file at that
moment; losing it is an answer (None, or LostOwnership), never a half-done move.

===========  ============================================  ==========  ===================  ==================================  ===========================
transition   from -> to                                    who         how                  proof                               fsync
===========  ============================================  ==========  ===================  ==================================  ===========================
publish      (caller) -> pending/<canonical>               enqueue     write tmp/, (a       ids/<id> linked (exclusive)         each file (a batch's
             (enqueue.py)                                                  batch: its plan),                                    in parallel), the plan,
                                                                           rename                                               pending/, ids/
collect      maildir/new/<any> -> pending/<any>.json       worker      rename, never        the rename won                      pending/
             (maildir.py)                                              replacing
adopt        pending/<drop-in> -> processing/<o>/~<drop>   worker      rename, never        the first rename won; ids/<id>      the new content,
             -> pending/<canonical>                                    replacing; replace   linked (exclusive)                  pending/
                                                                       then move
claim        pending/<canonical> -> processing/<o>/<id>    worker      rename, never        the rename won                      none
                                                                       replacing
finish ok    processing/<o>/<id> -> done/<id>              worker      rename only          no fence mark; the rename won       none
             (finishing.py)
finish fail  processing/<o>/<id> -> pending/<due later>    worker,     replace then move:   no fence mark (owner); the take     the new content
             or dead/<id> (finishing.py)                   recovery    .next. written, take (a rename of the file itself) won
                                                                       to .taken., move
recover      processing/<o>/ -> processing/<r>~<o>/,       any owner,  mark .fenced, then   that rename won; per file, as       as finish fail
             then each job as "finish fail" (recovery.py)  fsck        directory rename     finish fail
retry,       done|dead/<id> -> pending/<canonical>         dlq retry,  rewrite, rename      lock "dlq"                          the rewrite, pending/
requeue      (finished_jobs.py)                                 requeue
purge        done|dead/<id> -> (deleted) (finished_jobs.py)     purge       unlink file, output  lock "dlq"                          none
                                                                       log, ids/<id>
discard      pending/<canonical> -> (deleted)              purge       unlink file, then    the unlink won against claims       none
             (finished_jobs.py)                                             output log, ids/<id>
cancel       pending/<canonical> -> processing/<c>/        cancel      as finish fail, the  the take (a rename of the file      as finish fail
             .taken. -> dead/<id> (cancel.py,                          take from pending/   itself) won against claims
             finishing.py)
kill         processing/<o>/<id> -> dead/<id>              its owner   finish fail, never   as finish fail                      as finish fail
             (cancel.py: .cancel.<id> asked for it)        or rescuer  retried
release      waiting/<id> -> pending/<canonical>           a judge     rename               the rename won                      none
             (dependencies.py)                             (below)
die          waiting/<id> -> processing/<j>/.taken. ->     a judge     as cancel            the take won                        as finish fail
             dead/<id> (dependencies.py, finishing.py)
quarantine   anywhere -> dead/+<qid>                       adopt,      rename               the rename won                      reason record, dead/
                                                           claim, fsck
===========  ============================================  ==========  ===================  ==================================  ===========================

A new transition (dependencies, queues) is a row here and a method below (or in a module of
its own, named in the row).

Every move into done/ or dead/ (finish, recover, cancel, kill, die) ends in finishing.py, which
then judges the jobs waiting for the job (dependencies.py: release or die, and theirs in turn):
that is the core's consequence of a finish, so no caller can forget it; a judge is whoever
finished the job, an enqueuer whose job waits for a finished one, or fsck. The hooks, the
attempts log and the slots stay the worker's (finishing.py says why). Quarantine is no job.

Moves out of processing/ (finish, adopt, recover) follow handoff.py: why no file there is ever
renamed over, and how an owner and a rescuer never both move one.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from typing import Callable, NamedTuple

from ..format.states import FINISHED, State
from ..format import layout, retry
from ..store import dropins
from ..system import fsio
from ..format.errors import InvalidJob, JobNotFound, LostOwnership
from ..format.job import Job
from ..store.ids import Reservations
from ..store.owners import Owners
from .enqueue import Publisher
from .finishing import Finishing
from ..store.quarantine import Quarantine
from ..store.store import Store
from .handoff import Moved, Handoff
from ..reading.views import Views


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
        self.takes = Handoff(store)

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
        long name is taken under a short one: the moves out of processing/ (handoff.py) add to it."""
        short = entry if len(entry.encode()) <= 160 else f"long-name.{layout.random_hex(8)}.json"
        while True:
            adopt_path = os.path.join(self.layout.owned(owner), layout.ADOPT_PREFIX + short)
            try:
                # RACE: several workers may see the same drop-in; this rename admits one. It never
                # replaces a drop-in of that name an adoption cut short left here (a disk full),
                # which anyone in pending/'s group sees and could name theirs after.
                source = os.path.join(self.layout.pending, entry)
                if not fsio.move_no_replace(source, adopt_path, shared_source=True):
                    return None
            except FileExistsError:
                short = f"same-name.{layout.random_hex(8)}.json"
                continue
            except FileNotFoundError:
                raise LostOwnership(f"{self.layout.owned(owner)} is gone") from None
            return adopt_path

    def _publish_adopted(self, adopt_path: str, entry: str, arrived_ns: int, now: float) -> Adoption:
        try:
            data, st = self.store.read_bytes(adopt_path, "dropped file")
            # RACE: the file is still its writer's: between inspect() and this read they may have
            # opened it to their group (chmod), and a member rewritten it. What is read is judged
            # again, by the read's own fstat, so what runs is what was judged.
            untrusted = self.store.why_untrusted(st)
            if untrusted:
                self.quarantine.put(adopt_path, entry, f"dropped file {untrusted}", now)
                return Adoption(Adopted.QUARANTINED, reason=f"dropped file {untrusted}")
            job = dropins.job_from(self.store, data, entry, now=now, seq=arrived_ns)
        except FileNotFoundError:  # our directory was fenced (a rescuer gives the file back): not malformed
            raise LostOwnership(f"{adopt_path} was taken from us") from None
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
                state = self._waiting_or_pending(job)
            except InvalidJob as e:
                ids.release(job.id)
                self.quarantine.put(adopt_path, entry, f"malformed: {e}", now)
                return Adoption(Adopted.QUARANTINED, job_id=job.id, reason=str(e))
            try:
                moving = self.takes.take_with(adopt_path, job, state)
            except BaseException:
                if state == State.WAITING:
                    self.publisher.deps.forget(job.id, job.after)  # an edge outlives no id
                ids.release(job.id)
                raise
        # Taken: the job exists (as .next.), its marker must stay; should the last rename fail,
        # this worker's own recovery sweep completes it.
        moved = self.takes.complete(os.path.dirname(adopt_path), moving, job)
        if moved.state == State.PENDING:
            self.store.shards.sync([moved.name])
        else:
            fsio.fsync_dir(self.layout.dir(moved.state))
        if moved.state == State.WAITING:
            self.publisher.deps.settle([job.id], owner)  # what it waits for may have finished meanwhile
        return Adoption(Adopted.PUBLISHED, job_id=job.id, moved=moved)

    def _waiting_or_pending(self, job: Job) -> str:
        """Where an adopted job goes: waiting/ (its edges made first, dependencies.py) if it waits for
        jobs not done yet. InvalidJob for an id that is no job (the drop-in is quarantined)."""
        if not job.after:
            return State.PENDING
        deps = self.publisher.deps
        for dep in job.after:
            if deps.state_of(dep) == "unfinished" and not self.views.can_finish(dep):
                raise InvalidJob(f"after: no job {dep!r}")
        unfinished = deps.unfinished(job)
        if not unfinished:
            return State.PENDING
        try:
            deps.make_edges(job)  # every one, done ones too: purge keeps what is waited for
        except JobNotFound as e:
            raise InvalidJob(str(e)) from None
        return State.WAITING

    # ---- claim and finish ----------------------------------------------------------------

    def claim(self, entry: str, owner: str, *, now: float | None = None,
              said: Callable[[str, str], object] = lambda entry, reason: None) -> Claimed | None:
        """Take a canonical pending job for `owner`. None if another worker took it first or the
        file was quarantined (`said` is told its name and why). Raises LostOwnership if this
        owner was recovered elsewhere."""
        parsed = layout.parse_pending(entry)
        if parsed is None:
            return None
        owned = self.layout.owned(owner)
        path = f"{owned}/{layout.job_file(parsed.job_id)}"
        source = f"{self.layout.pending}/{entry}"
        try:
            if not fsio.move_no_replace(source, path, shared_source=True):
                return None  # RACE: another worker renamed it first; losing is an answer, not an error
        except FileExistsError:
            # RACE: a second pending file with the id of a job this owner runs now (another slot's):
            # anyone who may write into pending/ can name one so, and a rename over ours would drop
            # the running job's file. It is a copy, never a job: it goes to quarantine from pending/.
            self._quarantine(source, entry, f"duplicate: job {parsed.job_id} is already running here",
                             self.store.now(now), said)
            return None
        except FileNotFoundError:
            raise LostOwnership(f"{owned} is gone") from None
        # A fenced owner whose client still knows its directory's old name lands its claim in the
        # fenced directory: it must not run the job, which the rescuer puts back (and counts).
        self.takes.check_fence(path)
        now = self.store.now(now)
        try:
            job, _ = self.store.read_job(path, now=now, expect_id=parsed.job_id, trusted_only=True)
        except InvalidJob as e:
            self._quarantine(path, entry, f"malformed job file: {e}", now, said)
            return None
        finished = self._finished_copy(parsed.job_id)
        if finished:
            # Never run (and then overwrite) a job that has finished: this file is a copy of it.
            self._quarantine(path, entry, f"duplicate: job {parsed.job_id} is already {finished}", now, said)
            return None
        return Claimed(job, owner, path)

    def _quarantine(self, path: str, entry: str, reason: str, now: float,
                    said: Callable[[str, str], object]) -> None:
        self.quarantine.put(path, entry, reason, now)
        said(entry, reason)

    def _finished_copy(self, job_id: str) -> str | None:
        name = layout.job_file(job_id)
        for state in FINISHED:
            if fsio.present(f"{self.layout.dir(state)}/{name}"):
                return state
        return None

    @property
    def finishing(self) -> Finishing:
        """Every move into done/ or dead/, and the waiters it wakes (finishing.py)."""
        return self.publisher.deps.finishing

    def finish(self, claimed: Claimed, *, ok: bool, exit_code: int | None, error: str | None,
               now: float | None = None, rescuer: str | None = None, final: bool = False) -> Moved:
        """Record an attempt's outcome and move the job on: done, pending again (backoff) or dead
        (`final`: a failure never retried, a cancelled job); done or dead, the jobs waiting for it
        are judged (finishing.py). An owner raises LostOwnership once fenced; a `rescuer` (the
        owner that recovers it) works inside the fence."""
        judge = rescuer or claimed.owner  # a waiter that dies is taken into a live owner's directory
        if claimed.transit is not None:
            return self.finishing.complete(*claimed.transit, judge)
        job = claimed.job
        if rescuer is None:
            self.takes.check_fence(claimed.path)
        if ok:
            # The success is the move itself: no rewrite means no temp file, no fsync, no freed
            # inode; readers add this attempt back (JobView).
            return self.finishing.succeed(claimed.path, job.id, judge)
        now = self.store.now(now)
        cfg = self.store.config
        attempt = job.running_attempt
        job = job.copy()  # the claim stays as it was: a caller may try again
        job.attempts, job.exit_code, job.last_error, job.updated_at = attempt, exit_code, error, now
        decision = retry.decide(ok=False, attempts=attempt, max_retries=job.max_retries, now=now,
                                base=cfg.backoff_base, cap=cfg.backoff_max)
        if final:
            decision = retry.Decision(State.DEAD, None)
        if decision.state == State.PENDING:
            job.run_at = decision.run_at
        moving = self.takes.take_with(claimed.path, job, decision.state)
        claimed.transit = (os.path.dirname(claimed.path), moving, job)
        return self.finishing.complete(*claimed.transit, judge)
