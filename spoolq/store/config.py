"""Config keys, their defaults and validation; load, and save under the "config" lock."""

from __future__ import annotations

from ..format import json_codec, modes
from ..system import fsio, locks
from ..format.errors import ConfigError, SpoolError, UntrustedFile, quoted
from ..format.job import is_int, is_number
from ..format.layout import Layout
from ..format.lean import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, ContextManager



class Key(Record):
    """A setting: its default, how `config set` reads its text, what a value must pass, and what to say."""

    __slots__ = ("default", "parse", "check", "help")

    def __init__(self, default: Any, parse: Callable[[str], Any], check: Callable[[Any], bool], help: str):
        self.default, self.parse, self.check, self.help = default, parse, check, help


def _number(text: str) -> float:
    _ascii(text)
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def _seconds(text: str) -> float:
    """A setting in seconds, given as any duration (durations.py): 600, 10m, 1.5h."""
    from ..format import durations  # `config set` alone parses one

    value = durations.parse(text)
    return int(value) if value.is_integer() else value


def _integer(text: str) -> int:
    _ascii(text)
    return int(text, 10)


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "on", "1"):
        return True
    if lowered in ("false", "no", "off", "0"):
        return False
    raise ValueError(text)


def _path(text: str) -> str:
    return text.strip()


def _is_textfile_path(value: object) -> bool:
    """'' (off), or an absolute path ending in .prom (node_exporter reads only those)."""
    return isinstance(value, str) and (value == "" or (value.startswith("/") and value.endswith(".prom")
                                                        and "\0" not in value and len(value) < 4096))


def _uid_list(text: str) -> list[int]:
    """'1000 1001', '1000,1001' or what `config get` prints: '[1000, 1001]'."""
    _ascii(text)
    return [int(part) for part in text.strip().strip("[]").replace(",", " ").split()]


def _ascii(text: str) -> None:
    """int() and float() read other scripts' digits ('٣' is 3), '1_0', 'nan' and 'inf' too:
    a setting is digits 0-9, a sign, a point, an exponent."""
    import re  # only `config set` parses a setting: one enqueue loads no regex

    if not re.fullmatch(r"\s*\[?[0-9+\-.eE, \]]*\s*", text) or "_" in text:
        raise ValueError(text)


KEYS: dict[str, Key] = {
    "max_retries": Key(3, _integer, lambda v: is_int(v) and 0 <= v <= 1000,
                       "retries after the first attempt, for jobs that do not set their own (0-1000)"),
    "backoff_base": Key(2, _number, lambda v: is_number(v) and 0 <= v <= 3600,
                        "wait backoff_base ** n seconds after failed attempt n"),
    "backoff_max": Key(3600, _seconds, lambda v: is_number(v) and 0 <= v <= 86400 * 30,
                       "cap on the backoff, seconds"),
    "job_timeout": Key(0, _seconds, lambda v: is_number(v) and 0 <= v <= 86400 * 365,
                       "seconds before a job's process group is killed; 0 = no limit"),
    "poll_interval": Key(1.0, _seconds, lambda v: is_number(v) and 0.05 <= v <= 3600,
                         "seconds between rescans of pending/, in case events were lost"),
    "drop_grace": Key(5.0, _seconds, lambda v: is_number(v) and 0 <= v <= 86400,
                      "seconds an unparseable dropped file may keep changing before it is quarantined"),
    "lease_timeout": Key(30.0, _seconds, lambda v: is_number(v) and 2 <= v <= 86400,
                         "seconds without a heartbeat before another host recovers a worker's job "
                         "(2-86400: heartbeats come every lease/4, and a shorter lease would expire "
                         "under a busy host)"),
    "max_output_bytes": Key(64 * 1024 * 1024, _integer, lambda v: is_int(v) and 0 <= v,
                            "captured output kept per attempt: its start, and its end (half of this, at most "
                            "1 MiB), the cut between marked (0 = no limit)"),
    "group_access": Key(False, _boolean, lambda v: isinstance(v, bool),
                        "open the spool to its group: it may read it and drop jobs into pending/ (shared "
                        "spools); false: owner-only"),
    "pending_shards": Key(0, _seconds, lambda v: is_int(v) and 0 <= v <= 86400,
                          "seconds of arrivals per sub-directory of pending/, so that listings stay "
                          "bounded at any backlog (0 = none; older spoolq versions do not read them)"),
    "keep_done": Key(7 * 86400, _seconds, lambda v: is_number(v) and 0 <= v <= 3650 * 86400,
                     "seconds after it finished that a done job (and its output) is purged by the workers "
                     "(0 = kept for good)"),
    "keep_dead": Key(0, _seconds, lambda v: is_number(v) and 0 <= v <= 3650 * 86400,
                     "the same for dead jobs (0 = kept for good, the default)"),
    "keep_output": Key(0, _seconds, lambda v: is_number(v) and 0 <= v <= 3650 * 86400,
                       "seconds after its last attempt that a finished job's output log is deleted, the job "
                       "kept (0 = as long as the job)"),
    "on_done": Key("", _path, lambda v: isinstance(v, str) and len(v) < 65536 and "\0" not in v,
                   "a shell command the worker runs after a job is done (SPOOLQ_JOB_ID, SPOOLQ_STATE, ... set)"),
    "on_dead": Key("", _path, lambda v: isinstance(v, str) and len(v) < 65536 and "\0" not in v,
                   "a shell command the worker runs after a job goes dead"),
    "on_failure": Key("", _path, lambda v: isinstance(v, str) and len(v) < 65536 and "\0" not in v,
                      "a shell command the worker runs after a failed attempt that will be retried"),
    "hook_timeout": Key(30.0, _seconds, lambda v: is_number(v) and 0.1 <= v <= 86400,
                        "seconds a hook may run before its process group is killed"),
    "keep_events": Key(8 * 86400, _seconds, lambda v: is_number(v) and 3600 <= v <= 366 * 86400,
                       "seconds the attempts log (events/) is kept: how far back stats, metrics and the "
                       "dashboard can look (3600-31622400)"),
    "metrics_textfile": Key("", _path, _is_textfile_path,
                            "a *.prom file (absolute path) the workers on each host rewrite with the "
                            "spool's metrics, for node_exporter's textfile collector ('' = off)"),
    "metrics_interval": Key(15.0, _seconds, lambda v: is_number(v) and 1 <= v <= 86400,
                            "seconds between rewrites of metrics_textfile (1-86400)"),
    "trusted_uids": Key([], _uid_list, lambda v: isinstance(v, list) and all(is_int(u) and u >= 0 for u in v),
                        "uids besides the spool owner's whose dropped files are run"),
}


