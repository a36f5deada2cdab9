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
    S/ids/<id>      one per job id in use (ids are unique across all states): a hard link to a
                    one-line JSON record of its creator, {"host", "pid", "start", "boot",
                    "pidns", "owner"} (spoolq 0.1 made empty files: creator unknown)
    S/output/<id>.log   captured stdout+stderr of every attempt, with marker lines; made when an
                    attempt first writes, fails, has run 0.5 s, or follows an earlier attempt
                    (of this run, or of one before a requeue), or by the recovery of its dead
                    worker: a first attempt that succeeds sooner and writes nothing leaves none
                    (its times are in the attempts log; spoolq 0.1 made one for every attempt)
    S/workers/<owner>.json  a live worker's registration; its mtime is its heartbeat
    S/control/stop  "idle" (made with the layout), or a stop request, "stop <epoch seconds>
                    <token> <host hash> <fs epoch seconds>": every worker whose ``worker start``
                    began no later than that time (on the asking host's clock for a worker on
                    that host, on the file system's for others) stops after its current job;
                    "now ..." also kills their running jobs. A file without a time counts from
                    its mtime.
    S/control/pause, S/control/limits  paused queues (pause.py); "<queue> <N>" limits (slots.py)
    S/slots/        concurrency slots: <queue>%<k> free, <queue>%<k>%<owner> held (slots.py)
    S/waiting/<id>.json  a job enqueued --after others, until they are done; S/after/<dep>/<id>
                    (empty) wakes it when <dep> finishes (dependencies.py)
    S/tmp/          temp files, invisible to every reader: ``.<pid>.<start>.<pidns>.<host>.<hex>.tmp``
                    names the process that writes it; ``....plan``: a batch's staged files and their
                    pending names, one per line, while it renames them (enqueue.py)
    S/log/          worker and supervisor logs
    S/events/<owner>.<k>.jsonl  the attempts log (attempts_log.py): a JSON object a line per finished attempt,
                    {"id", "queue", "attempt", "host", "worker", "ready", "claimed", "started", "finished"
                    (epoch s), "outcome" (done, retry, dead, lost), "exit_code", "error", "output_bytes"}
    S/schedules/<name>.json  a periodic schedule (schedules.py), {"name", "cron", "tz", "catch_up", "overlap",
                    "job", "created_at", "active_from", "paused"}; <name>.fired/<slot> a slot it fired (fired_slots.py)
    S/locks/<name>.flock  a spool lock (flock(2)); its holder writes {"pid", "host"} over its first 256
                    bytes while it holds it (locks.py). <name>.anchor, .lock, .lock.*: an earlier spoolq's
    S/maildir/      a Maildir other programs deliver jobs into (maildir.py): ``tmp/`` for writing,
                    ``new/`` where every entry not starting with ``.`` is a job file, whatever its
                    name; a worker moves it on into ``pending/`` as a drop-in. ``cur/`` is never read
    S/config.json   settings (see config.py)

A job is one UTF-8 JSON object in one file. Fields (job.py's FIELDS): ``id``, ``command`` (a
shell command), ``priority`` (integer, higher first), ``max_retries``, ``timeout`` (seconds or
null), ``run_at`` (ISO 8601 UTC or null), ``delay`` (seconds: read once, into run_at), ``cwd``,
``env`` (string map), ``created_at``/``updated_at`` (ISO 8601 UTC), ``attempts`` (finished
attempts), ``exit_code``, ``last_error``, ``seq`` (the FIFO position); written only when set:
``keep_children`` and ``shell`` (true), ``queue`` (absent: default), ``after`` (ids it waits for).
Unknown fields are kept.

State is the directory a job's file is in; every state change is one ``rename(2)``
inside the spool. ``scheduled`` is not a directory: it is a pending job whose due time
(in its name) is still in the future.

Names in ``pending/``:

* canonical, written only by spoolq: ``PPPPPPPPPP.SSSSSSSSSSSSSSSSSSS.DDDDDDDDDDDDD@<id>.json`` where ``P`` is
  ``1000000000 - priority`` (10 digits), ``S`` the sequence number (19 digits, nanoseconds at enqueue),
  ``D`` the due time in epoch milliseconds (13 digits, 0 = now); a job of a queue other than ``default``
  ends ``@<id>%<queue>.json`` (1-64 characters of the id alphabet). Ready names sort in run order.
* sharded (config ``pending_shards`` = W > 0): spoolq writes canonical names into
  ``pending/=TTTTTTTTTT/`` instead, T the later of its clock and ``pending/``'s mtime rounded down
  to W seconds, then touches ``pending/`` (shards.py); readers read both levels. Dropped files stay
  in ``pending/`` itself.
* drop-in: any other ``*.json`` name not starting with ``.``. A worker reads it, checks
  it, gives it an id (the ``id`` field, else the file name if it is a valid id, else a
  generated one) and renames it to a canonical name, in order of arrival (ctime).
  Names starting with ``.`` are invisible (stage there, then rename).  Names not ending in
  ``.json``, and directories, are left alone (fsck and status name them: maildir.py). A
  ``*.json`` entry that is not a regular, singly linked file owned by the spool's owner or a
  ``trusted_uids`` uid, and writable by no one else (modes.py), is never read as a job: it is
  quarantined, a symlink's target untouched. One with a second link is first given
  ``drop_grace`` since that link was made (a Maildir deliverer's link, then unlink).

Publishing a job (the drop-in protocol for another program): write the object to a
name starting with ``.`` in ``pending/`` (or anywhere on the same file system), fsync
it, ``rename`` it to ``<something>.json`` in ``pending/``, fsync ``pending/``.
A plain ``cp`` works too: a file that does not parse yet is given ``drop_grace``
seconds since its last change before it is quarantined as malformed.

While a job runs, ``processing/<owner>/.pgroup`` holds ``<pgid> <earliest> <latest>``: its
leader's pid and the clock ticks its start time lies between (fixed width, rewritten in place;
blank between jobs): its process group, which whoever recovers a dead owner
on the same host kills. An owner that runs several jobs at once (``--slots``) keeps one such
line per slot, slot k's at k times the line's width; at most ``MAX_SLOTS`` of them.

Owners: an owner token is ``<host>-<pid>-<random>``. When an owner is found dead,
whoever recovers it first creates ``processing/<owner>/.fenced``, then renames the directory to
``processing/<rescuer>~<owner>`` (the fence); a woken owner finds the mark before it records a
result. A file leaves with new content in three steps: ``.next.<state>.<key>.<name>`` written,
``<name>`` renamed to ``.taken.<state>.<key>.<name>`` (the step that decides), the ``.next.``
file renamed into ``pending/`` or ``dead/``; a rescuer finishes such a move half done.

Assumptions: one file system for the whole spool (rename is atomic and never crosses
devices); names up to 255 bytes; ``O_EXCL`` create is atomic (true of local file
systems and NFSv3+); mtime of a file just touched reads the file system's own clock.
"""

from __future__ import annotations

import os

from . import json_codec
from .job import DEFAULT_QUEUE, NAME_CHARS, Job
from .lean import Record, Regex
from . import states

STATE_DIRS = (states.PENDING, states.PROCESSING, states.DONE, states.DEAD, states.WAITING)
MAILDIR = ("maildir", "maildir/tmp", "maildir/new", "maildir/cur")  # parent first: made in this order
# Newer than spoolq 0.1: a spool without them is whole.
MADE_ON_DEMAND = (states.WAITING, "slots", "after", "events", "schedules", *MAILDIR)
OTHER_DIRS = ("quarantine", "ids", "output", "workers", "control", "tmp", "log", "locks", "slots", "after",
              "events", "schedules", *MAILDIR)
INBOXES = (states.PENDING, "maildir/tmp", "maildir/new")  # where a shared spool's group may create files (modes.py)

PRIORITY_BASE = 1_000_000_000
DUE_FIELD = slice(31, 44)  # where the due time sits in a canonical name (fixed width)
CANONICAL = r"(?:=[0-9]{10}/)?([0-9]{10})\.([0-9]{19})\.([0-9]{13})@([A-Za-z0-9_.\-]{1,128})(?:%([A-Za-z0-9_.\-]{1,64}))?\.json"
QUEUE_SEP = "%"  # <id>%<queue>: a job of a queue other than the default one (no id or queue holds it)
QUARANTINE_PREFIX = "+"  # dead/+<qid>.json: a quarantined file; '+' cannot start a job id
# One character, two namespaces that never meet: a directory name in processing/, a file name in one.
RESCUE_SEP = "~"  # processing/<rescuer>~<owner>: a directory fenced by a rescuer
ADOPT_PREFIX = "~"  # processing/<owner>/~<name>: a drop-in being adopted
GROUP_FILE = ".pgroup"  # processing/<owner>/.pgroup: "<pgid> <start window>" of the job it runs, or blank
MAX_SLOTS = 1024  # jobs one owner runs at once (`worker start --slots`): the lines of its .pgroup
CANCEL_PREFIX = ".cancel."  # processing/<owner>/.cancel.<id>: `cancel --kill` asks the owner to kill job <id>
FENCE_FILE = ".fenced"  # processing/<owner>/.fenced: a rescuer's mark, made before it renames the directory
# A job file leaving with new content (handoff.py): .next.<state>.<key>.<name>, the new content; .taken.… the old.
NEXT_PREFIX, TAKEN_PREFIX = ".next.", ".taken."


# The records below are lean.Record classes: typing's NamedTuple, or collections', is not worth
# loading on one enqueue's path.
class Transit(Record):
    """A name of a job file in transit inside processing/<owner>/ (NEXT_PREFIX, TAKEN_PREFIX)."""

    __slots__ = ("taken", "state", "key", "original")

    def __init__(self, taken: bool, state: str, key: str, original: str):
        self.taken = taken  # the old file (else the new content)
        self.state = state  # where the new content goes: "pending" or "dead"
        self.key = key  # pairs a .next. name with its .taken. one
        self.original = original  # the name the old file had: <id>.json, or ~<drop-in>

    next_name = property(lambda self: f"{NEXT_PREFIX}{self.state}.{self.key}.{self.original}")
    taken_name = property(lambda self: f"{TAKEN_PREFIX}{self.state}.{self.key}.{self.original}")


def transit(state: str, original: str) -> Transit:
    return Transit(False, state, random_hex(6), original)


def parse_transit(name: str) -> Transit | None:
    for prefix, taken in ((NEXT_PREFIX, False), (TAKEN_PREFIX, True)):
        if name.startswith(prefix):
            parts = name[len(prefix):].split(".", 2)
            if len(parts) == 3 and parts[0] in (states.PENDING, states.DEAD, states.WAITING) and len(parts[1]) == 12 and parts[2]:
                return Transit(taken, parts[0], parts[1], parts[2])
    return None


def is_canonical(name: str) -> bool:
    return _CANONICAL.fullmatch(name) is not None


class PendingName(Record):
    """What a canonical pending name says, without opening the file. (A plain record, as every
    one on the CLI's path: a frozen dataclass costs 0.6 ms of start-up each.)"""

    __slots__ = ("name", "rank", "seq", "due_ms", "job_id", "queue")

    def __init__(self, name: str, rank: int, seq: int, due_ms: int, job_id: str, queue: str = DEFAULT_QUEUE):
        self.name = name
        self.rank = rank  # PRIORITY_BASE - priority: smaller runs first
        self.seq, self.due_ms, self.job_id, self.queue = seq, due_ms, job_id, queue


def pending_name(job_id: str, priority: int, seq: int, due: float | None, queue: str = DEFAULT_QUEUE) -> str:
    due_ms = int(due * 1000) if due else 0
    tail = "" if queue == DEFAULT_QUEUE else QUEUE_SEP + queue
    return f"{PRIORITY_BASE - priority:010d}.{seq:019d}.{due_ms:013d}@{job_id}{tail}.json"


def pending_name_of(job: Job) -> str:
    """The canonical pending name of a job, from its own fields."""
    return pending_name(job.id, job.priority, job.seq, job.run_at, job.queue)


def parse_pending(name: str) -> PendingName | None:
    m = _CANONICAL.fullmatch(name)
    if m is None or m.group(4).startswith(".") or (m.group(5) or "").startswith("."):
        return None
    return PendingName(name, int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4),
                       m.group(5) or DEFAULT_QUEUE)


def is_json_entry(name: str) -> bool:
    """A visible ``*.json`` name: a job file, a registration, a reason record (not a temp file)."""
    return name.endswith(".json") and not name.startswith(".")


def is_dropin(name: str) -> bool:
    """A dropped file: in pending/ itself, never in a shard (pending/=<T>/ holds canonical names)."""
    return is_json_entry(name) and "/" not in name and _CANONICAL.fullmatch(name) is None


def job_file(job_id: str) -> str:
    return f"{job_id}.json"


def stem(name: str) -> str:
    """A ``*.json`` name without its suffix: the job id of ``done/<id>.json`` and the like."""
    return name[:-5] if name.endswith(".json") else name


def is_quarantine_id(job_id: str) -> bool:
    return job_id.startswith(QUARANTINE_PREFIX)


def quarantine_id(source_name: str) -> str:
    """A fresh id for a quarantined file: '+' cannot start a job id, so it never collides with
    one; 48 random bits, and the move that uses it never replaces another."""
    safe = only(NAME_CHARS, stem(source_name))[:80].lstrip(".") or "file"
    return f"{QUARANTINE_PREFIX}{safe}.{random_hex(6)}"


def random_hex(nbytes: int) -> str:
    return os.urandom(nbytes).hex()


def host_name() -> str:
    return os.environ.get("SPOOLQ_HOST") or os.uname().nodename or "localhost"


def host_hash() -> str:
    """This host, as a stop request carries it: short, the same for every process here."""
    import zlib  # only a stop request needs it, never one enqueue

    return f"{zlib.crc32(host_name().encode()):08x}"


def owner_token(host: str, pid: int) -> str:
    safe_host = only(_ALNUM + "_.", host)[:64] or "host"
    return f"{safe_host}-{pid}-{random_hex(3)}"


def owner_of(dirname: str) -> str:
    """The live owner of a processing/ sub-directory: the first token of a rescue chain."""
    return dirname.split(RESCUE_SEP, 1)[0]


# .<pid>.<start>.<pid namespace>.<host>.<random>.tmp names its creator, so a leftover of a dead
# process is known at once; .<pid>.<random>.tmp (spoolq 0.1) is judged by its age.
TMP = r"\.([0-9]+)\.(?:([0-9]+)\.([0-9]+)\.([A-Za-z0-9_-]{1,64})\.)?[0-9a-f]{12}\.(tmp|plan)"


_CANONICAL, _TMP = Regex(CANONICAL), Regex(TMP)  # compiled on first use: one enqueue uses neither


class Creator(Record):
    """The process that made a temp file or an id marker: enough to judge whether it is gone."""

    __slots__ = ("host", "pid", "start", "boot", "owner", "pidns")

    def __init__(self, host: str, pid: int, start: str | None = None, boot: str | None = None,
                 owner: str | None = None, pidns: int | None = None):
        self.host, self.pid = host, pid
        self.start = start  # its start time in clock ticks (with the pid: one process)
        self.boot = boot
        self.owner = owner  # a worker's owner token: its registration and lease speak for it
        self.pidns = pidns  # its pid namespace: a container on the same host has another

    def tag(self) -> str:
        return f"{self.pid}.{self.start or 0}.{self.pidns or 0}.{safe_host(self.host)}"

    def to_json(self) -> bytes:
        return json_codec.dumps({k: v for k, v in self._asdict().items() if v is not None},
                                compact=True).encode() + b"\n"


def tmp_name(creator: Creator | None = None, kind: str = "tmp") -> str:
    """A temp name; kind "plan": a batch's list of what it publishes (enqueue.py)."""
    tag = creator.tag() if creator else str(os.getpid())
    return f".{tag}.{random_hex(6)}.{kind}"


def is_temp_name(name: str, kind: str = "tmp") -> bool:
    """A name tmp_name() makes: what a crashed writer can leave beside a job file."""
    m = _TMP.fullmatch(name)
    return m is not None and m.group(5) == kind


def creator_of_temp(name: str) -> Creator | None:
    """Who made a temp file, from its name (None for a name that does not say)."""
    m = _TMP.fullmatch(name)
    if m is None or m.group(2) is None:
        return None
    return Creator(host=m.group(4), pid=int(m.group(1)), start=m.group(2) if m.group(2) != "0" else None,
                   pidns=int(m.group(3)) or None)


def safe_host(host: str) -> str:
    """A host name as it may stand inside a file name."""
    return only(_ALNUM + "_-", host)[:64] or "host"


_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def only(allowed: str, text: str) -> str:
    """text with every character outside `allowed` made '_' (a str loop: no regex on the CLI's path)."""
    return "".join(c if c in allowed else "_" for c in text)


class Layout:
    """Where everything of the spool at `root` is (read-only once made). Paths are joined by
    hand: a worker asks for a dozen a job, and os.path.join costs ten times an f-string."""

    __slots__ = ("root", "_base")

    def __init__(self, root: str):
        object.__setattr__(self, "root", os.path.abspath(root))
        object.__setattr__(self, "_base", "" if self.root == "/" else self.root)  # abspath: no trailing /

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a Layout is read-only")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layout) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    def __repr__(self) -> str:
        return f"Layout(root={self.root!r})"

    def dir(self, name: str) -> str:
        return f"{self._base}/{name}"

    def is_inbox(self, path: str) -> bool:
        """Is `path` a directory others may drop files into (INBOXES)?"""
        return path.startswith(f"{self._base}/") and path[len(self._base) + 1:] in INBOXES

    @property
    def pending(self) -> str:
        return f"{self._base}/pending"

    @property
    def processing(self) -> str:
        return f"{self._base}/processing"

    @property
    def done(self) -> str:
        return f"{self._base}/done"

    @property
    def dead(self) -> str:
        return f"{self._base}/dead"

    @property
    def tmp(self) -> str:
        return f"{self._base}/tmp"

    @property
    def config(self) -> str:
        return f"{self._base}/config.json"

    def owned(self, owner: str) -> str:
        return f"{self._base}/processing/{owner}"

    def id_marker(self, job_id: str) -> str:
        return f"{self._base}/ids/{job_id}"

    def output(self, job_id: str) -> str:
        return f"{self._base}/output/{job_id}.log"

    def worker_file(self, owner: str) -> str:
        return f"{self._base}/workers/{owner}.json"

    def reason_file(self, qid: str) -> str:
        return f"{self._base}/quarantine/{qid}.json"

    def lock(self, name: str) -> str:
        return f"{self._base}/locks/{name}.flock"

    @property
    def stop_file(self) -> str:
        return f"{self._base}/control/stop"

    def worker_log(self, host: str) -> str:
        """Where detached workers of `host` write their log."""
        return f"{self._base}/log/worker-{host}.log"
