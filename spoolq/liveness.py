"""Is a process on this host still the one we knew, and killing what a dead owner left behind."""

from __future__ import annotations

import functools
import os

OWNER_ENV = "SPOOLQ_OWNER"


def _stat_fields(pid: int) -> list[bytes] | None:
    """Fields 3 onwards of /proc/<pid>/stat (None where there is no /proc or no such process)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; fields resume after the last ')'.
    return data[data.rfind(b")") + 2:].split()


def start_token(pid: int) -> str | None:
    """The process's start time in clock ticks since boot: with the pid, it names one process
    even after the pid is reused."""
    fields = _stat_fields(pid)
    return fields[19].decode() if fields and len(fields) > 19 else None


@functools.cache
def boot_id() -> str | None:
    """This boot of this machine: two hosts given one name, or one host after a reboot, differ.
    (Cached: it cannot change while this process runs.)"""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        return None


def alive(pid: object, token: object = None) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _stat_fields(pid)
    if fields is None:
        return True  # no /proc: the signal test above is all there is
    if fields[0] in (b"Z", b"X"):
        return False  # exited, not yet reaped (a container's pid 1 may never reap it)
    return token is None or (len(fields) > 19 and fields[19].decode() == token)


def kill_leftovers(owner: str) -> int:
    """SIGKILL every process group that still runs a job of `owner` on this host.

    Jobs carry SPOOLQ_OWNER in their environment, and so do their children; each job runs in a
    process group of its own. Returns the number of groups signalled."""
    needle = f"{OWNER_ENV}={owner}".encode() + b"\0"
    groups: set[int] = set()
    me = os.getpid()
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return 0
    for pid in pids:
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if needle in env or env.endswith(needle[:-1]):
            try:
                groups.add(os.getpgid(pid))
            except ProcessLookupError:
                continue
    mine = os.getpgid(0)
    for pgid in groups:
        if pgid == mine:
            continue
        try:
            os.killpg(pgid, 9)  # SIGKILL; the signal module is not worth importing on the CLI's path
        except (ProcessLookupError, PermissionError):
            pass
    return len(groups)
