"""Who may use a spool, and as whom: the trust checks of its directories and settings (trust.py,
modes.py), judged as its owner; a reader (root on a service user's spool, a member of a shared
one's group) reads as the owner would and writes nothing; every change stays the owner's."""

from __future__ import annotations

import os
import stat

from . import config, trust
from ..format import layout, modes
from ..system import fsio
from ..format.errors import NoSpool, SpoolError, UntrustedFile

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import ContextManager, TypeVar

    Answer = TypeVar("Answer")


def unsearchable(directory: str, e: OSError) -> SpoolError:
    """What is said of a spool directory its user cannot look into (chmod 000)."""
    return SpoolError(f"cannot look into {directory}: {e.strerror}; its owner needs to read and search it "
                      "(chmod u+rwx)")


class Access:
    """The part of the store (a mixin of store.Store) that decides whether and as whom the spool
    is used."""

    layout: layout.Layout
    root: str
    config: config.Config
    uid: int  # whose spool it is used as: this user, or for a reader its owner
    reading: bool  # a reader: nothing in the spool is created, changed or removed
    _owner_uid: int | None

    def publish(self, final_path: str, data: bytes, *, durable: bool = True) -> None: ...

    def locked(self, name: str) -> ContextManager[None]: ...

    def is_spool(self) -> bool: ...

    def open_existing(self) -> None:
        """For the commands that do not create a spool: it must be there, and safe to use."""
        self.check_safe(self.root)  # an unsafe root is refused as such, spool or not
        self.refuse_if_no_spool()
        self.check_safe()

    def refuse_if_no_spool(self) -> None:
        """NoSpool where there is none (or why its directory cannot be looked into): said instead
        of an answer that would otherwise blame the jobs ("no job", no jobs) for a wrong path. A
        spool out of reach (a mount whose client died: ENOTCONN, EIO) is there: nothing is said
        here, and the caller's own error names the trouble."""
        if not self.is_spool() and self._pending_absent():
            raise NoSpool(f"no spool at {self.root}")

    def unless_no_spool(self, answer: Answer) -> Answer:
        """`answer`, unless it is empty and there is no spool (Spool(path, create=False) of a wrong
        path): NoSpool then, as refuse_if_no_spool, not nothing paused, limited or running."""
        if not answer:
            self.refuse_if_no_spool()
        return answer

    def _pending_absent(self) -> bool:
        """Whether pending/ is not there (or is no directory). A spool directory its user cannot
        look into (chmod 000) may well hold a spool: said so, not "no spool" (which sends one to
        `init`, or to look for a typo)."""
        try:
            os.stat(self.layout.pending)
        except PermissionError as e:
            raise unsearchable(self.root, e) from None
        except (FileNotFoundError, NotADirectoryError):
            return True
        except OSError:
            return False  # out of reach, not absent
        return True  # something else at its name

    def open_for_reading(self) -> None:
        """For the commands that only read: as open_existing, but for anyone the file system lets
        read the spool (root on a service user's spool). Each trust check is then the owner's:
        a directory, config.json or registration is believed as the owner would believe it, and
        this process writes nothing in the spool (`reading`), so it never acts for the owner."""
        self.read_as_owner()
        self.open_existing()

    def read_as_owner(self) -> None:
        """Judge trust as the spool's owner, and write nothing (see open_for_reading), if the spool
        is another user's."""
        owner = self.another_owner()
        if owner is not None:
            self.uid, self.reading = owner, True

    def another_owner(self) -> int | None:
        """The uid of the spool's owner, if that is not this user (None: ours, or no spool)."""
        try:
            owner = os.stat(self.root).st_uid
        except OSError:
            return None
        return None if owner == os.geteuid() else owner

    def _refuse_another_users_spool(self) -> None:
        """Only its owner changes a spool (root too goes through sudo -u: what root would create
        in it, the owner could not use, and root would act on files the owner wrote)."""
        owner = None if self.reading else self.another_owner()
        if owner is not None and self.is_spool():
            member = ("; a member of its group hands jobs in as files dropped into pending/ (the drop-in protocol)"
                      if self._inbox_open_to_me() else "")
            raise SpoolError(f"{self.root} is the spool of uid {owner}, not yours (uid {os.geteuid()}): only "
                             f"its owner changes it; run {self.owners_command()}{member}")

    def _inbox_open_to_me(self) -> bool:
        """Is pending/ open to a group this user is in (a shared spool's member)?"""
        try:
            st = os.stat(self.layout.pending)
        except OSError:
            return False
        return bool(st.st_mode & 0o020) and (st.st_gid == os.getegid() or st.st_gid in os.getgroups())

    def owners_command(self, command: str = "…") -> str:
        """How an admin runs a command that changes another user's spool: as its owner."""
        import shlex  # for a refusal's message alone: one enqueue loads no shlex (nor its `re`)

        owner = self.uid if self.reading else self.another_owner()
        return f"sudo -u {_user_name(owner)} spoolq --spool {shlex.quote(self.root)} {command}"

    def refuse_if_reading(self, what: str) -> None:
        """Nothing is written by a reader: the spool is another user's (open_for_reading)."""
        if self.reading:
            raise SpoolError(f"cannot {what} in {self.root}: it belongs to uid {self.uid}, and this command only reads")

    def check_safe(self, *only: str) -> None:
        """Refuse a spool someone else could write into: the root and every directory of the
        layout must be real directories (the root may be a symlink of ours), owned by the user the
        spool is used as (the invoking user; for a reader, the owner), and not writable by others
        (by the group only with group_access). Otherwise another local user could drop a job that
        runs as whoever uses this spool."""
        self._refuse_another_users_spool()
        shared = self._group_access_if_ours()
        why = trust.unsafe_ancestor(self.root, shared, self.uid)
        if why:
            raise SpoolError(why)
        if shared and trust.needs_new_modes(self.layout) and not self.reading:
            self._narrow_old_shared_modes()
        paths = only or (self.root, *(self.layout.dir(n) for n in layout.STATE_DIRS + layout.OTHER_DIRS))
        for path in paths:
            why = trust.unsafe_directory(path, shared, may_be_link=path == self.root,
                                         inbox=self.layout.is_inbox(path), uid=self.uid)
            if why:
                raise SpoolError(why)

    def _narrow_old_shared_modes(self) -> None:
        """A spool shared by an older spoolq let its group write everywhere: its owner narrows it
        once, and writes config.json anew (a new file: a member may hold the old one open)."""
        # In three steps, each safe to stop after and do again: everything but the inboxes (so
        # tmp/ is the owner's alone before config.json is written through it), config.json anew,
        # and last the inboxes, whose mode says it is done (needs_new_modes).
        try:
            trust.give_modes(self.layout, modes.SHARED, inboxes=False)
            try:
                with self.locked("config"):
                    data, _ = fsio.read_regular(self.layout.config, config.MAX_CONFIG_BYTES)
                    self.publish(self.layout.config, data)
            except FileNotFoundError:
                pass  # no settings: nothing to write anew
            trust.give_modes(self.layout, modes.SHARED, inboxes=True)
        except (OSError, ValueError) as e:
            raise SpoolError(f"cannot narrow the modes of the shared spool {self.root}: {e}") from None

    def _group_access_if_ours(self) -> bool:
        """group_access counts only from a config.json the invoking user wrote; one that anyone else
        wrote, or could rewrite, makes the whole spool refused (UntrustedFile)."""
        try:
            st = os.lstat(self.layout.config)
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            return False
        if (st.st_uid == self.uid and not self.reading and st.st_mode & 0o020
                and trust.needs_new_modes(self.layout)):
            os.chmod(self.layout.config, stat.S_IMODE(st.st_mode) & ~0o022)  # an older spoolq's shared spool
        try:
            return bool(self.config.group_access)
        except UntrustedFile:
            raise  # settings someone else could have written: nothing of the spool is used
        except SpoolError:
            return False

    def why_untrusted(self, st: os.stat_result) -> str | None:
        """Why a file that would make the owner act (a job about to run, a schedule) must not be
        believed: another uid than a trusted one wrote it, or others could rewrite it (modes.py)."""
        return modes.why_untrusted(st, shared=bool(self.config.group_access), trusts=self.trusts_uid, uid=self.uid)

    def why_not_owners(self, st: os.stat_result) -> str | None:
        """Why a record only spoolq writes (a registration, a job group, a control file) must not
        be believed: someone other than the owner wrote it, or could rewrite it (modes.py)."""
        return modes.why_untrusted(st, shared=bool(self.config.group_access), uid=self.uid)

    def trusts_uid(self, uid: int) -> bool:
        # Our own uid too: a file only we (or root) could have made is as trusted as we are.
        return uid in (self.owner_uid(), self.uid) or uid in self.config.trusted_uids

    def owner_uid(self) -> int:
        if self._owner_uid is None:
            self._owner_uid = os.stat(self.root).st_uid
        return self._owner_uid


def _user_name(uid: int | None) -> str:
    import pwd
    import shlex

    try:
        return pwd.getpwuid(uid).pw_name  # type: ignore[arg-type]
    except (KeyError, TypeError):
        return shlex.quote(f"#{uid}")
