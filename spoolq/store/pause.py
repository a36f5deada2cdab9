"""Pausing: while ``control/pause`` exists, workers everywhere claim nothing from the queues it
names. Running jobs finish; enqueues, drop-ins and recovery go on.

``control/pause`` holds queue names, one per line, ``*`` for every queue. A file that names
none (empty: ``touch control/pause``), or has a line that is not a queue name (edited by hand
into garbage), or is not a regular file, pauses everything: whoever made it meant to pause
something, and a queue that waits is safer than a job that runs. Removing the file resumes everything. spoolq rewrites it whole (temp file, then
rename) under the config lock, and removes it when the last name goes. A worker asks before
every claim: one stat, the file read again only when that stat changes.
"""

from __future__ import annotations

import os
from typing import Callable

from ..system import fsio
from ..format.job import valid_id
from ..system.cached_file import StampedFile
from .store import Store

EVERY = "*"
MAX_BYTES = 64 * 1024  # a hand-edited or hostile file is read no further


class Pauses:
    def __init__(self, store: Store):
        self.store = store
        self.path = os.path.join(store.layout.dir("control"), "pause")
        # A symlink there is not followed (lstat): it pauses everything (_read).
        self._file = StampedFile(self.path, self._read, frozenset())
        self.problem: str | None = None  # why the file was taken to pause everything, if it names nothing

    def paused(self) -> frozenset[str]:
        """The paused queues ({"*"}: all of them); empty when nothing is paused."""
        return self._file.get()

    def blocks(self, queue: str = "default") -> bool:
        names = self.paused()
        return EVERY in names or queue in names

    def for_worker(self, queues: frozenset[str] | None) -> tuple[bool, frozenset[str]]:
        """For a worker that takes `queues` (None: every queue): whether everything it takes is
        paused, and the paused queues it passes over."""
        names = self.paused()
        return EVERY in names or (queues is not None and queues <= names), names

    def describe(self, everything: bool, names: frozenset[str], leaving: bool) -> str:
        """A worker's log line when what it obeys changes."""
        if everything:
            why = self.problem or "`spoolq resume` resumes"
            return f"paused ({why}): " + ("leaving" if leaving else "not claiming")
        if names:
            return f"queues paused, passed over: {', '.join(sorted(names))}"
        return "not paused: claiming from every queue it takes"

    def pause(self, queue: str | None = None) -> frozenset[str]:
        return self._change(lambda names: names | {queue or EVERY})

    def resume(self, queue: str | None = None) -> frozenset[str]:
        """One queue, or (without one) everything: the spool and every queue paused by name.
        A queue resumed while the whole spool is paused stays paused with it."""
        return self._change(lambda names: names - {queue} if queue else frozenset())

    def _change(self, how: Callable[[frozenset[str]], frozenset[str]]) -> frozenset[str]:
        with self.store.locked("config"):
            self._file.forget()
            names = how(self.paused())
            if names:
                self.store.publish(self.path, "".join(f"{name}\n" for name in sorted(names)).encode())
            else:
                fsio.unlink_quietly(self.path)
                fsio.fsync_dir(os.path.dirname(self.path))
            self._file.forget()
            return names

    def _read(self) -> frozenset[str]:
        try:
            data, st = fsio.read_regular(self.path, MAX_BYTES)
            untrusted = self.store.why_not_owners(st)
            if untrusted:
                raise ValueError(untrusted)
        except FileNotFoundError:
            return frozenset()  # removed since the stat: resumed
        except (OSError, ValueError) as e:
            self.problem = f"control/pause {getattr(e, 'strerror', None) or e}: taken to pause every queue"
            return frozenset({EVERY})
        lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
        wrong = [line for line in lines if line != EVERY and not valid_id(line)]
        if wrong or not lines:
            self.problem = (f"control/pause has a line that is not a queue name ({wrong[0][:40]!r})" if wrong
                            else "control/pause names no queue") + ": taken to pause every queue"
            return frozenset({EVERY})
        self.problem = None
        return frozenset(lines)
