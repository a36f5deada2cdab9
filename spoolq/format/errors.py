"""The one error family of the core; the CLI turns these into messages and exit codes."""

from __future__ import annotations


def quoted(value: object, limit: int = 80) -> str:
    """A value as an error message quotes it: its repr, cut after `limit` characters (an id, a
    number or a duration a script got wrong can be megabytes; the message stays one short line)."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}… ({len(value)} characters)"
    shown = repr(value)
    return shown if len(shown) <= limit else shown[:limit] + "…"


class SpoolError(Exception):
    """Something the caller asked for could not be done (exit status 1)."""

    exit_code = 1


class InvalidJob(SpoolError):
    """Input that can never be a job: refused before anything is written (exit status 2)."""

    exit_code = 2


class ConfigError(SpoolError):
    """An unknown config key or an ill-typed value (exit status 2)."""

    exit_code = 2


class UntrustedFile(SpoolError):
    """A file that would make the spool's owner act was written, or could be rewritten, by
    someone else (modes.py): never believed."""


class NoSpool(SpoolError):
    """A command that creates no spool was given a path that holds none."""


class JobNotFound(SpoolError):
    """No job with that id in any state."""


class JobExists(SpoolError):
    """The id is already taken by another job."""

    def __init__(self, message: str, job_id: str | None = None):
        super().__init__(message)
        self.job_id = job_id


class NotRetryable(SpoolError):
    """The job is not in a state the requested transition starts from."""


class LostOwnership(SpoolError):
    """A worker tried to move a job it no longer owns (it was recovered elsewhere)."""


class UnsafeFileSystem(SpoolError):
    """The spool's file system cannot keep leases and fences safe across hosts (workers refuse
    to start there unless told otherwise)."""


class StorageError(SpoolError):
    """The spool's file system refused a read or a change (read-only, gone, not permitted, an
    I/O error); `errno` says which, as OSError's does."""

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno


class DiskFull(StorageError):
    """No room left on the spool's file system (ENOSPC, or the user's quota: EDQUOT)."""


class LockBusy(SpoolError):
    """A spool lock was still held by another when the wait for it ran out."""


class WaitTimeout(SpoolError):
    """A --timeout ran out (exit status 124); `job_ids`: those a wait found not finished."""

    exit_code = 124

    def __init__(self, message: str, job_ids: list[str] | None = None):
        super().__init__(message)
        self.job_ids = job_ids or []
