"""Who may write what in a spool: the modes spoolq creates its files and directories with, and
the rule every file it acts on must meet.

The rule: nothing that makes the spool's owner act (run a command, send a signal, delete, trust
a time) may come from a file that anyone but the owner, root or a trusted uid can write. A
file's owner is not enough: a file its group can write can be rewritten in place by any member,
and its st_uid stays the owner's. So on a spool shared with its group (config group_access),
the group may read everything and create files in the inboxes alone (``pending/``, and the
Maildir's ``tmp/`` and ``new/``: layout.INBOXES; sticky: a member can move or delete only their
own entries); nothing spoolq writes is group-writable, and a file that is, or that another uid
wrote, is never acted on.
"""

from __future__ import annotations

import os
import stat
from .lean import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable


class Modes(Record):
    """The modes of what a spool creates. Held by each spool, never by the process."""

    __slots__ = ("file", "dir", "inbox")

    def __init__(self, file: int, dir: int, inbox: int):
        self.file, self.dir = file, dir
        self.inbox = inbox  # pending/ and the Maildir's tmp/ and new/ (layout.INBOXES), where others drop jobs

    @staticmethod
    def for_spool(group_access: bool) -> Modes:
        return SHARED if group_access else PRIVATE


PRIVATE = Modes(0o600, 0o700, 0o700)
SHARED = Modes(0o640, 0o2750, 0o3770)


def writable_by_others(mode: int, shared: bool) -> str | None:
    """Who besides a file's owner could rewrite it in place, or None. On a private spool the
    group cannot reach the file (its directories are 0700); anyone-writable is never right."""
    if mode & 0o002:
        return "anyone"
    if mode & 0o020 and shared:
        return "its group"
    return None


def why_untrusted(st: os.stat_result, *, shared: bool, trusts: Callable[[int], bool] | None = None,
                  uid: int | None = None) -> str | None:
    """Why a file spoolq is about to act on must not be believed, or None: another uid wrote it
    (not root, not `uid`, the user the spool is used as (default: this one), not one `trusts`
    names), or someone else could rewrite it."""
    if st.st_uid not in (0, os.geteuid() if uid is None else uid) and not (trusts and trusts(st.st_uid)):
        return f"is owned by untrusted uid {st.st_uid}"
    who = writable_by_others(stat.S_IMODE(st.st_mode), shared)
    if who:
        return f"is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o})"
    return None
