"""A full disk: which errors mean one, and what it ran out of (its blocks, its inodes, or the
user's quota); and any error of the file system in a few words, a full disk's said so."""

from __future__ import annotations

import errno
import os


def is_disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def in_words(exc: OSError) -> str:
    """An error of the file system in a few words, for a person: what failed (a full disk: what
    it ran out of), and where; not where in the code."""
    cause = full_cause(exc) if is_disk_full(exc) else exc.strerror or str(exc) or "I/O error"
    return f"{cause}: {exc.filename}" if exc.filename else cause


def full_cause(exc: OSError) -> str:
    """What a full disk (is_disk_full) ran out of, in words that send its reader to the right
    tool: ENOSPC is one errno for no free blocks (df) and for no free inodes (df -i), where space
    is left and yet no file can be made, each new file taking an inode."""
    if exc.errno == errno.EDQUOT:  # the user's share, not the disk: the disk may have room
        return "the disk quota of this user is used up (quota -s)"
    if _out_of_inodes(exc.filename):
        return "the file system is out of inodes (df -i), though it has space left"
    return "the file system is full"


def _out_of_inodes(path: object) -> bool:
    """Whether the file system of `path` (a file the failed call named) has no inode left and
    blocks to spare. (A file system that counts no inodes, btrfs, says f_files 0: never out.)"""
    if not isinstance(path, str):
        return False
    try:
        st = os.statvfs(os.path.dirname(path) or path)
    except OSError:
        return False
    # RACE: the counts are read after the call failed: another process may have freed an inode
    # or the last block meanwhile; the line then names the other cause, and the next try works.
    return st.f_files > 0 and st.f_ffree == 0 and st.f_bavail > 0
