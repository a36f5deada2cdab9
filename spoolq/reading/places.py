"""Where jobs are, from directory listings: a `Place` a listing found, and the finished jobs of
done/ or dead/ in the order they finished (FinishedOrder), kept between listings by a reader that
lists again and again (the dashboard, every 2 s a page is open: each lstat of a 100,000-file done/
was most of a refresh). Read-only; may import format and system."""

from __future__ import annotations

import os
import threading
from typing import NamedTuple

from ..format import layout
from ..system import fsio


class Place(NamedTuple):
    """Where a job's file was when its directory was listed."""

    path: str
    state: str  # its directory's state ("pending" for scheduled jobs too, until read)
    job_id: str
    owner: str | None = None
    inode: int | None = None  # a finished job's, from its listing: with path, its key in the census


def finished_at(st: os.stat_result) -> float:
    """When a done or dead job finished: its move into done/ or dead/, which is when its file's
    ctime was last set (a success is that move alone; a failure rewrites the file just before
    it). The mtime would say when it was enqueued or last failed: never use it for this."""
    return st.st_ctime


Key = tuple[str, int]  # a finished file as its directory's listing names it: its name and inode
Known = tuple[float, str, int, Place]  # when it finished, its name and inode (the order), where


class FinishedOrder:
    """The finished jobs of done/ and dead/, oldest first, each file's finish time read once (an
    lstat) while the listing names it with the same inode. Shared by a reader's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_dir: dict[str, tuple[frozenset[Key], dict[Key, Known], list[Place]]] = {}

    def places(self, directory: str, state: str) -> list[Place]:
        listed = frozenset(key for key in fsio.listdir_inodes(directory) if layout.is_json_entry(key[0]))
        with self._lock:
            keys, known, order = self._by_dir.get(directory, (frozenset(), {}, []))
        if listed == keys:
            return order
        # RACE: a job's file written anew (a requeue, a retry) is a new inode, so a new key and its
        # own lstat; only a purge and an enqueue of the same id whose new file is given the freed
        # inode, both between two listings, keep the old time: the order alone is off, for that
        # job (the page reads each file it shows). A file gone between the listing and its lstat is
        # left out, as by the next listing. Two threads that find a change each store a listing's
        # whole answer.
        found = {}
        for key in listed:
            hit = known.get(key)
            if hit is None:
                entry, inode = key
                st = fsio.lstat_if_there(f"{directory}/{entry}")
                if st is None:
                    continue
                hit = (finished_at(st), entry, inode, Place(f"{directory}/{entry}", state, layout.stem(entry), None, inode))
            found[key] = hit
        order = [hit[3] for hit in sorted(found.values(), key=lambda hit: hit[:3])]
        with self._lock:
            self._by_dir[directory] = (listed, found, order)
        return order
