"""The public face of a spool: ``Spool(path).enqueue/find/list_jobs/counts/...`` for programs and
the CLI. It holds one of each room and delegates; the worker, supervisor and fsck use the rooms
(``spool.store``, ``.owners``, ``.views``, ``.transitions``, ``.recovery``) directly."""

from __future__ import annotations

import os

from .format.job import Job
from .format.lean import made_once
from .format.layout import host_name
from .store.store import Store

TYPE_CHECKING = False  # typing is not worth loading on one enqueue's path
if TYPE_CHECKING:
    from typing import Any, Callable, Collection, Iterable, TypeVar

    Method = TypeVar("Method", bound=Callable[..., Any])

    from .store.maildir import Stray
    from .moves.cancel import Result as CancelResult
    from .store.config import Config
    from .moves.dependencies import Dependencies
    from .moves.finished_jobs import Finished
    from .store.owners import Owners, WorkerInfo
    from .store.pause import Pauses
    from .store.slots import Slots
    from .reading.stats import Stats
    from .moves.enqueue import Publisher
    from .store.quarantine import Quarantine
    from .moves.recovery import Recovery
    from .moves.transitions import Transitions
    from .reading.counts import Counts
    from .reading.views import JobView, Views


def _io_errors(what: str) -> Callable[[Method], Method]:
    """A public method whose OSError (a full disk, a read-only or vanished file system) reaches
    its caller as the SpoolError it catches by type (store.io_error: DiskFull, StorageError),
    never as a bare OSError: a program catches one family, as the CLI prints one line."""

    def wrap(method: Method) -> Method:
        def wrapped(self: Spool, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except OSError as e:
                from .store.store import io_error

                self.store.refuse_if_no_spool()  # Spool(path, create=False) of a wrong path: said so
                raise io_error(f"cannot {what}", e, nothing_written=False) from None

        # functools.wraps' work by hand: the plain enqueue loads this module, and never functools
        for name in ("__name__", "__qualname__", "__doc__", "__module__"):
            setattr(wrapped, name, getattr(method, name))
        wrapped.__wrapped__ = method  # type: ignore[attr-defined]  # help() and inspect show the method's own signature
        return wrapped  # type: ignore[return-value]

    return wrap


class Spool:
    """A spool directory: every room of it, each made (and its module imported) when first used,
    so that a command pays only for the rooms it uses."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True):
        self.store = Store(path)
        self.layout = self.store.layout
        if create:
            self.init()

    @made_once
    def quarantine(self) -> Quarantine:
        from .store.quarantine import Quarantine

        return Quarantine(self.store)

    @made_once
    def owners(self) -> Owners:
        from .store.owners import Owners

        return Owners(self.store)

    @made_once
    def views(self) -> Views:
        from .reading.views import Views

        return Views(self.store, self.owners, self.quarantine)

    @made_once
    def publisher(self) -> Publisher:
        from .moves.enqueue import Publisher

        return Publisher(self.store, lambda: self.owners, lambda: self.views)

    @made_once
    def transitions(self) -> Transitions:
        from .moves.transitions import Transitions

        return Transitions(self.store, self.owners, self.quarantine, self.views, self.publisher)

    @made_once
    def finished(self) -> Finished:
        from .moves.finished_jobs import Finished

        return Finished(self.store, self.views, self.quarantine, lambda job_id: self.deps.waiters_of(job_id))

    @made_once
    def deps(self) -> Dependencies:
        return self.publisher.deps

    @made_once
    def slots(self) -> Slots:
        from .store.slots import Slots

        return Slots(self.store)

    @made_once
    def pauses(self) -> Pauses:
        from .store.pause import Pauses

        return Pauses(self.store)

    @made_once
    def recovery(self) -> Recovery:
        from .moves.recovery import Recovery

        return Recovery(self.store, self.owners, self.quarantine, self.transitions)

    @property
    def root(self) -> str:
        return self.store.root

    @property
    def config(self) -> Config:
        return self.store.config

    def init(self) -> None:
        """Create the layout; idempotent."""
        self.store.init()

    @_io_errors("change the settings")
    def set_config(self, key: str, value: Any) -> Config:
        return self.store.set_config(key, value)

    # ---- writing -------------------------------------------------------------------------

    def make_job(self, spec: dict[str, Any], *, now: float | None = None) -> Job:
        """Validate a job spec and fill in what spoolq decides (id, seq, defaults). Writes nothing."""
        return self.store.make_job(spec, now=now)

    def enqueue(self, spec: dict[str, Any] | Job, *, now: float | None = None) -> Job:
        """Publish one job durably: when this returns, the job survives a power cut."""
        return self.enqueue_many([spec], now=now)[0]

    def enqueue_many(self, specs: Iterable[dict[str, Any] | Job], *, now: float | None = None,
                     progress: Callable[[int], Any] | None = None,
                     announce: Callable[[], Any] | None = None,
                     skip_existing: set[str] | None = None) -> list[Job]:
        """Validate every spec, then publish them all or none (see Publisher.publish); with
        `skip_existing`, jobs whose id is taken are left out and their ids added to it. What the
        file system refuses is a StorageError (Publisher); an error of `progress` or `announce`
        reaches the caller as it was raised."""
        from .format.errors import StorageError

        jobs = [s if isinstance(s, Job) else self.make_job(s, now=now) for s in specs]
        self.check_after(jobs)
        try:
            return self.publisher.publish(jobs, progress=progress, announce=announce, skip_existing=skip_existing)
        except StorageError:
            self.store.refuse_if_no_spool()  # Spool(path, create=False) of a wrong path: said so
            raise

    def check_after(self, jobs: list[Job]) -> None:
        """Every id a job waits for is a job, or one of `jobs`: else InvalidJob (nothing written)."""
        from .format.errors import InvalidJob

        mine = {job.id: job.after for job in jobs}
        for job in jobs:
            for dep in job.after:
                if dep in mine or self.deps.state_of(dep) != "unfinished":
                    continue  # a dep that is done or dead is known without a search
                if not self.views.can_finish(dep):
                    raise InvalidJob(f"after: no job {dep!r}")
        cycle = _a_cycle(mine)
        if cycle:
            raise InvalidJob(f"after: {' -> '.join(cycle)} wait for each other: none would ever run")

    @_io_errors("retry")
    def retry_dead(self, job_ids: Iterable[str] | None = None) -> list[str]:
        """Make dead jobs pending again with their attempts reset. None means every dead job."""
        return self.finished.retry_dead(None if job_ids is None else _ids(job_ids))

    @_io_errors("purge")
    def purge(self, state: str, *, older_than: float = 0.0) -> int:
        """Delete finished jobs (done or dead), or jobs not started (pending: scheduled ones too),
        and their output; frees their ids."""
        return self.finished.purge(state, older_than=older_than)

    @_io_errors("purge")
    def purge_ids(self, job_ids: Iterable[str]) -> dict[str, str | None]:
        """Delete these finished or not started jobs and their output; per id, None once purged,
        else why not."""
        return self.finished.purge_ids(_ids(job_ids))

    @_io_errors("requeue")
    def requeue(self, job_ids: Iterable[str]) -> dict[str, str | None]:
        """Make done or dead jobs pending again, attempts reset, at the back of their priority;
        per id, None once requeued, else why not."""
        return self.finished.requeue(_ids(job_ids))

    @_io_errors("pause")
    def pause(self, queue: str | None = None) -> frozenset[str]:
        """Workers everywhere stop claiming (from `queue`, or from all); running jobs finish.
        Returns what is paused now."""
        return self.pauses.pause(queue)

    @_io_errors("resume")
    def resume(self, queue: str | None = None) -> frozenset[str]:
        return self.pauses.resume(queue)

    def paused(self) -> frozenset[str]:
        """The paused queues: {"*"} for all of them, empty when nothing is paused."""
        return self.store.unless_no_spool(self.pauses.paused())

    @_io_errors("set a concurrency limit")
    def set_concurrency(self, queue: str, limit: int) -> dict[str, int]:
        """At most `limit` jobs of `queue` run at once, on every host together (0: no limit), as
        `spoolq queue set QUEUE --concurrency N`. Returns every queue's limit now."""
        from .format.errors import ConfigError
        from .format.job import check_queue, is_int
        from .store.slots import MAX_LIMIT

        check_queue(queue)
        if not is_int(limit) or not 0 <= limit <= MAX_LIMIT:
            raise ConfigError(f"concurrency: {limit!r} is not an integer from 0 (no limit) to {MAX_LIMIT}")
        self.slots.set_limit(queue, limit)
        return self.concurrency()

    def concurrency(self) -> dict[str, int]:
        """Each limited queue's concurrency limit (`spoolq queue list`'s LIMIT)."""
        return self.store.unless_no_spool(self.slots.limits())

    @_io_errors("cancel")
    def cancel(self, job_ids: Iterable[str], *, kill: bool = False, wait: float = 30.0) -> list[CancelResult]:
        """Cancel jobs (cancel.py): those not started go to dead; with `kill`, running ones are
        killed by their workers, waited for up to `wait` seconds."""
        from .moves.cancel import Canceller

        canceller = Canceller(self.store, self.owners, self.views, self.transitions.takes, self.deps)
        return canceller.cancel(_ids(job_ids), kill=kill, wait=wait)

    @_io_errors("ask the workers to stop")
    def request_stop(self, *, kill_jobs: bool = False, at: float | None = None) -> None:
        """Ask every worker of this spool, on every host, started before `at` (default: now), to
        stop after its current job (with `kill_jobs`, at once: the running attempts are killed
        and count)."""
        self.owners.request_stop(kill_jobs=kill_jobs, at=at)

    def check_filesystem(self, *, allow_unsafe: bool = False, log: Callable[[str], None] | None = None) -> None:
        """Raise UnsafeFileSystem if this spool's file system cannot keep leases and fences safe
        across hosts (a GlusterFS client with its caches on). With `allow_unsafe` the reason is
        only logged: the operator runs one host, or accepts the risk."""
        from .system import mounts
        from .format.errors import UnsafeFileSystem

        why = mounts.unsafe_because(self.root)
        if why is None:
            return
        if not allow_unsafe:
            raise UnsafeFileSystem(f"{why}; see docs/hosts.md (Running on several hosts), or pass --allow-unsafe-fs")
        if log is not None:
            log(f"warning: {why} (allowed by --allow-unsafe-fs)")

    # ---- reading -------------------------------------------------------------------------

    @_io_errors("read the spool")
    def find(self, job_id: str) -> JobView:
        """The job's view: `.state`, `.job` (its fields; None for a quarantined file), `.to_dict()`.
        JobNotFound if no job has the id; NoSpool if there is no spool (Spool(path, create=False))."""
        from .format.errors import JobNotFound

        try:
            return self.views.find(job_id)
        except JobNotFound:
            self.store.refuse_if_no_spool()
            raise

    @_io_errors("read the spool")
    def wait(self, job_ids: Iterable[str], *, timeout: float | None = None) -> list[JobView]:
        """Block until every one of the jobs is done or dead; their views, in the order given
        (`.state`, and `.job`: `exit_code`, `last_error`, `attempts`; the output: output_path).
        Raises JobNotFound for an id no job has (or one purged meanwhile), and WaitTimeout once
        `timeout` seconds have passed (None: no limit; its `job_ids`: those not finished). Workers run the jobs: this only looks."""
        from .reading import waits

        return waits.until_finished(self.find, _ids(job_ids), timeout)

    @_io_errors("read the spool")
    def list_jobs(self, state: str | None = None, limit: int | None = None) -> list[JobView]:
        """Views of the jobs in `state` (one of STATES; None: all), in `spoolq list`'s order."""
        from .format.errors import InvalidJob, quoted
        from .format.states import STATES

        if state is not None and state not in STATES:
            raise InvalidJob(f"no state {quoted(state)}: a state is one of {', '.join(STATES)}")
        views = self.views.jobs(state, limit)
        if not views:
            self.store.refuse_if_no_spool()
        return views

    @_io_errors("read the spool")
    def counts(self) -> Counts:
        self.store.refuse_if_no_spool()
        return self.views.counts()

    @_io_errors("read the spool")
    def strays(self) -> list[Stray]:
        """The files in pending/ or the Maildir that no worker will ever take (maildir.py)."""
        from .store import maildir

        return maildir.strays(self.layout, self.store.now())

    @_io_errors("read the spool")
    def stats(self, window: float, *, queue: str | Collection[str] | None = None, now: float | None = None) -> Stats:
        """What the spool did in the last `window` seconds (stats.py), from the attempts log: of
        every queue, or of `queue` (a name, or several)."""
        from .reading import stats
        from .store import attempts_log

        self.store.refuse_if_no_spool()
        until = self.store.now(now)
        facts = attempts_log.read(self.layout.dir("events"), until - window, until)
        return stats.collect(facts, self.views.ready_since(until), since=until - window, until=until, queue=queue)

    @_io_errors("read the spool")
    def workers(self, *, role: str | None = None, live: bool = True) -> list[WorkerInfo]:
        return self.store.unless_no_spool(self.owners.workers(role=role, live=live))

    def output_path(self, job_id: str) -> str:
        """Where the job's output log is: a file that may not exist (see `output`)."""
        return self.layout.output(job_id)

    @_io_errors("read the spool")
    def output(self, job_id: str) -> bytes | None:
        """The job's captured stdout and stderr, every attempt marked, as `spoolq logs` prints
        them; None while it has no log (not started, or done at once without a word). JobNotFound
        for an id no job has. A symlink, fifo or hard link at the log's path, or a log not of the
        spool's owner, is never read (as by `logs`)."""
        from .store import output

        log = output.open_log(self.output_path(self.find(job_id).id), owner=self.store.uid)
        if log is None:
            return None
        with log:
            return log.read()

    def worker_log(self) -> str:
        """Where detached workers of this host write their log."""
        return self.layout.worker_log(host_name())


def _ids(job_ids: Iterable[str]) -> list[str]:
    """The ids a method was given; one id alone, as a str, is that id (a str is an iterable of
    ids too, of one letter each: cancel("a1") cancelled jobs 'a' and '1')."""
    return [job_ids] if isinstance(job_ids, str) else list(job_ids)


def _a_cycle(after: dict[str, list[str]]) -> list[str] | None:
    """A cycle among new jobs waiting for each other (older jobs cannot wait for new ones)."""
    done: set[str] = set()
    for start in after:
        path: list[str] = []
        on_path: set[str] = set()
        stack = [(start, iter(after.get(start, [])))]
        if start in done:
            continue
        path.append(start)
        on_path.add(start)
        while stack:
            node, deps = stack[-1]
            dep = next((d for d in deps if d in after), None)
            if dep is None:
                stack.pop()
                done.add(node)
                on_path.discard(path.pop())
                continue
            if dep in on_path:
                return path[path.index(dep):] + [dep]
            if dep not in done:
                stack.append((dep, iter(after[dep])))
                path.append(dep)
                on_path.add(dep)
    return None
