"""The system calls that carry durability or ownership meaning, each behind a name that says so."""

from __future__ import annotations

import errno
import os
import stat

from ..format.lean import once


def close_quietly(fd: int | None) -> None:
    """Release a descriptor; a file system out of reach fails the flush, and it is released all the same."""
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def exact_mode(fd: int, mode: int) -> None:
    """A shared spool's files need group read whatever the creator's umask (private: the
    umask can only narrow 0600, so there is nothing to do)."""
    if mode & 0o077:
        try:
            os.fchmod(fd, mode)
        except OSError:
            pass  # not ours to change: another group member created it


def make_dir(path: str, mode: int) -> None:
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        return
    os.chmod(path, mode)  # umask may have narrowed it


def write_file(path: str, data: bytes, *, durable: bool, mode: int) -> None:
    """Create `path` (must not exist) holding `data`; fsync it when `durable`. Removes the
    partial file on any failure, so a full disk leaves nothing behind; a directory that is gone
    (ESTALE included) raises FileNotFoundError."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except OSError as e:
        raise as_gone(e, path) from None
    try:
        exact_mode(fd, mode)
        write_all(fd, data)
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        unlink_quietly(path)
        raise
    os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is out (a write may be short)."""
    if not data:
        return
    written = os.write(fd, data)
    if written == len(data):  # the usual case: no view to make
        return
    view = memoryview(data)[written:]
    while view:
        view = view[os.write(fd, view):]


def publish(tmp_path: str, data: bytes, final_path: str, *, mode: int, durable: bool = True) -> None:
    """Write under a temp name, fsync, rename into place, fsync the directory."""
    write_file(tmp_path, data, durable=durable, mode=mode)
    try:
        os.rename(tmp_path, final_path)
    except BaseException:
        unlink_quietly(tmp_path)
        raise
    if durable:
        fsync_dir(os.path.dirname(final_path))


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


FSYNC_THREADS = 16  # fsyncs in flight at once: a file system commits concurrent ones together


def fsync_files(paths: list[str]) -> None:
    """Make every file's content durable, each by its own fsync, many in flight at once.

    Not syncfs: FUSE servers (GlusterFS's, LazyFS's) accept it and persist nothing, so a batch
    "made durable" by it was lost in a power cut. One fsync at a time would cost a journal
    commit each; with FSYNC_THREADS in flight the file system folds them into few. A handful
    of files goes one by one (threads would gain nothing)."""
    if len(paths) < FSYNC_THREADS:
        for path in paths:
            fsync_path(path)
        return
    import threading  # only batches need it

    todo = iter(paths)
    lock = threading.Lock()
    failed: list[BaseException] = []

    def work() -> None:
        while not failed:
            with lock:
                path = next(todo, None)
            if path is None:
                return
            try:
                fsync_path(path)
            except BaseException as e:  # the caller raises it
                failed.append(e)

    # Daemon threads: a signal that ends the caller (Ctrl+C) must not wait for them; what they
    # still sync is taken back by the caller all the same.
    threads = [threading.Thread(target=work, daemon=True) for _ in range(FSYNC_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        raise failed[0]


def fsync_path(path: str) -> None:
    # O_NONBLOCK: the files synced by name sit in tmp/, which the spool's group may write; a fifo
    # put there would hold this open until a writer came (fsync then refuses it: EINVAL).
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@once
def _libc() -> object:
    """The C library the process runs on, for renameat2 (find_library spawned ldconfig: 9 ms)."""
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def readable(fds: list[int], timeout: float | None) -> list[int]:
    """Those of `fds` that can be read now (data, end of file, or an error to read), waiting at
    most `timeout` seconds for one (None: no limit). poll(), not select(): select() refuses
    descriptor numbers from 1024 up, which a process started with many files open is given."""
    import math
    import select  # a worker's and a waiter's: one enqueue waits on nothing

    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    ms = None if timeout is None else max(0, math.ceil(timeout * 1000))
    return [fd for fd, _ in poller.poll(ms)]


def is_gone(exc: OSError) -> bool:
    """ENOENT, or ESTALE: a network file system's answer (GlusterFS, NFS) when another host removed
    or renamed a directory on the way (a fenced processing/<owner>/). Gone, either way."""
    return exc.errno in (errno.ENOENT, errno.ESTALE)


def as_gone(exc: OSError, path: str) -> OSError:
    """FileNotFoundError for an ESTALE (errno kept): callers tell "gone" by that type."""
    if exc.errno == errno.ESTALE:
        return FileNotFoundError(errno.ESTALE, exc.strerror, path)
    return exc


def lstat_if_there(path: str) -> os.stat_result | None:
    """lstat, or None if the entry is gone (is_gone: here, or through another host's rename)."""
    try:
        return os.lstat(path)
    except OSError as e:
        if is_gone(e):
            return None
        raise


def present(path: str) -> bool:
    """Is there an entry (of any kind: a symlink is not followed) at `path`? Like
    os.path.lexists, but a miss raises no exception inside: on a worker's per-job path, where
    most of these looks miss (a fence, a finished copy, a pause), the exception was most of
    the cost."""
    try:
        return os.access(path, os.F_OK, follow_symlinks=False)
    except (OSError, ValueError):  # a NUL in the path, a name too long
        return False


def move(src: str, dst: str) -> bool:
    """One atomic state change. False if `src` is gone: someone else moved it first (a lost race)."""
    try:
        os.rename(src, dst)
    except OSError as e:
        if not is_gone(e) or os.path.lexists(src):
            raise as_gone(e, dst) from None  # the destination directory is missing: not a race
        return False
    return True


def move_no_replace(src: str, dst: str, *, shared_source: bool = False) -> bool:
    """Like move(), but FileExistsError rather than replace `dst`: renameat2(RENAME_NOREPLACE),
    one atomic step. Where the file system has no such rename (NFS, FUSE, GlusterFS), a hard link
    (exclusive everywhere) and then the old name goes: a crash between leaves the file under both
    names, nothing lost. A `shared_source` (in pending/ or maildir/new/, which other workers, hosts
    and commands take from too) is renamed after a look instead, as is a file no link can be made
    of (another user's, under protected_hardlinks)."""
    done = _rename_noreplace(src, dst)
    if done is not None:
        return done
    if not shared_source:
        try:
            os.link(src, dst, follow_symlinks=False)
        except OSError:
            pass  # dst there, src gone, or no link allowed: the look and the rename below answer each
        else:
            unlink_quietly(src)
            return True
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "exists", dst)
    # RACE: a link of a shared source would leave it under its old name a moment, for another
    # claim (another host's), a cancel or a purge to take as well: the job then had two names, and
    # every reader refused it ("2 hard links"). A rename takes it from them all at once. Between the
    # look and the rename, dst can be made by another quarantine only with 48 random bits; by
    # another slot's claim of the same id (a copy another user named) in that instant alone.
    return move(src, dst)


def _rename_noreplace(src: str, dst: str) -> bool | None:
    """renameat2(..., RENAME_NOREPLACE): True, False if `src` is gone, None where unsupported."""
    libc = _libc()
    call = getattr(libc, "renameat2", None) if libc else None
    if call is None:
        return None
    import ctypes

    if call(-100, os.fsencode(src), -100, os.fsencode(dst), 1) == 0:  # AT_FDCWD, RENAME_NOREPLACE
        return True
    err = ctypes.get_errno()
    if err == errno.EEXIST:
        raise FileExistsError(err, os.strerror(err), dst)
    if err in (errno.ENOENT, errno.ESTALE) and not os.path.lexists(src):
        return False
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return None
    raise as_gone(OSError(err, os.strerror(err), src), dst)


class Directory:
    """A directory opened without following a symlink (O_NOFOLLOW): names are looked up and
    removed relative to it, so a directory swapped for a symlink is refused, never followed."""

    def __init__(self, path: str):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)

    def __enter__(self) -> Directory:
        return self

    def __exit__(self, *_exc: object) -> None:
        os.close(self.fd)

    def names(self) -> list[str]:
        return os.listdir(self.fd)

    def lstat(self, name: str) -> os.stat_result:
        return os.lstat(name, dir_fd=self.fd)

    def unlink_quietly(self, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self.fd)
        except OSError as e:
            if not is_gone(e):
                raise

    def remove_quietly(self, name: str) -> bool:
        """Unlink `name`, an empty directory too; False if it is a directory that cannot be
        removed (not empty: another user's, which they may keep filled), which stays."""
        try:
            self.unlink_quietly(name)
        except IsADirectoryError:  # Linux's answer to unlink(2) of a directory
            try:
                os.rmdir(name, dir_fd=self.fd)
            except OSError as e:
                return is_gone(e)
        return True


