"""The job record: its fields, validation and JSON form. Pure: no I/O, the clock is passed in."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

from . import json_codec
from .errors import InvalidJob, quoted
from .lean import Record
from .json_values import is_int, is_number, iso, json_type, parse_time

NAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"  # of an id or a queue
MAX_ID, MAX_QUEUE = 128, 64  # the queue short enough that a pending name holds id and queue
DEFAULT_QUEUE = "default"
ALWAYS = object()  # Field.unset of a field every file holds
MAX_PRIORITY = 999_999_999
MAX_RETRIES_LIMIT = 1000
MAX_COMMAND_BYTES = 128 * 1024 - 1  # one exec argument may not exceed 128 KiB on Linux
MAX_JOB_BYTES = 1024 * 1024
MAX_SECONDS = 10 * 365 * 86400.0
MAX_DEPTH = 64  # levels of nesting in a job object
MAX_AFTER = 1000  # ids one job may wait for


class Field(Record):
    """A field spoolq owns in a job object. Everything else in one is kept as given (extra). (A
    lean.Record: a NamedTuple costs every CLI call 0.2 ms of start-up to build.)"""

    __slots__ = ("name", "given", "kind", "stored", "unset")
    name: str
    given: bool  # a caller may set it (docs/cli.md "Job fields"), else spoolq keeps it
    kind: str  # "time": ISO 8601 UTC in a file, epoch seconds in a Job
    stored: bool  # a Job attribute and a key in the file (delay is read once, into run_at)
    unset: Any  # a value never written (files stay as they were before the field), or ALWAYS: always written

    def __init__(self, name: str, given: bool, kind: str = "", *, stored: bool = True, unset: Any = ALWAYS):
        self.name, self.given, self.kind, self.stored, self.unset = name, given, kind, stored, unset


# The fields of a job, in the order a file holds them: validation (from_dict), the file (to_dict)
# and Job's attributes are checked against this table (tests/test_job.py), and so are the field
# lists of layout.py's docstring and docs/cli.md. A new field goes here first.
FIELDS = (
    Field("id", True),
    Field("command", True),
    Field("priority", True),
    Field("max_retries", True),
    Field("timeout", True),
    Field("run_at", True, "time"),
    Field("delay", True, stored=False),
    Field("cwd", True),
    Field("env", True),
    Field("created_at", False, "time"),
    Field("updated_at", False, "time"),
    Field("attempts", False),
    Field("exit_code", False),
    Field("last_error", False),
    Field("seq", False),
    Field("keep_children", True, unset=False),
    Field("shell", True, unset=False),
    Field("queue", True, unset=DEFAULT_QUEUE),
    Field("after", True, unset=[]),
)
KNOWN = tuple(field.name for field in FIELDS)
STORED = tuple(field for field in FIELDS if field.stored)


class Job:
    """One job record. A plain class with the behaviour of a dataclass (fields by keyword,
    equality and repr by fields) because it is the only record on the path of every `enqueue`,
    and making a dataclass costs start-up (importing dataclasses and building the class: ~1 ms,
    2% of one enqueue)."""

    SLOTS = (*(field.name for field in STORED), "extra")
    __slots__ = SLOTS

    def __init__(self, id: str, command: str, max_retries: int, created_at: float, seq: int, priority: int = 0,
                 timeout: float | None = None, run_at: float | None = None, cwd: str | None = None,
                 env: dict[str, str] | None = None, updated_at: float | None = None, attempts: int = 0,
                 exit_code: int | None = None, last_error: str | None = None, keep_children: bool = False,
                 shell: bool = False, queue: str = DEFAULT_QUEUE, after: list[str] | None = None,
                 extra: dict[str, Any] | None = None):
        self.id, self.command, self.max_retries, self.created_at, self.seq = id, command, max_retries, created_at, seq
        self.priority, self.timeout, self.run_at, self.cwd = priority, timeout, run_at, cwd
        self.env: dict[str, str] = {} if env is None else env
        self.updated_at, self.attempts, self.exit_code, self.last_error = updated_at, attempts, exit_code, last_error
        self.keep_children = keep_children  # processes it leaves in its group outlive the attempt
        self.shell = shell  # always run by /bin/sh -c, never directly (direct_exec.py)
        self.queue = queue
        self.after: list[str] = after or []  # ids this job waits for (dependencies.py)
        self.extra: dict[str, Any] = {} if extra is None else extra  # fields spoolq does not own, kept as given

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.SLOTS)

    def __eq__(self, other: object) -> bool:
        return self._values() == other._values() if isinstance(other, Job) else NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, as a dataclass is

    def __repr__(self) -> str:
        return "Job(" + ", ".join(f"{name}={getattr(self, name)!r}" for name in self.SLOTS) + ")"

    def copy(self) -> Job:
        """A shallow copy (its env and extra dicts shared), to change without touching this one."""
        return Job(**{name: getattr(self, name) for name in self.SLOTS})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        for field in STORED:
            value = getattr(self, field.name)
            if field.unset is ALWAYS or value != field.unset:
                out[field.name] = iso(value) if field.kind == "time" else value
        out["id"] = self.id or None  # not given yet: make_job() assigns one
        out["updated_at"] = iso(self.updated_at if self.updated_at is not None else self.created_at)
        if self.after:
            out["after"] = list(self.after)
        return out

    def to_json(self) -> bytes:
        return (json_codec.dumps(self.to_dict(), ensure_ascii=False, compact=True) + "\n").encode()

    def due(self) -> float:
        return self.run_at or 0.0

    @property
    def running_attempt(self) -> int:
        """The number of the attempt under way, or about to start: `attempts` counts finished
        ones. A claim starts it, and a success is recorded without rewriting the file, so readers
        of a processing or done job add this one back."""
        return self.attempts + 1


def valid_id(value: object) -> bool:
    return _is_name(value, MAX_ID)


def check_id(value: object) -> str:
    if not valid_id(value):
        raise InvalidJob(
            f"invalid job id {quoted(value)}: use 1-128 characters of A-Z a-z 0-9 . _ -, not starting with '.'"
        )
    return value  # type: ignore[return-value]


def valid_queue(value: object) -> bool:
    return _is_name(value, MAX_QUEUE)


def _is_name(value: object, longest: int) -> bool:
    """1..longest of NAME_CHARS, not starting with '.' (str methods: no regex on the CLI's path)."""
    return isinstance(value, str) and 0 < len(value) <= longest and not value.startswith(".") \
        and not value.strip(NAME_CHARS)


def check_queue(value: object) -> str:
    if not valid_queue(value):
        raise InvalidJob(f"invalid queue {str(value)[:80]!r}: use 1-64 characters of A-Z a-z 0-9 . _ -, "
                         "not starting with '.'")
    return value  # type: ignore[return-value]


def parse_json_object(data: bytes | str, what: str = "job") -> dict[str, Any]:
    """Decode one JSON object; every way this can go wrong is an InvalidJob with a one-line reason."""
    if isinstance(data, bytes):
        if len(data) > MAX_JOB_BYTES:
            raise InvalidJob(f"{what} is {len(data)} bytes; the limit is {MAX_JOB_BYTES}")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidJob(f"{what} is not UTF-8 (byte {e.start})") from None
    elif len(data) > MAX_JOB_BYTES:
        raise InvalidJob(f"{what} is {len(data)} characters; the limit is {MAX_JOB_BYTES}")
    try:
        obj = _DECODER.loads(data)  # a BOM refused as json.loads refuses it
    except RecursionError:
        raise InvalidJob(f"{what} is nested too deeply") from None
    except ValueError as e:  # a syntax error (where it is), a huge integer, NaN
        raise InvalidJob(f"{what} is not valid JSON: {json_codec.syntax_error(e) or str(e)[:80]}") from None
    if not isinstance(obj, dict):
        raise InvalidJob(f"{what} must be a JSON object, not {json_type(obj)}")
    if _too_deep(obj):
        raise InvalidJob(f"{what} is nested too deeply (the limit is {MAX_DEPTH} levels)")
    return obj


def _too_deep(obj: object) -> bool:
    """Deeper than MAX_DEPTH? One limit, far below where json.loads would run out of stack, so
    that what enqueue accepts every reader (a worker, fsck) can read too."""
    level = [obj]
    for _ in range(MAX_DEPTH):
        level = [v for x in level for v in (x.values() if isinstance(x, dict) else x)
                 if isinstance(v, (dict, list))]
        if not level:
            return False
    return True


def from_dict(d: dict[str, Any], *, now: float, default_max_retries: int, seq: int | None = None) -> Job:
    """Build a Job from user input or a stored record, validating every field spoolq owns (in
    this order: the first bad field is the one an error names)."""
    if not isinstance(d, dict):  # a program's enqueue("echo hi"): not an AttributeError from deep inside
        example = f"{{'command': {d!r}}}" if isinstance(d, str) else "{'command': ...}"
        raise InvalidJob(f"a job is a dict of its fields, as {quoted(example)}, not {json_type(d)}")
    command = _command(d.get("command"))
    job_id = d.get("id")
    if job_id is not None:
        check_id(job_id)
    max_retries = _int(d, "max_retries", default_max_retries, 0, MAX_RETRIES_LIMIT)
    priority = _int(d, "priority", 0, -MAX_PRIORITY, MAX_PRIORITY)
    attempts = _int(d, "attempts", 0, 0, MAX_RETRIES_LIMIT + 1)
    timeout = _seconds(d, "timeout", positive=True)
    run_at = _run_at(d, now)
    cwd = _cwd(d.get("cwd"))
    env = _env(d.get("env"))
    created_at = now if d.get("created_at") is None else parse_time(d["created_at"], "created_at")
    updated_at = None if d.get("updated_at") is None else parse_time(d["updated_at"], "updated_at")
    exit_code = _exit_code(d.get("exit_code"))
    last_error = _last_error(d.get("last_error"))
    seq = _seq(d.get("seq"), seq if seq is not None else int(now * 1e9))
    keep_children = _flag(d, "keep_children")
    shell = _flag(d, "shell")
    queue = check_queue(d.get("queue", DEFAULT_QUEUE))
    after = _after(d.get("after"), job_id)
    return Job(id=job_id or "", command=command, max_retries=max_retries, created_at=created_at, seq=seq,
               priority=priority, timeout=timeout, run_at=run_at, cwd=cwd, env=env, updated_at=updated_at,
               attempts=attempts, exit_code=exit_code, last_error=last_error, keep_children=keep_children,
               shell=shell, queue=queue, after=after, extra=_extra(d))


def _after(value: object, job_id: object) -> list[str]:
    """The ids a job waits for: a list of distinct valid ids, never its own."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_AFTER:
        raise InvalidJob(f"after: must be a list of at most {MAX_AFTER} job ids")
    for item in value:
        check_id(item)
    if len(set(value)) != len(value):
        raise InvalidJob("after: an id appears twice")
    if job_id is not None and job_id in value:
        raise InvalidJob(f"after: job {job_id} cannot wait for itself")
    return list(value)


def _flag(d: dict[str, Any], field: str) -> bool:
    value = d.get(field, False)
    if not isinstance(value, bool):
        raise InvalidJob(f"{field}: must be true or false")
    return value


def _command(command: object) -> str:
    if not isinstance(command, str) or not command.strip():
        raise InvalidJob("command: required, a non-empty string")
    if "\x00" in command:
        raise InvalidJob("command: contains a NUL byte")
    _check_utf8(command, "command")
    if len(command.encode("utf-8", "surrogatepass")) > MAX_COMMAND_BYTES:
        raise InvalidJob(f"command: longer than the limit of {MAX_COMMAND_BYTES} bytes")
    return command


def _run_at(d: dict[str, Any], now: float) -> float | None:
    """When the job may first run: `run_at`, or `delay` seconds from now (one or the other)."""
    delay = _seconds(d, "delay", positive=False)
    run_at = None if d.get("run_at") is None else parse_time(d["run_at"], "run_at")
    if delay is not None and run_at is not None:
        raise InvalidJob("give delay or run_at, not both")
    if delay is not None:
        return now + delay if delay > 0 else None
    return run_at


def _cwd(cwd: object) -> str | None:
    if cwd is None:
        return None
    if not isinstance(cwd, str) or not cwd or "\x00" in cwd:
        raise InvalidJob("cwd: must be a non-empty string")
    _check_utf8(cwd, "cwd")
    return cwd


def _exit_code(exit_code: object) -> int | None:
    if exit_code is not None and not is_int(exit_code):
        raise InvalidJob("exit_code: must be an integer or null")
    return exit_code  # type: ignore[return-value]


def _last_error(last_error: object) -> str | None:
    if last_error is None:
        return None
    if not isinstance(last_error, str):
        raise InvalidJob("last_error: must be a string or null")
    _check_utf8(last_error, "last_error")
    return last_error


def _seq(stored: object, default: int) -> int:
    """The stored FIFO position wins over a fresh one: a re-read job keeps its place."""
    if stored is None:
        return default
    if not is_int(stored) or not 0 <= stored < 10**19:  # type: ignore[operator]
        raise InvalidJob("seq: must be a non-negative integer")
    return stored  # type: ignore[return-value]


def _extra(d: dict[str, Any]) -> dict[str, Any]:
    """Fields spoolq does not own, kept as given."""
    extra = {k: v for k, v in d.items() if k not in KNOWN}
    if extra:  # the API can pass what JSON cannot carry (NaN, sets): refuse it, never store it unreadable
        try:
            json_codec.dumps(extra, allow_nan=False, ensure_ascii=False).encode()
        except (TypeError, ValueError) as e:
            raise InvalidJob(f"unknown fields must hold plain JSON values: {str(e)[:80]}") from None
    return extra


def from_json(data: bytes | str, *, now: float, default_max_retries: int) -> Job:
    return from_dict(parse_json_object(data), now=now, default_max_retries=default_max_retries)


def _int(d: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = d.get(key)
    if value is None:
        return default
    if not is_int(value):
        raise InvalidJob(f"{key}: must be an integer, not {json_type(value)}")
    if not lo <= value <= hi:
        raise InvalidJob(f"{key}: {value} is outside {lo}..{hi}")
    return value


def _seconds(d: dict[str, Any], key: str, *, positive: bool) -> float | None:
    value = d.get(key)
    if value is None:
        return None
    if not is_number(value):
        raise InvalidJob(f"{key}: must be a number of seconds, not {json_type(value)}")
    if not (0 < value if positive else 0 <= value) or value > MAX_SECONDS:  # type: ignore[operator]
        raise InvalidJob(f"{key}: {str(value)[:40]} is out of range")
    return float(value)  # type: ignore[arg-type]


def _env(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidJob(f"env: must be an object of strings, not {json_type(value)}")
    for k, v in value.items():
        if not isinstance(v, str) or not isinstance(k, str):
            raise InvalidJob(f"env: {k!r} must map to a string, not {json_type(v)}")
        if not k or "=" in k or "\x00" in k or "\x00" in v:
            raise InvalidJob(f"env: {k[:40]!r} is not a usable variable name or value")
        _check_utf8(k + v, "env")
    return dict(value)


def _check_utf8(text: str, field: str) -> None:
    """Lone surrogates (from a JSON \\ud800 escape or undecodable argv bytes) cannot be stored as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidJob(f"{field}: not valid Unicode text (holds a lone surrogate)") from None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


_DECODER = json_codec.Decoder(parse_constant=_reject_constant)  # once: json.loads with an option makes one a call
