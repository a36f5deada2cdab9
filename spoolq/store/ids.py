"""Job ids: an ``ids/<id>`` marker makes an id unique across all states.

A marker says who made it. It is a hard link to a small record of its creator (host, pid,
start time, boot, and a worker's owner token), written once and linked to each id's name:
link(2) fails if the name exists (on NFS too), so a marker is created exclusively and never
without its record, in one system call. A marker whose creator is gone while no job has its id
is abandoned (an enqueue or an adoption killed half-way): the next taker of the id takes it over,
and fsck frees it. Markers of spoolq 0.1 are empty files: their creator is unknown.
"""

from __future__ import annotations

import errno
import os

from ..format import json_codec, layout
from ..system import disk_full, fsio
from ..format.job import is_int
from .store import Store

MAX_RECORD_BYTES = 4096


class Reservations:
    """Markers made by one creator (this process, or one worker of it), as a context manager:
    the shared record file goes when it closes, the markers linked to it stay."""

    def __init__(self, store: Store, owner: str | None = None):
        self.store = store
        self.creator = store.creator(owner)
        self._ids_dir = store.layout.dir("ids") + os.sep  # plain concatenation: 100k joins add up
        self._record: str | None = None
        self._inodes: set[int] = set()  # of every record file of ours: its markers are links to them
        self._no_room = False

    def __enter__(self) -> Reservations:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def reserve(self, job_id: str) -> bool:
        """Make the marker of `job_id`; False if the id is taken."""
        try:
            self._link_record(self._ids_dir + job_id)
            return True
        except FileExistsError:
            return False

    def _link_record(self, path: str) -> None:
        """A new name for our record (FileExistsError if `path` exists)."""
        while True:
            try:
                os.link(self._record_file(), path)
                return
            except OSError as e:
                if not self._too_many_links(e):
                    raise
                self._start_another_record()

    def _too_many_links(self, e: OSError) -> bool:
        """Has our record as many links as the file system allows? ext4 allows 65,000 and says
        EMLINK; GlusterFS allows 100 (storage.max-hardlinks) and says ENOSPC, which a record
        already linked to markers tells apart from a full disk (there its first link fails)."""
        if e.errno == errno.EMLINK:
            return True
        if e.errno != errno.ENOSPC or self._record is None:
            return False
        try:
            return os.lstat(self._record).st_nlink > 1
        except OSError:
            return False

    def _start_another_record(self) -> None:
        # The markers linked to this one stay, so its content must outlive a power cut as theirs:
        # record_files() names only the newest.
        assert self._record is not None
        fsio.fsync_path(self._record)
        self._drop_record()

    def take_over(self, job_id: str) -> None:
        """Replace an abandoned marker with ours. The caller has judged it abandoned under the
        "ids" lock, which keeps two takers from both doing this."""
        self._link_over(job_id)

    def retag(self, job_id: str) -> None:
        """Make an existing marker ours before the job it reserves is deleted: if we die half-way
        through, the marker names a dead creator and is freed at once (else it would name the
        job's enqueuer, perhaps a program that runs for months). On a full disk, where our record
        cannot be written, the marker is left as it is."""
        if self._no_room:
            return
        try:
            self._record_file()
        except OSError as e:
            if not disk_full.is_disk_full(e):
                raise
            self._no_room = True
            return
        self._link_over(job_id)

    def _link_over(self, job_id: str) -> None:
        """Our record linked in place of the marker, in one rename over it: the id's name never
        goes away, so no one can reserve it in between."""
        staged = self.store.temp_path(self._ids_dir)
        self._link_record(staged)
        try:
            os.rename(staged, self._ids_dir + job_id)
        except BaseException:
            fsio.unlink_quietly(staged)
            raise

    def release(self, job_id: str) -> None:
        """Give back `job_id`, if its marker is one of ours (a link to one of our records): so a
        signal between the link and our noting it cannot leak the id, nor free another's."""
        path = self._ids_dir + job_id
        try:
            if os.lstat(path).st_ino in self._inodes:
                os.unlink(path)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        self._drop_record()

    def record_files(self) -> list[str]:
        """The record this creator's markers link to, if it made one (to make it durable)."""
        return [self._record] if self._record is not None else []

    def _record_file(self) -> str:
        if self._record is None:
            path = self._record = self.store.temp_path()  # noted first: close() removes it whatever happens
            try:
                self.store.write_file(path, self.creator.to_json(), durable=False)
                self._inodes.add(os.lstat(path).st_ino)
            except BaseException:
                self._drop_record()
                raise
        return self._record

    def _drop_record(self) -> None:
        if self._record is not None:
            path, self._record = self._record, None
            fsio.unlink_quietly(path)


def creator_of(store: Store, job_id: str) -> layout.Creator | None:
    """Who made the marker of `job_id`: None if there is none, it is empty (spoolq 0.1) or it
    cannot be read."""
    try:
        fd = os.open(store.layout.id_marker(job_id), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if store.why_not_owners(os.fstat(fd)):
            return None  # a record someone else wrote, or could rewrite, names no creator
        data = os.read(fd, MAX_RECORD_BYTES)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        record = json_codec.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("host"), str) or not is_int(record.get("pid")):
        return None
    texts = {k: record.get(k) if isinstance(record.get(k), str) else None for k in ("start", "boot", "owner")}
    pidns = record.get("pidns") if is_int(record.get("pidns")) else None
    return layout.Creator(host=record["host"], pid=record["pid"], pidns=pidns, **texts)
