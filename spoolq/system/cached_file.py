"""A small file read again only when it changes: the control files asked before every claim."""

from __future__ import annotations

import os
from typing import Callable, Generic, TypeVar

from .fsio import present

T = TypeVar("T")


class StampedFile(Generic[T]):
    """A small file read again only when its stamp (inode, mtime, ctime, size; by lstat: a symlink
    is not followed) changes: `read` makes the value, `missing` stands for no file. Control files
    (control/pause, control/limits) asked before every claim cost one stat this way."""

    def __init__(self, path: str, read: Callable[[], T], missing: T):
        self.path = path
        self._read = read
        self._missing = missing
        self._cache: tuple[tuple[int, ...], T] | None = None

    def get(self) -> T:
        if not present(self.path):
            return self._missing  # the usual answer for a pause or a limit, found without an exception
        try:
            st = os.lstat(self.path)
        except OSError:
            return self._missing
        stamp = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
        if self._cache is None or self._cache[0] != stamp:
            self._cache = (stamp, self._read())
        return self._cache[1]

    def forget(self) -> None:
        """Read it again next time (its writer just changed it)."""
        self._cache = None
