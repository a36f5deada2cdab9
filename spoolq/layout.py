"""The on-disk format of a spool: directories, file-name grammar, temp names.

This docstring is the format specification; another program can drop jobs and read
state from it alone.

Directories under the spool root ``S``::

    S/pending/      jobs waiting to run: ready now, or scheduled for later
    S/processing/   one sub-directory per owner (a worker); a job being run is
                    S/processing/<owner>/<id>.json
    S/done/         S/done/<id>.json    finished with exit status 0
    S/dead/         S/dead/<id>.json    out of attempts; S/dead/+<qid>.json is a
                    quarantined file (bytes exactly as received), with its reason in
                    S/quarantine/<qid>.json
    S/quarantine/   reason records for quarantined files (JSON objects)
    S/ids/<id>      an empty file per job id in use: ids are unique across all states
    S/output/<id>.log   captured stdout+stderr of every attempt, with marker lines
    S/workers/<owner>.json  a live worker's registration; its mtime is its heartbeat
    S/control/stop  a stop request: workers started before its mtime stop gracefully
    S/tmp/          temp files, invisible to every reader
    S/log/          worker and supervisor logs
    S/locks/        lock files (existence locks, see config.py)
    S/config.json   settings (see config.py)

A job is one UTF-8 JSON object in one file. Fields: ``id``, ``command`` (a ``/bin/sh -c``
string), ``priority`` (integer, higher first), ``max_retries``, ``timeout`` (seconds or
null), ``run_at`` (ISO 8601 UTC or null), ``cwd``, ``env`` (string map),
``created_at``/``updated_at`` (ISO 8601 UTC), ``attempts`` (finished attempts),
``exit_code``, ``last_error``, ``seq`` (the FIFO position). Unknown fields are kept.

State is the directory a job's file is in; every state change is one ``rename(2)``
inside the spool. ``scheduled`` is not a directory: it is a pending job whose due time
(in its name) is still in the future.

Names in ``pending/``:

* canonical, written only by spoolq: ``PPPPPPPPPP.SSSSSSSSSSSSSSSSSSS.DDDDDDDDDDDDD@<id>.json``
  where ``P`` is ``1000000000 - priority`` (10 digits), ``S`` the sequence number
  (19 digits, nanoseconds at enqueue), ``D`` the due time in epoch milliseconds (13
  digits, 0 = now). Sorting ready names as strings gives the run order.
* drop-in: any other ``*.json`` name not starting with ``.``. A worker reads it, checks
  it, gives it an id (the ``id`` field, else the file name if it is a valid id, else a
  generated one) and renames it to a canonical name, in order of arrival (ctime).
  Names starting with ``.`` are invisible (stage there, then rename).  Names not ending in
  ``.json``, and directories, are left alone. A ``*.json`` entry that is not a regular, singly
  linked file owned by the spool's owner or a ``trusted_uids`` uid (a symlink, fifo, hard link,
  another user's file) is never read as a job: it is quarantined, a symlink's target untouched.

Publishing a job (the drop-in protocol for another program): write the object to a
name starting with ``.`` in ``pending/`` (or anywhere on the same file system), fsync
it, ``rename`` it to ``<something>.json`` in ``pending/``, fsync ``pending/``.
A plain ``cp`` works too: a file that does not parse yet is given ``drop_grace``
seconds since its last change before it is quarantined as malformed.

Owners: an owner token is ``<host>-<pid>-<random>``. When an owner is found dead,
whoever recovers it first renames ``processing/<owner>`` to ``processing/<rescuer>~<owner>``
(one rename: the fence), so a frozen owner that wakes up can no longer touch its jobs.

Assumptions: one file system for the whole spool (rename is atomic and never crosses
devices); names up to 255 bytes; ``O_EXCL`` create is atomic (true of local file
systems and NFSv3+); mtime of a file just touched reads the file system's own clock.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .job import Job

STATE_DIRS = ("pending", "processing", "done", "dead")
STATES = ("pending", "scheduled", "processing", "done", "dead")
OTHER_DIRS = ("quarantine", "ids", "output", "workers", "control", "tmp", "log", "locks")

PRIORITY_BASE = 1_000_000_000
DUE_FIELD = slice(31, 44)  # where the due time sits in a canonical name (fixed width)
CANONICAL_RE = re.compile(r"(\d{10})\.(\d{19})\.(\d{13})@([A-Za-z0-9_.\-]{1,128})\.json")
QUARANTINE_PREFIX = "+"  # dead/+<qid>.json: a quarantined file; '+' cannot start a job id
# The same character in two namespaces that never meet: RESCUE_SEP joins owner tokens in a
# directory name under processing/; ADOPT_PREFIX starts a file name inside such a directory.
RESCUE_SEP = "~"  # processing/<rescuer>~<owner>: a directory fenced by a rescuer
ADOPT_PREFIX = "~"  # processing/<owner>/~<name>: a drop-in being adopted


@dataclass(frozen=True)
class PendingName:
    """What a canonical pending name says, without opening the file."""

    name: str
    rank: int  # PRIORITY_BASE - priority: smaller runs first
    seq: int
    due_ms: int
    job_id: str


def pending_name(job_id: str, priority: int, seq: int, due: float | None) -> str:
    due_ms = int(due * 1000) if due else 0
    return f"{PRIORITY_BASE - priority:010d}.{seq:019d}.{due_ms:013d}@{job_id}.json"


def pending_name_of(job: Job) -> str:
    """The canonical pending name of a job, from its own fields."""
    return pending_name(job.id, job.priority, job.seq, job.run_at)


def parse_pending(name: str) -> PendingName | None:
    m = CANONICAL_RE.fullmatch(name)
    if m is None or m.group(4).startswith("."):
        return None
    return PendingName(name, int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4))


def is_json_entry(name: str) -> bool:
    """A visible ``*.json`` name: a job file, a registration, a reason record (not a temp file)."""
    return name.endswith(".json") and not name.startswith(".")


def is_dropin(name: str) -> bool:
    return is_json_entry(name) and CANONICAL_RE.fullmatch(name) is None


def job_file(job_id: str) -> str:
    return f"{job_id}.json"


def stem(name: str) -> str:
    """A ``*.json`` name without its suffix: the job id of ``done/<id>.json`` and the like."""
    return name[:-5] if name.endswith(".json") else name


def is_quarantine_id(job_id: str) -> bool:
    return job_id.startswith(QUARANTINE_PREFIX)


def quarantine_id(source_name: str) -> str:
    """A fresh id for a quarantined file: '+' cannot start a job id, so it never collides."""
    safe = re.sub(r"[^A-Za-z0-9_.\-]", "_", stem(source_name))[:80].lstrip(".") or "file"
    return f"{QUARANTINE_PREFIX}{safe}.{random_hex(3)}"


def random_hex(nbytes: int) -> str:
    return os.urandom(nbytes).hex()


def host_name() -> str:
    return os.environ.get("SPOOLQ_HOST") or os.uname().nodename or "localhost"


def owner_token(host: str, pid: int) -> str:
    safe_host = re.sub(r"[^A-Za-z0-9_.]", "_", host)[:64] or "host"
    return f"{safe_host}-{pid}-{random_hex(3)}"


def owner_of(dirname: str) -> str:
    """The live owner of a processing/ sub-directory: the first token of a rescue chain."""
    return dirname.split(RESCUE_SEP, 1)[0]


TMP_RE = re.compile(r"\.[0-9]+\.[0-9a-f]{12}\.tmp")


def tmp_name() -> str:
    return f".{os.getpid()}.{random_hex(6)}.tmp"


def is_temp_name(name: str) -> bool:
    """A name tmp_name() makes: what a crashed writer can leave beside a job file."""
    return TMP_RE.fullmatch(name) is not None


@dataclass(frozen=True)
class Layout:
    root: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", os.path.abspath(self.root))

    def dir(self, name: str) -> str:
        return os.path.join(self.root, name)

    @property
    def pending(self) -> str:
        return os.path.join(self.root, "pending")

    @property
    def processing(self) -> str:
        return os.path.join(self.root, "processing")

    @property
    def done(self) -> str:
        return os.path.join(self.root, "done")

    @property
    def dead(self) -> str:
        return os.path.join(self.root, "dead")

    @property
    def tmp(self) -> str:
        return os.path.join(self.root, "tmp")

    @property
    def config(self) -> str:
        return os.path.join(self.root, "config.json")

    def owned(self, owner: str) -> str:
        return os.path.join(self.root, "processing", owner)

    def id_marker(self, job_id: str) -> str:
        return os.path.join(self.root, "ids", job_id)

    def output(self, job_id: str) -> str:
        return os.path.join(self.root, "output", f"{job_id}.log")

    def worker_file(self, owner: str) -> str:
        return os.path.join(self.root, "workers", f"{owner}.json")

    def reason_file(self, qid: str) -> str:
        return os.path.join(self.root, "quarantine", f"{qid}.json")

    def lock(self, name: str) -> str:
        return os.path.join(self.root, "locks", f"{name}.lock")

    @property
    def stop_file(self) -> str:
        return os.path.join(self.root, "control", "stop")

    def worker_log(self, host: str) -> str:
        """Where detached workers of `host` write their log."""
        return os.path.join(self.root, "log", f"worker-{host}.log")