MAX_CONFIG_BYTES = 64 * 1024


class Config:
    """Settings of one spool: defaults overlaid by what config.json holds; `problems` says what
    in it was ignored (an unknown key, a value of the wrong type or out of range)."""

    def __init__(self, values: dict[str, Any], problems: tuple[str, ...] = ()):
        self._values = values
        self.problems = problems
        # Plain attributes: a worker reads a dozen settings per job, and __getattr__ cost a
        # microsecond each.
        for key, spec in KEYS.items():
            setattr(self, key, values.get(key, spec.default))

    if TYPE_CHECKING:  # for a type checker: every key of KEYS is an attribute (set in __init__)
        def __getattr__(self, key: str) -> Any: ...

    def as_dict(self) -> dict[str, Any]:
        return {key: self._values.get(key, spec.default) for key, spec in KEYS.items()}


def check_key(key: str) -> Key:
    if key not in KEYS:
        raise ConfigError(f"unknown config key {quoted(key)}; known keys: {', '.join(KEYS)}")
    return KEYS[key]


def parse_value(key: str, text: str) -> Any:
    spec = check_key(key)
    try:
        value = spec.parse(text)
    except (ValueError, OverflowError):
        from ..format.durations import SYNTAX

        what = f"a duration: {SYNTAX}; {spec.help}" if spec.parse is _seconds else spec.help  # with its 0
        raise ConfigError(f"{key}: {quoted(text)} is not a valid value ({what})") from None
    if not spec.check(value):
        raise ConfigError(f"{key}: {quoted(text)} is out of range ({spec.help})")
    return value


def load(layout: Layout, uid: int | None = None) -> Config:
    """config.json as settings. SpoolError if it cannot be read as a JSON object at all; what
    it holds that is not a setting is ignored, and said in `problems`. `uid`: the spool's user
    (default: this one), who alone may have written it."""
    path = layout.config
    try:
        data, st = fsio.read_regular(path, MAX_CONFIG_BYTES)
        untrusted = modes.why_untrusted(st, shared=True, uid=uid)  # its hooks run as the owner: only the owner writes it
        if untrusted:
            raise UntrustedFile(f"refusing {path}: it {untrusted}; it must be the spool owner's and writable by no one "
                             "else (chown it, chmod go-w)")
        raw = json_codec.loads(data or b"{}")
    except (FileNotFoundError, NotADirectoryError):  # none (a spool path that is a file is refused as such)
        return Config({})
    except OSError as e:
        raise SpoolError(f"cannot read {path}: {e.strerror}") from None
    except RecursionError:
        raise SpoolError(f"cannot read {path}: it is nested too deeply") from None
    except ValueError as e:  # not JSON, or (from read_regular) not a regular file, or too big
        raise SpoolError(f"cannot read {path}: {str(e)[:120]}") from None
    if not isinstance(raw, dict):
        raise SpoolError(f"{path} is not a JSON object")
    values: dict[str, Any] = {}
    problems = []
    for key, value in raw.items():
        if key not in KEYS:
            problems.append(f"{path}: unknown key {key!r} is ignored")
        elif not KEYS[key].check(value):
            shown = json_codec.dumps(value)[:40] if not isinstance(value, (dict, list)) else type(value).__name__
            problems.append(f"{path}: {key}: {shown} is ignored ({KEYS[key].help}); "
                            f"the default {json_codec.dumps(KEYS[key].default)} is used")
        else:
            values[key] = value
    return Config(values, tuple(problems))


def save(layout: Layout, key: str, value: Any, *, mode: int, temp_path: str) -> Config:
    """Read-modify-write config.json under its lock, publishing the new file (of `mode`, first
    written to `temp_path`) by rename."""
    import json  # indent and sort_keys: the json package's alone (only `config set` writes)

    spec = check_key(key)
    if not spec.check(value):  # the API's values are checked as the CLI's are: never saved to be ignored
        raise ConfigError(f"{key}: {json.dumps(value, default=repr)[:40]} is out of range ({spec.help})")
    with locked(layout, "config", mode=mode):
        current = load(layout)._values
        current = {**current, key: value}
        data = (json.dumps(current, indent=2, sort_keys=True) + "\n").encode()
        fsio.publish(temp_path, data, layout.config, mode=mode)
        return Config(current)


LOCKS = ("config", "dlq", "ids", "retention")  # flocks on files made with the layout (locks.py): a full disk cannot stop them
# ("ids": taking over a marker; "retention": one worker at a time purges what is no longer kept)


def locked(layout: Layout, name: str, *, mode: int, timeout: float = 30.0) -> ContextManager[None]:
    """Hold the named spool lock (see locks.py); LockBusy, naming its holder, after `timeout`."""
    return locks.locked(layout.lock(name), mode=mode, timeout=timeout)
