"""Is a process on this host still the one we knew, and killing what a dead owner's job left behind."""

from __future__ import annotations

import os

from ..format.lean import Regex, once

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


def parent_of(pid: int) -> int | None:
    """The pid of the process's parent (that of a subreaper or init once its own died), or None."""
    fields = _stat_fields(pid)
    return int(fields[1]) if fields and len(fields) > 1 else None


def started_at(pid: int) -> float | None:
    """When a process started, in epoch seconds (to a clock tick, 10 ms): for the command that
    started a worker, the moment the user asked for it, whatever its start-up cost."""
    token = start_token(pid)
    if token is None:
        return None
    since_boot = int(token) / os.sysconf("SC_CLK_TCK")
    import time  # not on the CLI's common path

    return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - since_boot)


@once
def pid_namespace() -> int | None:
    """This process's pid namespace (the inode of /proc/self/ns/pid): a pid means something only
    within it. Two containers on one host share its name and boot, not this."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


@once
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


def ticks_now() -> int:
    """Now, in the unit of a process's start time (clock ticks since boot): what a process
    started this instant will show, read without opening /proc (a spawn's hot path)."""
    import time

    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK"))


def kill_job_group(pgid: int, started: tuple[int, int], signum: int = 9) -> bool:
    """SIGKILL (or `signum`) what is left of the process group a job's shell led (its pid is the group's id;
    its start time lies in the `started` window of clock ticks), on this host. False if that
    group is gone.

    A pid in use as a group id is never given to a new process, so: if a process with that pid
    runs and started outside the window, the job's group is gone; if none runs, the group may
    still have members, and killpg reaches them or no one."""
    fields = _stat_fields(pgid)
    if fields is not None:
        if len(fields) <= 19 or not fields[19].isdigit() or not started[0] <= int(fields[19]) <= started[1]:
            return False
    try:
        # RACE: if every member exited since we looked, a new process could take this pid and
        # lead a group of its own in the microseconds before this call; nothing else can.
        os.killpg(pgid, signum)  # 9 is SIGKILL; the signal module is not worth importing on the CLI's path
    except (ProcessLookupError, PermissionError):
        return False
    return True


OWNER_ENV = "SPOOLQ_OWNER"  # in every job's environment: the token of the worker that runs it


def kill_groups_of_owner(owner: str, signum: int = 9) -> int:
    """SIGKILL the process groups of this host whose processes carry SPOOLQ_OWNER=`owner` in
    their environment: how spoolq before its group record (0.1) found a dead worker's running
    jobs, and the only trace such a worker leaves of them. Only processes of this uid count (a
    job runs as its worker): another user's environment, which that user writes, never makes
    this one signal (root's recovery could read it); a job that ran `env -i` is missed, as it was
    then. Returns how many groups were signalled."""
    wanted = f"{OWNER_ENV}={owner}".encode()
    me, uid, groups = os.getpid(), os.geteuid(), set()
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return 0
    for pid in pids:
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                environment = f.read()
            if pid != me and wanted in environment.split(b"\0"):
                groups.add(os.getpgid(pid))
        except OSError:  # gone, or another user's
            continue
    groups.discard(os.getpgid(0))
    signalled = 0
    for pgid in groups:
        try:
            # RACE: a group found above may have ended since, its id taken by a new group in the
            # meantime: ids are handed out in turn through the whole pid space, so not within a scan.
            os.killpg(pgid, signum)
            signalled += 1
        except OSError:
            pass
    return signalled


def group_record(pgid: int | None = None, started: tuple[int, int] | None = None) -> bytes:
    """The content of a .pgroup file: "<pgid> <earliest> <latest>", the job leader's pid and the
    window of clock ticks its start time lies in; always GROUP_RECORD_SIZE bytes, so a rewrite
    in place never leaves a longer old record's tail behind; blank between jobs."""
    text = f"{pgid} {started[0]} {started[1]}" if pgid and started else ""
    return text.ljust(GROUP_RECORD_SIZE - 1).encode() + b"\n"


Group = tuple[int, tuple[int, int]]  # a running job's process group: its id, its leader's start window
_GROUP_RECORD = Regex(rb"([0-9]{1,10}) ([0-9]{1,20}) ([0-9]{1,20}) *\n?")  # compiled on first use: never on one enqueue's path


def parse_group_record(data: bytes) -> Group | None:
    m = _GROUP_RECORD.fullmatch(data)
    if m is None:
        return None
    return int(m.group(1)), (int(m.group(2)), int(m.group(3)))


def parse_group_records(data: bytes) -> list[Group]:
    """The groups of a .pgroup file of one record per slot (GROUP_RECORD_SIZE bytes each, slot k
    at k * GROUP_RECORD_SIZE; a blank one is a slot running nothing)."""
    records = (parse_group_record(data[at:at + GROUP_RECORD_SIZE]) for at in range(0, len(data), GROUP_RECORD_SIZE))
    return [record for record in records if record is not None]


GROUP_RECORD_SIZE = 56
