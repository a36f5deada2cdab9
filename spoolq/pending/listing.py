"""One listing of pending/ per `worker start`, shared by its workers.

On a network file system a listing of a big pending/ costs the servers a round trip per few
hundred names (about 1.3 s at 100,000 on GlusterFS), and the workers of one host listing it each
in turn ask the same question N times. The workers of one supervisor share an anonymous file in
memory (a memfd) that the supervisor makes before it forks them: whoever lists writes the names
there, and a sibling whose turn comes soon after reads them instead of listing. Nothing is on disk:
no path another local user could plant or read, nothing to clean up; it goes with the last of the
processes. Workers of separate `worker start` commands on one host do not share.

A snapshot: one header line ``spoolq-listing 1 <serial> <started> <cost> <covered> <stamp> <count>
<bytes>`` then the names, NUL-separated (the one byte a name cannot hold). A writer killed half-way
leaves a snapshot whose byte count does not match: readers ignore it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterator

MAGIC = b"spoolq-listing 1"
NOTED_FOR = 120.0  # seconds a noted name is kept for noted_since(): longer than any listing takes
NOTED_MAX = 20_000


@dataclass
class Snapshot:
    serial: int  # a new number per listing: a reader takes each at most once
    started: float  # time.monotonic() when its listing began (one clock for the whole host)
    cost: float  # seconds the listing took
    covered: bool  # its lister's ListingGate judged it to cover every change its stamp stands for
    stamp: tuple[int, ...] | None  # pending/'s stamp, stat'ed just before listing
    names: list[str]


class SharedListing:
    """The memfd and its lock. POSIX record locks (lockf) belong to a process, not to a descriptor,
    so siblings that inherited the one descriptor still exclude each other."""

    def __init__(self, fd: int):
        self.fd = fd

    @classmethod
    def create(cls) -> SharedListing | None:
        """None where there are no memfds: every worker then lists for itself, as before."""
        try:
            return cls(os.memfd_create("spoolq-listing", os.MFD_CLOEXEC))  # CLOEXEC: jobs never see it
        except (AttributeError, OSError):
            return None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def read(self) -> Snapshot | None:
        with _lock_held(self.fd, fcntl.LOCK_SH):
            data = _read_whole(self.fd)
        return decode(data)

    @contextlib.contextmanager
    def listing_turn(self) -> Iterator[None]:
        """Held while one worker lists and publishes: a sibling that wants a listing too waits for
        it (its own would ask the servers the same question) and then reads the result."""
        with _lock_held(self.fd, fcntl.LOCK_EX):
            yield

    def publish(self, snapshot: Snapshot) -> None:
        """Only inside listing_turn()."""
        _replace_contents(self.fd, encode(snapshot))


class Listings:
    """Where one worker's listings of pending/ come from: its own, or (with `shared`) its turn at
    listing for its siblings, or a sibling's that is fresh enough."""

    def __init__(self, list_names: Callable[[], list[str]], shared: SharedListing | None = None):
        self._list_names = list_names
        self.shared = shared
        self._noted: list[tuple[float, str]] = []  # (monotonic, name) learned other than by a listing
        self._used_serial = 0  # the last snapshot taken

    def noted(self, name: str) -> None:
        """A name reached the worker's index by an event, an adoption or a retry."""
        now = time.monotonic()
        if self._noted and (len(self._noted) >= NOTED_MAX or now - self._noted[0][0] > NOTED_FOR):
            self._noted = [(t, n) for t, n in self._noted[-NOTED_MAX // 2:] if now - t <= NOTED_FOR]
        self._noted.append((now, name))

    def noted_since(self, started: float) -> list[str]:
        """Names learned since a listing began: a rescan by it would forget them (the worker adds
        them back), though they may have come after it."""
        return [name for t, name in self._noted if t >= started]

    def take(self, asked: float, max_age: float, stamp: tuple[int, ...] | None,
             would_cover: Callable[[float], bool]) -> tuple[Snapshot, bool]:
        """A listing for a worker that asked at `asked` (monotonic) having seen `stamp`; returns
        it and whether a sibling took it."""
        def own() -> Snapshot:
            started = time.monotonic()
            names = self._list_names()
            return Snapshot(0, started, time.monotonic() - started, would_cover(started), stamp, names)

        if self.shared is None:
            return own(), False
        snapshot, theirs = list_and_share(self.shared, lambda s: self._fresh_enough(s, asked, max_age), own)
        self._used_serial = snapshot.serial
        return snapshot, theirs

    def _fresh_enough(self, snapshot: Snapshot, asked: float, max_age: float) -> bool:
        """A sibling's listing serves if this worker has not used it yet and it is no older than a
        poll interval when asked for (what one more poll would have cost anyway)."""
        return snapshot.serial != self._used_serial and asked - snapshot.started <= max_age


def list_and_share(shared: SharedListing, wanted: Callable[[Snapshot], bool],
                   list_names: Callable[[], Snapshot]) -> tuple[Snapshot, bool]:
    """A sibling's snapshot that `wanted` accepts, or a fresh listing published for the others.
    Returns (snapshot, whether it is a sibling's)."""
    found = _readable(shared)
    if found is not None and wanted(found):
        return found, True
    with shared.listing_turn():
        # RACE: a sibling may have listed while this one waited for its turn: take that.
        found = decode(_read_whole(shared.fd))
        if found is not None and wanted(found):
            return found, True
        fresh = list_names()
        fresh.serial = (found.serial + 1) if found is not None else 1
        with contextlib.suppress(OSError):  # a full /dev/shm costs the sharing, not the listing
            shared.publish(fresh)
        return fresh, False


def _readable(shared: SharedListing) -> Snapshot | None:
    try:
        return shared.read()
    except OSError:
        return None


def encode(snapshot: Snapshot) -> bytes:
    body = b"\0".join(os.fsencode(name) for name in snapshot.names)
    stamp = ",".join(map(str, snapshot.stamp)) if snapshot.stamp else "-"
    header = (f" {snapshot.serial} {snapshot.started!r} {snapshot.cost!r} {int(snapshot.covered)} {stamp} "
              f"{len(snapshot.names)} {len(body)}\n").encode()
    return MAGIC + header + body


def decode(data: bytes) -> Snapshot | None:
    """The snapshot, or None for an empty, torn or foreign one."""
    head, newline, body = data.partition(b"\n")
    fields = head.split(b" ")
    if not newline or len(fields) != 9 or b" ".join(fields[:2]) != MAGIC:
        return None
    try:
        serial, started, cost, covered, count, size = (int(fields[2]), float(fields[3]), float(fields[4]),
                                                       fields[5] == b"1", int(fields[7]), int(fields[8]))
        stamp = None if fields[6] == b"-" else tuple(int(part) for part in fields[6].split(b","))
    except ValueError:
        return None
    if size != len(body):
        return None
    names = body.decode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()).split("\0") if body else []
    if len(names) != count:
        return None
    return Snapshot(serial, started, cost, covered, stamp, names)


# ---- side effects -----------------------------------------------------------------------------

@contextlib.contextmanager
def _lock_held(fd: int, kind: int) -> Iterator[None]:
    fcntl.lockf(fd, kind)
    try:
        yield
    finally:
        fcntl.lockf(fd, fcntl.LOCK_UN)


def _read_whole(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks, offset = [], 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _replace_contents(fd: int, data: bytes) -> None:
    # Truncated first: a writer killed before the last byte leaves a snapshot shorter than its
    # header says, which decode() refuses.
    os.ftruncate(fd, 0)
    view, offset = memoryview(data), 0
    while offset < len(data):
        offset += os.pwrite(fd, view[offset:], offset)