def listdir(path: str) -> list[str]:
    """The names in a directory; none if it is gone (a reader racing a rename or rmdir, anywhere)."""
    try:
        return os.listdir(path)
    except OSError as e:
        if isinstance(e, NotADirectoryError) or is_gone(e):
            return []
        raise


def listdir_inodes(path: str) -> list[tuple[str, int]]:
    """Names and inode numbers in a directory (from the listing itself: no stat), [] if it is gone."""
    try:
        with os.scandir(path) as it:
            return [(entry.name, entry.inode()) for entry in it]
    except OSError as e:
        if isinstance(e, NotADirectoryError) or is_gone(e):
            return []
        raise


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError as e:
        if not is_gone(e):
            raise


def open_append(path: str, mode: int | None = None) -> int:
    """A descriptor that appends to the regular file at `path` (created, of `mode`, if `mode` is
    given): never through a symlink, never waiting on a fifo (which has no reader: ENXIO), never
    a device. OSError for anything but a regular file."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | (os.O_CREAT if mode is not None else 0), 0o600 if mode is None else mode)
    except OSError as e:
        if e.errno == errno.ENXIO:  # a fifo nobody reads (or a device without its hardware)
            raise OSError(errno.EINVAL, "not a regular file", path) from None
        if e.errno == errno.ELOOP:  # O_NOFOLLOW met one
            raise OSError(errno.ELOOP, "a symbolic link", path) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str, limit: int, *, single_link: bool = True) -> tuple[bytes, os.stat_result]:
    """Read a file that must be a regular file (singly linked, unless not `single_link`), without
    following a symlink or blocking on a fifo. Raises ValueError with the reason it is not one.
    An ESTALE is looked up once more, then raised as it is: gone (a job file) or "cannot tell"
    (a settings file) is the caller's to say."""
    try:
        return _read_regular(path, limit, single_link)
    except OSError as e:
        if e.errno != errno.ESTALE:
            raise
    return _read_regular(path, limit, single_link)  # a file replaced on another host: its new name


def _read_regular(path: str, limit: int, single_link: bool) -> tuple[bytes, os.stat_result]:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise ValueError("is a symbolic link")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError("is not a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("is not a regular file")
        if single_link and st.st_nlink > 1:
            raise ValueError(f"has {st.st_nlink} hard links")
        if st.st_size > limit:
            raise ValueError(f"is {st.st_size} bytes; the limit is {limit}")
        first = os.read(fd, st.st_size + 1)
        if len(first) == st.st_size:
            return first, st  # all of it: a file published by rename does not change under a reader
        chunks = [first]
        size = len(first)
        if size > limit:
            raise ValueError(f"is over the size limit of {limit} bytes")
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise ValueError(f"is over the size limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks), st
    finally:
        os.close(fd)
