"""One attempt of a claimed job: its environment, its output log, its process group recorded
where a rescuer looks, and the command run (runner.py) until it ends or must be killed."""

from __future__ import annotations

import os
import time
from typing import Callable

from ..format.states import State
from ..format import job as job_record
from ..store import attempts_log, output
from ..system import disk_full, fsio, liveness, runner
from ..format.errors import LostOwnership
from ..format.job import Job
from ..spool import Spool
from ..moves.handoff import Moved
from ..moves.cancel import CANCELLED, KillRequest
from ..moves.transitions import Claimed


def spool_env(root: str) -> dict[str, str]:
    """What tells a job or a hook its spool: SPOOLQ_SPOOL, and SPOOLQ_DIR, so that a spoolq
    command it runs (a job that queues its next step) uses this spool, not a ./spool of its own
    directory, whatever the worker was started with (a job's own `env` may still set it)."""
    return {"SPOOLQ_SPOOL": root, "SPOOLQ_DIR": root}


def run(spool: Spool, job: Job, host: str, owner: str, base_env: dict[str, str], group: GroupRecord,
        should_abort: Callable[[], str | None], slot: int = 0) -> runner.Outcome:
    """Run the job's running attempt in `slot`; its outcome (a log that cannot be made costs the
    output, not the attempt: `outcome.output_lost` says why)."""
    attempt = job.running_attempt
    cfg = spool.config
    env = {**base_env, **job.env, "SPOOLQ_JOB_ID": job.id, "SPOOLQ_ATTEMPT": str(attempt)}
    header = (f"==> {job_record.iso(time.time())} attempt {attempt} of {job.max_retries + 1} "
              f"on {host} (worker {owner}) <==\n")
    log = output.AttemptLog(spool.layout.output(job.id), header, spool.store.modes.file, cfg.max_output_bytes)
    if attempt > 1 or os.path.lexists(log.path):
        # An earlier attempt's log, or an earlier run's (requeue and `dlq retry` reset attempts and
        # keep the log), goes on: this attempt's header after theirs, so that its last marks are
        # this run's (`logs`, `show`). One lstat: a first run's log is still made only when needed.
        log.begin()

    def looked_at() -> str | None:
        log.begin()  # every LOOK_AFTER: a job that runs this long gets its log, silent or not
        return should_abort()

    outcome = runner.Outcome(False, None, "the worker failed while the job ran", 0.0)
    before_spawn = liveness.ticks_now()  # the leader starts after this and before on_spawn
    try:
        outcome = runner.run(job.command, cwd=job.cwd, env=env, timeout=job.timeout or cfg.job_timeout or None,
                             output=log.write, should_abort=looked_at, keep_children=job.keep_children,
                             shell=job.shell, poll=output.LOOK_AFTER,
                             on_spawn=lambda pid: group.running(pid, before_spawn, slot))
    finally:
        group.running(None, slot=slot)
        log.close("ok" if outcome.ok else str(outcome.error), outcome.seconds)
        outcome.output_bytes = log.received
        if log.error is not None:
            outcome.output_lost = f"cannot write output log {log.path}: {log.error.strerror or log.error}"
    return outcome


def run_and_record(spool: Spool, claimed: Claimed, kill: KillRequest, host: str, base_env: dict[str, str],
                   group: GroupRecord, slot: int, *, abort: Callable[[], str | None],
                   why_stopped: Callable[[str | None, int], str | None], give_up: Callable[[], str | None],
                   settle: Callable[[], None], log: Callable[[str], None]) -> tuple[runner.Outcome, Moved | None, float]:
    """In `slot`: run the claimed job's attempt (`base_env` and the SPOOLQ_ variables of where it
    runs; killed once `abort` says why, or a `cancel --kill` asks), then record it (`why_stopped`:
    the lease guard's word on a failure; `give_up`: why to stop trying, see record(); `settle`:
    waits for what ran beside the job and must not run beside its recording). Its
    outcome, where it moved the job (None: lost or left), and when it ended."""
    env = {**base_env, **spool_env(spool.root), "SPOOLQ_HOST": host, liveness.OWNER_ENV: claimed.owner}
    outcome = run(spool, claimed.job, host, claimed.owner, env, group,
                  lambda: CANCELLED if kill.asked() else abort(), slot)
    finished_at = time.time()
    if outcome.output_lost:
        log(f"job {claimed.job.id} attempt {claimed.job.running_attempt}: its output could not be kept: "
            f"{outcome.output_lost}")
    settle()
    outcome.error = why_stopped(outcome.error, slot) if not outcome.ok else None
    cancelled = outcome.error == CANCELLED and kill.asked()
    moved = record(spool, claimed, outcome, host, log, final=cancelled, give_up=give_up)  # a cancelled job: never retried
    if cancelled:
        kill.withdraw()
    return outcome, moved, finished_at


