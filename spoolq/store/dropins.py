"""The drop-in rules: what a file another program dropped into pending/ is, judged the same way
by the worker that adopts it and by fsck that reports it (format: layout.py, "drop-in")."""

from __future__ import annotations

import enum
import os
import stat
from typing import NamedTuple

from ..format import job, layout
from ..system import fsio
from ..format.errors import InvalidJob
from ..format.job import Job
from .store import Store


class Verdict(enum.Enum):
    GONE = "gone"  # moved on while we looked
    IGNORED = "ignored"  # a directory named *.json: left alone, never a job
    REFUSE = "refuse"  # never a job (reason says why): quarantine it
    WAIT = "wait"  # does not parse yet (or has a second link), but its writer has drop_grace to finish it
    OK = "ok"  # parses: worth taking


class Inspection(NamedTuple):
    verdict: Verdict
    reason: str | None = None  # REFUSE and WAIT: why
    retry_at: float | None = None  # WAIT: when to look again (local clock)
    stat: os.stat_result | None = None  # OK: the file as inspected


def inspect(store: Store, entry: str, *, now: float | None = None,
            fs_now: float | None = None) -> Inspection:
    """What the dropped file `entry` in pending/ is, before anyone takes it.

    The writer may be another host, so a file's age is judged on the file system's clock
    (`fs_now`, else `now` when the caller fixes time, else read when first needed)."""
    path = os.path.join(store.layout.pending, entry)
    try:
        data, st = store.read_bytes(path, "dropped file")
    except FileNotFoundError:
        return Inspection(Verdict.GONE)
    except InvalidJob as e:
        if os.path.isdir(path) and not os.path.islink(path):
            return Inspection(Verdict.IGNORED)
        linked_at = _second_link_made(path)
        if linked_at is not None:
            fs_now = fs_now if fs_now is not None else now if now is not None else store.fs_clock()
            left = linked_at + store.config.drop_grace - fs_now
            if left > 0:
                return Inspection(Verdict.WAIT, reason=str(e), retry_at=store.now(now) + left)
            # RACE: the rescuer may remove the other name while this looks: a file found with one
            # link again is looked at once more, and judged as any other.
            if being_returned(store, path) or _second_link_made(path) is None:
                return Inspection(Verdict.WAIT, reason=f"{e}, the other in a rescued worker's directory: "
                                  "a return to pending/ that its rescuer completes",
                                  retry_at=store.now(now) + max(store.config.drop_grace, 1.0))
        return Inspection(Verdict.REFUSE, reason=str(e))
    untrusted = store.why_untrusted(st)
    if untrusted:
        return Inspection(Verdict.REFUSE, reason=f"dropped file {untrusted}")
    try:
        job.parse_json_object(data, "dropped file")
    except InvalidJob as e:
        fs_now = fs_now if fs_now is not None else now if now is not None else store.fs_clock()
        age = fs_now - st.st_mtime
        grace = store.config.drop_grace
        if age < grace:
            return Inspection(Verdict.WAIT, reason=str(e), retry_at=store.now(now) + grace - age)
        return Inspection(Verdict.REFUSE, reason=f"malformed: {e}")
    return Inspection(Verdict.OK, stat=st)


def _second_link_made(path: str) -> float | None:
    """When a regular file with more than one link got its last one (its ctime), else None.

    A Maildir deliverer (safecat) links its tmp/ file to its final name, then unlinks the tmp/
    name: for that moment the file has two links. Nothing is read from such a file; it is
    looked at again once drop_grace has passed since the link, and quarantined only if it still
    has two (a hard link someone else made to a file of the owner's would otherwise be run)."""
    st = fsio.lstat_if_there(path)
    if st is None or not stat.S_ISREG(st.st_mode) or st.st_nlink < 2:
        return None
    return st.st_ctime


def being_returned(store: Store, path: str) -> bool:
    """Whether the file at `path` is also a drop-in in a fenced directory (processing/<rescuer>~
    <owner>/~<name>): recovery's return of a drop-in its adopter died holding, cut between its
    link into pending/ and its unlink (renameat2 refused: FUSE, NFS, GlusterFS). The rescuer that
    drains that directory next removes the other name (Recovery._return_dropin); meanwhile the
    file waits, where after drop_grace it was quarantined, the job never run. On another host
    that next rescuer comes only once the dead one's lease has run out, long after drop_grace.
    Only the owner makes names in processing/. A member of a shared spool who links a drop-in of
    their own from there into pending/ makes it wait until that rescuer drains, no more."""
    st = fsio.lstat_if_there(path)
    if st is None:
        return False
    processing = store.layout.processing
    for fenced in fsio.listdir(processing):
        if layout.RESCUE_SEP not in fenced:
            continue
        directory = os.path.join(processing, fenced)
        for entry in fsio.listdir(directory):
            if entry.startswith(layout.ADOPT_PREFIX):
                there = fsio.lstat_if_there(os.path.join(directory, entry))
                if there is not None and os.path.samestat(there, st):
                    return True
    return False


def job_from(store: Store, data: bytes, entry: str, *, now: float, seq: int | None = None) -> Job:
    """The job a dropped file describes: the `id` inside wins, else the file name if it is a
    valid id, else a fresh one. InvalidJob if its fields are not a job's."""
    spec = job.parse_json_object(data, "dropped file")
    if spec.get("id") is None:
        name = layout.stem(entry)
        spec["id"] = name if job.valid_id(name) else store.fresh_id()
    return job.from_dict(spec, now=now, default_max_retries=store.config.max_retries, seq=seq)


def rejection(store: Store, entry: str, *, now: float, fs_now: float) -> str | None:
    """Why a worker would quarantine this dropped file, or None (a good drop-in, a directory, a
    file still being written, or one gone meanwhile). For fsck: adopt() decides the same way."""
    found = inspect(store, entry, now=now, fs_now=fs_now)
    if found.verdict is Verdict.REFUSE:
        return found.reason
    if found.verdict is not Verdict.OK:
        return None
    path = os.path.join(store.layout.pending, entry)
    try:
        data, _ = fsio.read_regular(path, job.MAX_JOB_BYTES)
        dropped = job_from(store, data, entry, now=now)
    except FileNotFoundError:
        return None
    except (InvalidJob, ValueError, OSError) as e:
        return f"malformed: {e}"
    if not os.path.lexists(store.layout.id_marker(dropped.id)):
        return None
    if not os.path.lexists(path):
        return None  # RACE: a worker adopted it (and made the marker) while we looked
    return duplicate_reason(dropped.id)


def duplicate_reason(job_id: str) -> str:
    return f"duplicate: a job with id {job_id!r} already exists"
