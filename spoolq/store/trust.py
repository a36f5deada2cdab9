"""Trust: who could have written into a spool. A spool is used only if no other user could have
put a file in it: its root, the directories of its layout and every directory above it are
checked (store.Store.check_safe), and the parents init makes are private. Opening a spool to its
group (group_access) changes the modes of what spoolq made in it, and nothing else: the group
may then read it and create files in its inboxes alone (modes.py says why)."""

from __future__ import annotations

import os
import stat

from ..format import states
from . import shards
from ..format import layout
from ..system import fsio, locks
from ..format.modes import Modes

FIRED_SUFFIX = ".fired"  # schedules/<name>.fired/: the slots a schedule fired (fired_slots.py), given modes here


def give_modes(lay: layout.Layout, modes: Modes, *, inboxes: bool | None = None) -> None:
    """Give what spoolq created the spool's modes; anything else under it (the user's own files,
    a drop-in not yet taken, a quarantined file) is left as it is. `inboxes` False: all but the
    inboxes; True: the inboxes alone (a shared spool's narrowing does them last: their mode says
    it is done, needs_new_modes); None: all. The root and config.json every time."""
    from ..format import ours  # a change of modes alone needs it, never one enqueue

    chmod_ours(lay.root, modes.dir)
    chmod_ours(lay.config, modes.file)
    for name in layout.STATE_DIRS + layout.OTHER_DIRS:
        if inboxes is not None and (name in layout.INBOXES) != inboxes:
            continue
        directory = lay.dir(name)
        if "/" in name:
            _give_root_group(lay.root, directory)
        chmod_ours(directory, modes.inbox if name in layout.INBOXES else modes.dir)
        for entry in fsio.listdir(directory):
            path = os.path.join(directory, entry)
            if name == states.PROCESSING:
                _chmod_owned(path, modes)
            elif name == states.PENDING and shards.is_shard(entry):
                _chmod_shard(path, modes)
            elif name == "schedules" and entry.endswith(FIRED_SUFFIX) and not entry.startswith("."):
                _chmod_fired(path, modes)
            elif ours.is_spoolq_entry(name, entry):
                chmod_ours(path, locks.owners_only(modes.file) if name == "locks" else modes.file)


def _chmod_owned(owned: str, modes: Modes) -> None:
    if not chmod_ours(owned, modes.dir):
        return
    for entry in fsio.listdir(owned):
        if (layout.is_json_entry(entry) and not entry.startswith(layout.ADOPT_PREFIX)
                or entry in (layout.GROUP_FILE, layout.FENCE_FILE)):
            chmod_ours(os.path.join(owned, entry), modes.file)


def _chmod_shard(shard: str, modes: Modes) -> None:
    if not chmod_ours(shard, modes.dir):
        return
    for entry in fsio.listdir(shard):
        if layout.is_canonical(entry):
            chmod_ours(os.path.join(shard, entry), modes.file)


def _chmod_fired(fired: str, modes: Modes) -> None:
    """A schedule's fired markers, never writable by the group (a marker it could rewrite would
    not be believed, fired_slots.py)."""
    if not chmod_ours(fired, modes.dir):
        return
    for entry in fsio.listdir(fired):
        if not entry.startswith("."):
            try:
                chmod_ours(os.path.join(fired, entry), modes.file)
            except PermissionError:
                continue  # another trusted uid's marker: its owner's mode (never group-writable) stays


def _give_root_group(root: str, directory: str) -> None:
    """A directory nested in the layout (the Maildir's tmp/, new/, cur/) was made inside a private
    parent, which has no setgid bit to pass the spool's group on: it has its maker's group. It
    gets the root's, as the directories right under the root have; where the owner may not give
    it (not in that group), it stays as it is, and `chgrp -R` by hand does it."""
    try:
        st, gid = os.lstat(directory), os.stat(root).st_gid
        if stat.S_ISDIR(st.st_mode) and st.st_gid != gid:
            os.chown(directory, -1, gid, follow_symlinks=False)
    except (FileNotFoundError, PermissionError):
        return


