"""Maildir delivery into a spool, and the files no worker will ever take.

``S/maildir/`` is a Maildir (layout.MAILDIR), so that any mail delivery agent (safecat, maildrop,
procmail, getmail) can hand jobs in: it writes a file under a unique name in ``tmp/``, then
link()s it into ``new/`` and unlink()s the ``tmp/`` name. Every entry of ``new/`` not starting
with ``.`` is a job file, whatever its name. A worker moves it on into ``pending/`` as a drop-in
(``<name>.json``: its name is its id when it is a valid one), oldest first, where the drop-in
rules (dropins.py) judge it as any other: trust, a single link, JSON, quarantine. A file seen
between a delivery's link() and unlink() has two links: it waits out that window (dropins.py)
instead of being quarantined for it.

A file that will never be taken is a stray: in ``pending/``, a name not ending in ``.json`` or a
directory; in the Maildir, a directory in ``new/``, anything in ``cur/`` (where a mail reader puts
what it has seen: spoolq never looks there), and a ``tmp/`` file older than Maildir's 36 hours (a
delivery that died). fsck and ``status`` report them; nothing here deletes one.
"""

from __future__ import annotations

import os
import stat
from typing import NamedTuple

from . import shards
from ..format import layout
from ..system import fsio
from .store import Store

TMP, NEW, CUR = layout.MAILDIR[1:]
ABANDONED_AFTER = 36 * 3600.0  # seconds: Maildir's own rule for a tmp/ file whose writer died
LONGEST_NAME = 255  # bytes: a name in pending/ (the Maildir name plus ".json")


class Stray(NamedTuple):
    path: str
    why: str


def make(store: Store) -> None:
    """The Maildir, on a spool made before it existed: its owner makes it (a worker at start)."""
    for name in layout.MAILDIR:
        store.make_dir(store.layout.dir(name))


def deliveries(lay: layout.Layout) -> list[tuple[str, os.stat_result]]:
    """Every job file in ``maildir/new/`` (any name but a ``.`` one; a directory is a stray)."""
    new, found = lay.dir(NEW), []
    for name in fsio.listdir(new):
        st = None if name.startswith(".") else fsio.lstat_if_there(os.path.join(new, name))
        if st is not None and not stat.S_ISDIR(st.st_mode):
            found.append((name, st))
    return found


def collect(store: Store) -> list[str]:
    """Move every delivery in ``maildir/new/`` into ``pending/``, oldest first; their names there."""
    found = sorted((st.st_ctime_ns, name) for name, st in deliveries(store.layout))
    moved = [target for _, name in found if (target := _to_pending(store, name))]
    if moved:
        fsio.fsync_dir(store.layout.pending)
    return moved


def _to_pending(store: Store, name: str) -> str | None:
    """Move one delivery into pending/; its name there, or None if it went meanwhile."""
    source = os.path.join(store.layout.dir(NEW), name)
    target = pending_name(name)
    while True:
        try:
            # RACE: several workers collect at once, and a deliverer may still hold a second link
            # in tmp/: one rename wins and the others find the source gone; a second link is
            # waited out in pending/ (dropins.inspect), and whatever the name holds by the time
            # of the rename is judged there, as every drop-in is, before anything reads it.
            moved = fsio.move_no_replace(source, os.path.join(store.layout.pending, target), shared_source=True)
            return target if moved else None
        except FileExistsError:  # a drop-in of that name is waiting: never replace it
            target = f"mail.{layout.random_hex(6)}.json"
        except OSError:  # it stays in new/ for the next look (a rescan); a worker never dies of it
            return None


def pending_name(name: str) -> str:
    """The drop-in name of a delivery: its own name plus ``.json``, unless that would not be one."""
    target = name if name.endswith(".json") else f"{name}.json"
    if len(target.encode(errors="surrogateescape")) > LONGEST_NAME or not layout.is_dropin(target):
        return f"mail.{layout.random_hex(6)}.json"
    return target


def strays(lay: layout.Layout, now: float) -> list[Stray]:
    """Every file in pending/ or the Maildir that no worker will ever take, and why."""
    found = [Stray(os.path.join(lay.pending, name), why) for name, why in _pending_strays(lay.pending)]
    for name in sorted(fsio.listdir(lay.dir(NEW))):
        st = None if name.startswith(".") else fsio.lstat_if_there(os.path.join(lay.dir(NEW), name))
        if st is not None and stat.S_ISDIR(st.st_mode):
            found.append(Stray(os.path.join(lay.dir(NEW), name), "a directory in maildir/new/ is never a job"))
    for name in sorted(fsio.listdir(lay.dir(CUR))):
        if not name.startswith("."):
            found.append(Stray(os.path.join(lay.dir(CUR), name), "spoolq never reads maildir/cur/ (a mail "
                               "reader moves what it has seen there): move it back to maildir/new/ to run it"))
    for name in sorted(fsio.listdir(lay.dir(TMP))):
        st = fsio.lstat_if_there(os.path.join(lay.dir(TMP), name))
        if st is not None and stat.S_ISREG(st.st_mode) and now - st.st_mtime > ABANDONED_AFTER:
            hours = (now - st.st_mtime) / 3600
            found.append(Stray(os.path.join(lay.dir(TMP), name), f"a delivery abandoned in maildir/tmp/ "
                               f"{hours:.0f} hours ago (its writer died before moving it to new/)"))
    return found


def _pending_strays(pending: str) -> list[tuple[str, str]]:
    found = []
    for name in sorted(fsio.listdir(pending)):
        if name.startswith(".") or shards.is_shard(name) or layout.parse_pending(name) is not None:
            continue  # staging names, shards and jobs (a canonical name is looked at by claims)
        if not layout.is_json_entry(name):
            found.append((name, "not named *.json: never a job (rename it to end in .json, or deliver it "
                                "into maildir/new/, where any name is one)"))
            continue
        st = fsio.lstat_if_there(os.path.join(pending, name))
        if st is not None and stat.S_ISDIR(st.st_mode):
            found.append((name, "a directory: never a job"))
    return found
