"""Which entries of a spool spoolq itself made, by directory: what it may chmod, check the modes
of and delete. Everything else under a spool (the user's own notes, a drop-in not taken yet, a
Maildir delivery) is someone else's, and left as it is."""

from __future__ import annotations

from . import states
from . import layout
from .job import valid_id


def is_spoolq_entry(directory: str, name: str) -> bool:
    """Is `name` in the layout directory `directory` ("pending", "done", ..., or "" for the
    root) one spoolq itself creates? Everything else there is someone else's: never chmodded,
    never deleted."""
    if directory == "":
        return name == "config.json"
    if directory == states.PROCESSING:
        return not name.startswith(".")
    return _SPOOLQ_NAMES[directory](name) if directory in _SPOOLQ_NAMES else False


_SPOOLQ_NAMES = {
    states.PENDING: lambda n: layout.parse_pending(n) is not None or layout.is_temp_name(n),
    states.DONE: lambda n: layout.is_temp_name(n) or (n.endswith(".json") and valid_id(layout.stem(n))),
    states.DEAD: lambda n: layout.is_temp_name(n) or (n.endswith(".json") and valid_id(layout.stem(n))),
    "quarantine": lambda n: n.startswith(layout.QUARANTINE_PREFIX) and n.endswith(".json"),
    "ids": lambda n: valid_id(n),
    "output": lambda n: n.endswith(".log") and valid_id(n[:-4]),
    "workers": lambda n: n.endswith(".json") and not n.startswith("."),
    "control": lambda n: n in ("stop", "pause", "limits"),
    "slots": lambda n: n.count("%") in (1, 2) and not n.startswith("."),
    states.WAITING: lambda n: layout.is_temp_name(n) or (n.endswith(".json") and valid_id(layout.stem(n))),
    "after": lambda n: valid_id(n),
    "tmp": lambda n: layout.is_temp_name(n),
    "log": lambda n: n.startswith("worker-") and n.endswith(".log"),
    "events": lambda n: not n.startswith(".") and n.endswith(".jsonl"),
    "schedules": lambda n: not n.startswith(".") and n.endswith((".json", ".last")),
    "locks": lambda n: not n.startswith(".") and (n.endswith((".flock", ".lock", ".anchor")) or ".lock." in n),
}
