"""Spool locks: a token file that its holder renames to a name of its own.

For a lock NAME, ``locks/NAME.anchor`` is made once and never moved; ``locks/NAME.lock`` is a
hard link to it, the token, present while the lock is free. Taking the lock is one rename of the
token to ``locks/NAME.lock.<holder>``, where <holder> names the taker (pid, start time, boot,
pid namespace, a hash of the host); giving it back is the rename back. So:

- whoever holds the lock is in its name, written in the same atomic step that takes it;
- a holder that is gone is broken by renaming *its own* name back to the token: two breakers
  cannot both succeed, and a breaker can never move a newer holder's lock (that has another name);
- no step needs a free block or inode (`purge`, the way to free space, locks on a full disk);
- rename is atomic on NFS and through FUSE views, where flock(2) may not reach the server;
- the anchor's link count says whether a token or a holder exists (2) or not (1), without a
  directory listing, so a missing token is remade only when there is none.

A holder on another host, or in another pid namespace, cannot be judged from here: a contender
waits for it, and a timeout names the file to rename back by hand. (Two earlier designs fell to
the project's own tests: filelock's SoftFileLock left empty markers that nothing broke, and a
symlink lock could be broken under a live holder.)
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Iterator

from . import fsio, layout, liveness
from .errors import SpoolError

POLL = 0.02


@contextmanager
def locked(path: str, *, mode: int, timeout: float = 30.0) -> Iterator[None]:
    """Hold the lock whose token is `path` for the block."""
    held = f"{path}.{holder_tag()}"
    deadline = time.monotonic() + timeout
    while not _take(path, held, mode):
        if time.monotonic() >= deadline:
            raise SpoolError(f"timed out after {timeout:g}s waiting for lock {path} ({_holders(path)}); "
                             "if that holder is gone, rename its file back to the lock's name")
        time.sleep(POLL)
    try:
        yield
    finally:
        try:
            os.rename(held, path)
        except FileNotFoundError:
            pass  # broken by someone who took us for gone: theirs to give back


def make(path: str, mode: int) -> None:
    """The anchor, and the token if neither it nor a holder exists (with the layout)."""
    anchor = _anchor(path)
    try:
        fsio.write_file(anchor, b"", durable=False, mode=mode)
    except FileExistsError:
        pass
    _remake_token(path)


def holder_tag() -> str:
    """This process as a lock holder, as it stands in the held file's name."""
    pid = os.getpid()
    return (f"{pid}.{liveness.start_token(pid) or 0}.{(liveness.boot_id() or '')[:8]}."
            f"{liveness.pid_namespace() or 0}.{layout.host_hash()}")


def why_holder_gone(tag: str) -> str | None:
    """Why the holder named by `tag` is gone, or None (alive, or not to be judged from here)."""
    parts = tag.split(".")
    if len(parts) != 5 or not all(p.isascii() and (p.isalnum() or p == "") for p in parts) \
            or not parts[0].isdigit():
        return None
    pid, start, boot, pidns, host = parts
    here = (layout.host_hash(), (liveness.boot_id() or "")[:8], str(liveness.pid_namespace() or 0))
    if (host, boot, pidns) != here:
        return None  # another host, boot or pid namespace: its pid means nothing here
    if liveness.alive(int(pid), start if start != "0" else None):
        return None
    return f"its holder, pid {pid}, is gone"


def stale_holders(path: str) -> list[tuple[str, str]]:
    """(held file, why) for every holder of the lock at `path` that is gone."""
    directory, base = os.path.split(path)
    out = []
    for name in fsio.listdir(directory):
        if name.startswith(base + "."):
            why = why_holder_gone(name[len(base) + 1:])
            if why:
                out.append((os.path.join(directory, name), why))
    return out


def give_back(held: str, path: str) -> bool:
    """Rename a gone holder's file back to the token. False if it was not there any more."""
    return fsio.move(held, path)


def _take(path: str, held: str, mode: int) -> bool:
    try:
        os.rename(path, held)
        return True
    except FileNotFoundError:
        pass
    if not os.path.lexists(_anchor(path)):
        make(path, mode)  # a spool made before these locks
    elif _remake_token(path):
        return False  # try again at once
    for stale, _ in stale_holders(path):
        # RACE: another contender may give the same holder back first; this rename then fails,
        # and a newer holder is never touched: its file has another name.
        give_back(stale, path)
    return False


def _remake_token(path: str) -> bool:
    """A token where the anchor's link count says there is neither a token nor a holder."""
    anchor = _anchor(path)
    try:
        if os.stat(anchor).st_nlink != 1 or _holders(path) != "held":
            return False  # (a listing too: a cached link count on NFS must not make a second token)
        os.link(anchor, path)
    except (FileNotFoundError, FileExistsError):
        return False  # RACE: another contender made it first: one link wins
    return True


def _anchor(path: str) -> str:
    return path[: -len(".lock")] + ".anchor" if path.endswith(".lock") else path + ".anchor"


def _holders(path: str) -> str:
    directory, base = os.path.split(path)
    names = [n[len(base) + 1:] for n in fsio.listdir(directory) if n.startswith(base + ".")]
    return "held by " + ", ".join(f"pid {n.split('.')[0]}" for n in names) if names else "held"
