"""Concurrency limits: at most N jobs of a queue in processing/ at once, across every worker on
every host, by N slot tokens that workers take by renaming them.

``control/limits`` holds ``<queue> <N>`` lines (written whole under the config lock). For each
limited queue, ``slots/<queue>%<k>`` (k < N) is a free slot, renamed to
``slots/<queue>%<k>%<owner>`` by the owner that takes it: the taker is named in the one atomic
step that takes it, and two takers cannot both rename one token. A worker takes a slot before it
claims a job of the queue and gives it back (the rename back) once the job has moved on: done,
dead or pending again; a claim lost to another worker gives it back at once. A slot whose owner
is gone (recovery's judge) is given back by recovery; one above a lowered limit is removed when
given back. A worker frozen past its lease may still run its job for a moment after its slot
was given back, until it finds its fence: the one way a limit is exceeded, and only briefly.
"""

from __future__ import annotations

import errno
import os
from typing import Callable

from ..system import fsio
from ..format.job import valid_queue
from ..system.cached_file import StampedFile
from .store import Store

SEP = "%"  # no queue name or owner token holds it
MAX_LIMIT = 10_000
MAX_BYTES = 256 * 1024


class Slots:
    def __init__(self, store: Store):
        self.store = store
        self.dir = store.layout.dir("slots")
        self.limits_path = os.path.join(store.layout.dir("control"), "limits")
        self._limits = StampedFile(self.limits_path, self._read_limits, {})

    # ---- limits --------------------------------------------------------------------------------

    def limits(self) -> dict[str, int]:
        """Queue -> its limit, for the limited queues. One stat; read again when it changes. A
        line that is not "<queue> <N>" is skipped (that queue runs unlimited, as before it)."""
        return self._limits.get()

    def _read_limits(self) -> dict[str, int]:
        try:
            data, st = fsio.read_regular(self.limits_path, MAX_BYTES)
        except (OSError, ValueError):
            return {}
        if self.store.why_not_owners(st):
            return {}  # limits someone else wrote, or could have: not the owner's
        out = {}
        for line in data.decode("utf-8", "replace").splitlines():
            words = line.split()
            if len(words) == 2 and valid_queue(words[0]) and words[1].isdigit() and 0 < int(words[1]) <= MAX_LIMIT:
                out[words[0]] = int(words[1])
        return out

    def set_limit(self, queue: str, limit: int) -> None:
        """At most `limit` jobs of `queue` at once (0: no limit). Free tokens are made or removed
        to match; held ones above the limit go when given back."""
        with self.store.locked("config"):
            limits = dict(self._read_limits())
            before = limits.get(queue, 0)
            if limit:
                limits[queue] = limit
            else:
                limits.pop(queue, None)
            self.store.make_dir(self.dir)
            text = "".join(f"{q} {n}\n" for q, n in sorted(limits.items()))
            self.store.publish(self.limits_path, text.encode())
            self._limits.forget()
            # RACE: workers take and give back tokens while we look: only slots above the old limit
            # are made (one that exists in either form, as one listing saw it, is not made again),
            # so a token between its two names can never be made twice.
            seen = {int(name.split(SEP)[1]) for name in fsio.listdir(self.dir)
                    if name.split(SEP)[0] == queue and name.count(SEP) in (1, 2) and name.split(SEP)[1].isdigit()}
            for k in range(before, limit):
                if k not in seen:
                    self._make_token(f"{queue}{SEP}{k}")
            for k, name in self._tokens(queue, held=False):
                if k >= limit:
                    fsio.unlink_quietly(os.path.join(self.dir, name))
            fsio.fsync_dir(self.dir)

    # ---- taking and giving back -------------------------------------------------------------------

    def take(self, queue: str, owner: str) -> str | None:
        """A free slot of `queue`, now held by `owner` (its held name), or None: all are taken."""
        for k, name in self._tokens(queue, held=False):
            held = f"{name}{SEP}{owner}"
            # RACE: other workers may take the same token, and give it back, at any moment; one
            # rename wins, the rest try the next (a token back under its free name is just missed).
            try:
                os.rename(os.path.join(self.dir, name), os.path.join(self.dir, held))
            except FileNotFoundError:
                continue
            return held
        return None

    def give_back(self, held: str) -> None:
        """Return a slot taken by take() (gone already if recovery judged its owner gone)."""
        queue, k, _owner = held.split(SEP)
        path = os.path.join(self.dir, held)
        if int(k) >= self.limits().get(queue, 0):
            fsio.unlink_quietly(path)  # the limit was lowered (or removed) meanwhile
            return
        try:
            os.rename(path, os.path.join(self.dir, f"{queue}{SEP}{k}"))
        except FileNotFoundError:
            pass  # RACE: recovery gave it back, judging this owner gone

    def return_orphans(self, gone: Callable[[str], bool]) -> int:
        """Give back the slots of owners that are gone (recovery): how many."""
        count = 0
        for name in fsio.listdir(self.dir):
            parts = name.split(SEP)
            if len(parts) == 3 and gone(parts[2]):
                self.give_back(name)
                count += 1
        return count

    def in_use(self) -> dict[str, int]:
        """Queue -> slots held now."""
        out: dict[str, int] = {}
        for name in fsio.listdir(self.dir):
            parts = name.split(SEP)
            if len(parts) == 3:
                out[parts[0]] = out.get(parts[0], 0) + 1
        return out

    def _tokens(self, queue: str, *, held: bool) -> list[tuple[int, str]]:
        out = []
        for name in fsio.listdir(self.dir):
            parts = name.split(SEP)
            if parts[0] == queue and len(parts) == (3 if held else 2) and parts[1].isdigit():
                out.append((int(parts[1]), name))
        return sorted(out)

    def _make_token(self, name: str) -> None:
        try:
            self.store.write_file(os.path.join(self.dir, name), b"", durable=False)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise
