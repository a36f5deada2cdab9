"""The system calls that carry durability or ownership meaning, each behind a name that says so."""

from __future__ import annotations

import errno
import os
import stat

FILE_MODE = 0o600
DIR_MODE = 0o700

_libc = None


def set_modes(file_mode: int, dir_mode: int) -> None:
    """Private by default; a spool shared with a group widens both (see config 'group_access')."""
    global FILE_MODE, DIR_MODE
    FILE_MODE, DIR_MODE = file_mode, dir_mode


def exact_mode(fd: int) -> None:
    """A shared spool's files need group write whatever the creator's umask (private: nothing to do)."""
    if FILE_MODE != 0o600:
        try:
            os.fchmod(fd, FILE_MODE)
        except OSError:
            pass  # not ours to change: another group member created it


def make_dir(path: str) -> None:
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return
    os.chmod(path, DIR_MODE)  # umask may have narrowed it


def write_file(path: str, data: bytes, *, durable: bool) -> None:
    """Create `path` (must not exist) holding `data`; fsync it when `durable`.

    Removes the partial file on any failure, so a full disk leaves nothing behind."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        exact_mode(fd)
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
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def publish(tmp_path: str, data: bytes, final_path: str, *, durable: bool = True) -> None:
    """Write under a temp name, fsync, rename into place, fsync the directory."""
    write_file(tmp_path, data, durable=durable)
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


def sync_filesystem(path: str) -> None:
    """Flush every dirty page of the file system holding `path`: one barrier for a whole batch."""
    global _libc
    if _libc is None:
        import ctypes.util  # only batches need it; the single-job CLI path stays lean

        name = ctypes.util.find_library("c")
        _libc = ctypes.CDLL(name, use_errno=True) if name else False  # type: ignore[attr-defined]
    syncfs = getattr(_libc, "syncfs", None) if _libc else None
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if syncfs(fd) != 0:
            import ctypes

            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
    finally:
        os.close(fd)


def create_exclusive(path: str) -> bool:
    """Create an empty file; False if it exists. O_EXCL is atomic on local file systems and NFSv3+."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        return False
    exact_mode(fd)
    os.close(fd)
    return True


def move(src: str, dst: str) -> bool:
    """One atomic state change. False if `src` is gone: someone else moved it first (a lost race)."""
    try:
        os.rename(src, dst)
    except FileNotFoundError:
        if os.path.lexists(src):
            raise  # the destination directory is missing: not a race
        return False
    return True


def listdir(path: str) -> list[str]:
    """The names in a directory; none if it is gone (a reader racing a rename or an rmdir)."""
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def read_regular(path: str, limit: int) -> tuple[bytes, os.stat_result]:
    """Read a file that must be a regular, singly linked file, without following a symlink
    or blocking on a fifo. Raises ValueError with the reason it is not one."""
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
        if st.st_nlink > 1:
            raise ValueError(f"has {st.st_nlink} hard links")
        if st.st_size > limit:
            raise ValueError(f"is {st.st_size} bytes; the limit is {limit}")
        chunks = []
        size = 0
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


def is_disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)
