"""Fired slots: what a schedule has fired, one durable marker per slot, kept apart from its jobs.

``schedules/<name>.fired/<YYYYMMDDTHHMMZ>`` (the slot in UTC, as in its job's id) holds
"<slot epoch> <job id> <state>": state ``marked`` from before its job is published, ``fired``
once it is. A marker is created exclusively (a rename that never replaces) and made durable
before the job is published, so whoever creates it fires the slot, and the slot stays fired
whether or not its job still exists: retention and purge never look here.

A worker fires no slot whose marker exists, nor one that a later slot's marker follows, unless
that marker is more than HORIZON ahead of its clock: a host whose clock is a few minutes ahead
fires each slot early and the others fire none of them again, while one whose clock is wrong by
hours (booted before its clock was set) does not hold the others back for those hours. Pruning
keeps every marker younger than RETAIN on the file system's clock (not a host's), and the KEEP
newest, so a host whose clock is up to RETAIN + HORIZON behind still finds a slot, or a later
one, that was fired.

A marker is believed only if it is a regular file of the spool's owner or a trusted uid that
neither its group nor others may write, and its content names the slot its name says (a marker
renamed by someone who may write into the directory names another slot). Markers are written
without group write, whatever the spool's modes. ``schedules/<name>.last`` ("<epoch> <job id>",
written by spoolq before markers) counts as a fired marker, until pruned like one.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import NamedTuple

from ..format import modes
from ..format.json_values import MAX_EPOCH
from ..store import trust
from ..system import fsio
from ..store.store import Store

STAMP = "%Y%m%dT%H%MZ"
MARKED, FIRED = "marked", "fired"
KEEP = 2  # the newest markers pruning never removes
HORIZON = 3600.0  # seconds: a later slot's marker further ahead of our clock than this is from a wrong clock
RETAIN = 2 * HORIZON  # seconds, on the file system's clock: younger markers are never pruned
MAX_MARKER_BYTES = 512


def stamp(slot: float) -> str:
    """A slot as it stands in its job's id and its marker's name."""
    return datetime.fromtimestamp(slot, timezone.utc).strftime(STAMP)


class Marker(NamedTuple):
    slot: float
    job_id: str
    state: str  # MARKED: its job may not have been published; FIRED: it was
    name: str  # its entry: a stamp in <name>.fired/, or the legacy <name>.last


class FiredSlots:
    """The markers of the schedules in one spool's schedules/ directory."""

    def __init__(self, store: Store, directory: str):
        self.store = store
        self.directory = directory

    def newest(self, name: str, until: float = float("inf")) -> Marker | None:
        """The newest believed marker of schedule `name` whose slot is at most `until` (a fresh
        listing; only what it takes to find one is read)."""
        for slot, path, entry in reversed(self._entries(name)):
            if slot <= until:
                marker = self._read(path, entry)
                if marker is not None:
                    return marker
        return None

    def mark(self, name: str, slot: float, job_id: str) -> bool:
        """Create the marker of `slot`, durable, in state MARKED; False if it exists (the slot is
        someone else's to fire)."""
        fired = self._fired_dir(name)
        if not os.path.isdir(fired):
            # RACE: two firers of the first slot both make it (the second finds it there); a
            # `schedule rm` that removes it before our rename makes the rename fail: nothing fires.
            self.store.make_dir(fired)
            fsio.fsync_dir(self.directory)  # the directory's entry, before any marker in it counts
        staged = self.store.temp_path()
        fsio.write_file(staged, _content(slot, job_id, MARKED), durable=True, mode=self._mode())
        try:
            fsio.move_no_replace(staged, os.path.join(fired, stamp(slot)))
        except FileExistsError:
            return False
        finally:
            fsio.unlink_quietly(staged)  # gone after a move; left by a refused one
        fsio.fsync_dir(fired)
        return True

    def settle(self, name: str, slot: float, job_id: str) -> None:
        """Its job is published: the marker says so (replaced in one rename, so its name never
        goes away and nobody can create it in between)."""
        path = os.path.join(self._fired_dir(name), stamp(slot))
        fsio.publish(self.store.temp_path(), _content(slot, job_id, FIRED), path, mode=self._mode(), durable=True)

    def unmark(self, name: str, slot: float) -> None:
        """Remove the marker of `slot`, ours, just made for a slot a later marker says is past."""
        fsio.unlink_quietly(os.path.join(self._fired_dir(name), stamp(slot)))

    def prune(self, name: str, fs_now: float) -> None:
        """Remove the believed markers that are neither among the KEEP newest nor younger than
        RETAIN on the file system's clock (what is not believed is not spoolq's: left alone)."""
        # RACE: other firers prune, and mark newer slots, while we list: a marker we did not see
        # is newer than those we keep, and two pruners remove the same ones (unlink_quietly). A
        # reader listing meanwhile still finds a marker of its slot, or a later one, as long as its
        # clock is within RETAIN + HORIZON of the file system's.
        entries = self._entries(name)
        kept = 0
        cutoff = fs_now - RETAIN
        for slot, path, entry in reversed(entries):
            if kept == KEEP:
                break
            if self._read(path, entry) is not None:
                kept += 1
                cutoff = min(cutoff, slot)
        for slot, path, entry in entries:
            if slot < cutoff and self._read(path, entry) is not None:
                fsio.unlink_quietly(path)

    def remove(self, name: str) -> None:
        """Every marker of schedule `name`, and their directory (`schedule rm`)."""
        fired = self._fired_dir(name)
        for entry in fsio.listdir(fired):
            fsio.unlink_quietly(os.path.join(fired, entry))
        try:
            os.rmdir(fired)
        except OSError:
            pass  # gone, or something of someone else's is left in it: left alone
        fsio.unlink_quietly(self._last_path(name))

    def _entries(self, name: str) -> list[tuple[float, str, str | None]]:
        """(slot, path, entry) of every marker by the slot its name says, oldest first; the
        legacy .last (entry None) by the slot it holds."""
        fired = self._fired_dir(name)
        found = []
        for entry in fsio.listdir(fired):
            try:
                found.append((datetime.strptime(entry, STAMP).replace(tzinfo=timezone.utc).timestamp(),
                              os.path.join(fired, entry), entry))
            except ValueError:
                continue  # not a marker's name
        legacy = self._read(self._last_path(name), None)
        if legacy is not None:
            found.append((legacy.slot, self._last_path(name), None))
        return sorted(found, key=lambda e: e[0])

    def _read(self, path: str, entry: str | None) -> Marker | None:
        """The marker at `path` if it is believed (`entry`: its name in <name>.fired/; None for
        the legacy .last, which names no slot)."""
        try:
            data, st = fsio.read_regular(path, MAX_MARKER_BYTES, single_link=False)
            fields = data.decode().split()
            slot = float(fields[0])
        except (OSError, ValueError, UnicodeDecodeError, IndexError):
            return None
        if modes.why_untrusted(st, shared=True, trusts=self.store.trusts_uid):
            return None  # another user wrote it, or could have (modes.py): only spoolq writes markers
        if not 0 <= slot < MAX_EPOCH or slot != int(slot):
            return None
        if entry is None and len(fields) == 2:
            return Marker(slot, fields[1], FIRED, os.path.basename(path))
        if len(fields) != 3 or fields[2] not in (MARKED, FIRED) or entry != stamp(slot):
            return None
        return Marker(slot, fields[1], fields[2], entry)

    def _mode(self) -> int:
        return self.store.modes.file

    def _fired_dir(self, name: str) -> str:
        return os.path.join(self.directory, name + trust.FIRED_SUFFIX)

    def _last_path(self, name: str) -> str:
        return os.path.join(self.directory, f"{name}.last")


def _content(slot: float, job_id: str, state: str) -> bytes:
    return f"{slot:.0f} {job_id} {state}\n".encode()