def fact(claimed: Claimed, outcome: runner.Outcome, moved: Moved | None, host: str, owner: str,
         claimed_at: float, finished_at: float) -> attempts_log.FinishedAttempt:
    """The attempts log's line for one recorded attempt (`moved`: where it left the job; None:
    the worker lost it)."""
    job = claimed.job
    ready = max(job.run_at or 0.0, job.updated_at or job.created_at)  # enqueued, due, or out of backoff
    where = "lost" if moved is None else {State.PENDING: "retry"}.get(moved.state, moved.state)
    return attempts_log.FinishedAttempt(job.id, job.queue, job.running_attempt, host, owner, min(ready, claimed_at), claimed_at,
                       max(claimed_at, finished_at - outcome.seconds), finished_at, where, outcome.exit_code,
                       outcome.error, outcome.output_bytes)


class GroupRecord:
    """processing/<owner>/.pgroup: the running jobs' process groups, one fixed-width record a slot
    (layout.py), where a rescuer looks should this worker die. Written in place through a
    descriptor kept open (one pwrite a job): a new file for each job would cost an inode each,
    which on ext4 is most of a short job's cost. Slots write their own records: no two pwrites
    overlap."""

    def __init__(self, path: str | None, mode: int = 0o600,
                 on_change: Callable[[int, liveness.Group | None], object] = lambda slot, group: None):
        self.fd: int | None = None
        self.on_change = on_change  # told the group too (the worker's lease guard), file or no file
        if path is None:
            return
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
        except OSError:
            pass  # best effort: without it, a rescuer cannot kill what a job leaves running

    def running(self, pid: int | None, since_tick: int = 0, slot: int = 0) -> None:
        """The leader `pid` of the job in `slot`, spawned after `since_tick` and before now
        (None: the slot runs no job)."""
        started = (since_tick, liveness.ticks_now()) if pid else None
        self.on_change(slot, (pid, started) if pid and started else None)
        if self.fd is None:
            return
        try:
            os.pwrite(self.fd, liveness.group_record(pid, started), slot * liveness.GROUP_RECORD_SIZE)
        except OSError:
            pass

    def close(self) -> None:
        fd, self.fd = self.fd, None
        fsio.close_quietly(fd)


def record(spool: Spool, claimed: Claimed, outcome: runner.Outcome, host: str, log: Callable[[str], None], *,
           final: bool = False, give_up: Callable[[], str | None] = lambda: None) -> Moved | None:
    """Record an attempt's outcome (`final`: never retried), trying again after an I/O error
    (the job stays its owner's in processing/ meanwhile; a spool out of reach that comes back finds
    it there, or taken back: LostOwnership) until `give_up` says why not to (a kill of the worker:
    `worker stop --now`, the third signal): the job is then left there unrecorded, for recovery,
    which counts the attempt, as after a crash. None if the owner lost or left the job."""
    job_id, attempt = claimed.job.id, claimed.job.running_attempt
    delay = 0.1
    while True:
        try:
            moved = spool.transitions.finish(claimed, ok=outcome.ok, exit_code=outcome.exit_code,
                                             error=outcome.error, final=final)
            say_woken(moved, log)
            return moved
        except LostOwnership:
            moved = spool.store.root_moved()
            if moved:  # the job and its log went with the spool: recovery there counts the attempt
                log(f"cannot record job {job_id} attempt {attempt}: {moved}")
                return None
            log(f"result of job {job_id} attempt {attempt} discarded: "
                "this worker lost the job (it was recovered elsewhere)")
            # The footer above is not the job's result: say so where `logs` shows it.
            output.mark(spool.layout.output(job_id), f"attempt {attempt} on {host}: "
                        "result discarded, the job was recovered elsewhere")
            return None
        except OSError as e:
            why = _asked_to_give_up(give_up)
            if why:
                log(f"cannot record job {job_id}: {_named(e)}; left unrecorded ({why}): recovery takes it back "
                    f"and counts attempt {attempt}")
                return None
            log(f"cannot record job {job_id}: {_named(e)}; retrying in {delay:.1f}s")
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _named(e: OSError) -> str:
    """An error met recording an attempt, with the cause of a full disk named (blocks or inodes)."""
    return f"{disk_full.full_cause(e)} ({e})" if disk_full.is_disk_full(e) else str(e)


def _asked_to_give_up(give_up: Callable[[], str | None]) -> str | None:
    try:
        return give_up()
    except OSError:
        return None  # the spool out of reach (its stop request with it): a signal still counts


def say_woken(moved: Moved, log: Callable[[str], None]) -> None:
    """What the finish did to the jobs waiting for it (finishing.py). One it could not judge
    costs a log line: recovery's sweep over after/ judges them later."""
    for dep, waiter, state in moved.woken:
        log(f"job {waiter}, waiting for {dep}, is now {state}")
    if moved.unwoken is not None:
        log(f"cannot wake the jobs waiting for {moved.job_id}: {moved.unwoken}")
