"""Is a process on this host still the one we knew, and killing what a dead owner left behind."""

from __future__ import annotations

import os

OWNER_ENV = "SPOOLQ_OWNER"


def start_token(pid: int) -> str | None:
    """The process's start time in clock ticks since boot: with the pid, it names one process
    even after the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; fields resume after the last ')'.
    fields = data[data.rfind(b")") + 2:].split()
    return fields[19].decode() if len(fields) > 19 else None


_boot_id: str | None = None


def boot_id() -> str | None:
    """This boot of this machine: two hosts given one name, or one host after a reboot, differ."""
    global _boot_id
    if _boot_id is None:
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                _boot_id = f.read().strip()
        except OSError:
            _boot_id = ""
    return _boot_id or None


def alive(pid: object, token: object = None) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if token is None:
        return True
    current = start_token(pid)
    return current is None or current == token


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