def chmod_ours(path: str, mode: int, seen: os.stat_result | None = None) -> bool:
    """chmod a file or directory of ours, never through a symlink, and never another file than
    the one `seen` (its lstat, where the caller judged it). False if it is not there (or not it)."""
    # RACE: in pending/ another user may put a symlink at a name between a look and a chmod by
    # name (the owner's file claimed away, their link made there): the name is opened once
    # without following it (O_PATH), and the very file that open found is changed.
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        st = os.fstat(fd)
        if stat.S_ISLNK(st.st_mode) or seen is not None and (st.st_dev, st.st_ino) != (seen.st_dev, seen.st_ino):
            return False
        if stat.S_IMODE(st.st_mode) != mode:  # a chmod sets the ctime, a finished job's finish time: only when needed
            os.chmod(f"/proc/self/fd/{fd}", mode)
    finally:
        os.close(fd)
    return True


def needs_new_modes(lay: layout.Layout) -> bool:
    """Is this a spool shared by a spoolq that let the group write everywhere (an inbox open to the
    group but not sticky)? Its owner narrows it (give_modes) before anything is read; the inboxes
    are narrowed last, so one left open says a narrowing was stopped half-way too."""
    return any(_open_and_not_sticky(lay.dir(name)) for name in layout.INBOXES)


def _open_and_not_sticky(path: str) -> bool:
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    return stat.S_ISDIR(mode) and bool(mode & 0o020) and not mode & stat.S_ISVTX


def make_private_parents(root: str) -> None:
    """The directories above a new spool, each private whatever the umask (another user who
    could write into one could swap the spool for one of their own)."""
    missing = []
    parent = os.path.dirname(root)
    while parent and not os.path.isdir(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        os.chmod(path, 0o700)


CANNOT_LOOK = "cannot be looked at"


def unsafe_ancestor(root: str, shared: bool, uid: int | None = None) -> str | None:
    """Why a directory above the spool lets another user swap the spool, or None. Each must be
    yours or root's and not writable by others (by the group only with group_access), unless
    it is sticky (as /tmp is: others cannot move what is yours); a symlink on the way must be
    yours or root's. Missing ones are made private by init. `uid`: whose spool it is (default: yours)."""
    me = os.geteuid() if uid is None else uid
    path = os.path.dirname(os.path.abspath(root))
    while True:
        why = _unsafe_on_the_way(path, shared, me)
        if why and why.startswith(CANNOT_LOOK):  # a mount out of reach (ENOTCONN, EIO): no one's doing
            return f"cannot use {root}: {path} above it {why}"
        if why:
            return (f"refusing to use {root}: {path} above it {why}; another user could swap the spool "
                    "for one of their own")
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


def _unsafe_on_the_way(path: str, shared: bool, me: int) -> str | None:
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            if st.st_uid not in (0, me):
                return f"is a symlink of uid {st.st_uid}"
            st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"{CANNOT_LOOK} ({e.strerror})"
    if st.st_uid not in (0, me):
        return f"belongs to uid {st.st_uid}"
    mode = stat.S_IMODE(st.st_mode)
    if mode & stat.S_ISVTX:
        return None
    if mode & 0o002 or (mode & 0o020 and not shared):
        return f"is writable by {'anyone' if mode & 0o002 else 'its group'} (mode {mode:04o})"
    return None


def unsafe_directory(path: str, shared: bool, *, may_be_link: bool = False, inbox: bool = False,
                     uid: int | None = None) -> str | None:
    """Why `path` must not be used as a spool directory, or None (also if it does not exist yet).
    Only an `inbox` (layout.INBOXES) of a shared spool may be group-writable, and only if sticky.
    `uid`: whose spool it is (default: yours; a reader names the spool's owner)."""
    me = os.geteuid() if uid is None else uid
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode) and may_be_link and st.st_uid == me:
            st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"cannot use {path}: {e.strerror}"
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        why = "it is a symbolic link"
    elif not stat.S_ISDIR(st.st_mode):
        why = "it is not a directory"
    elif st.st_uid != me:
        whose = "you" if me == os.geteuid() else "the spool's owner"
        why = f"it belongs to uid {st.st_uid}, not to {whose} (uid {me})"
    elif mode & 0o002:
        why = "anyone can write into it"
    elif mode & 0o020 and not shared:
        why = "its group can write into it and group_access is off"
    elif mode & 0o020 and not inbox:
        why = "its group can write into it (only pending/ may be open to the group, and maildir/tmp/ and new/)"
    elif mode & 0o020 and not mode & stat.S_ISVTX:
        why = "its group can write into it and it is not sticky (members could move the owner's jobs)"
    else:
        return None
    return (f"refusing to use {path}: {why} (owner uid {st.st_uid}, mode {mode:04o}); a spool's "
            "directories must be yours and not writable by others")
