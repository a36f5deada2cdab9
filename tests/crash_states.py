"""The crash state a killed command leaves: the changes to files it completed before the kill, as
its strace log (`strace -f -y -s BIG -e trace=STATE_CALLS`) tells them.

Two kill points whose completed changes are the same leave the same spool (but for the times and
random names any two runs differ by), so a crash-point sweep puts each crash state to use once.
Many kill points share one: a `mkdir` of a directory that is already there (EEXIST) changes
nothing, nor does a write to a pipe, nor a failed call, nor an fsync under SIGKILL (the page cache
outlives the process)."""

from __future__ import annotations

import re

# Every call that can change a file or a directory, and those that start or signal a process (a
# job started, or a leftover killed, is part of what a kill leaves too). fsync and fdatasync are
# not among them: a SIGKILLed process leaves what it wrote in the page cache, synced or not.
# ("?name": a call this architecture lacks, as open and fork on arm64, is no error to strace.)
STATE_CALLS = ",".join("?" + name for name in [
    "clone", "clone3", "fork", "vfork", "execve", "execveat", "kill", "tkill", "tgkill", "pidfd_send_signal",
    "rename", "renameat", "renameat2", "unlink", "unlinkat", "rmdir", "link", "linkat", "symlink",
    "symlinkat", "mkdir", "mkdirat", "mknod", "mknodat", "open", "openat", "creat", "truncate", "ftruncate",
    "fallocate", "write", "pwrite64", "writev", "pwritev", "pwritev2", "copy_file_range", "sendfile", "splice",
    "utimensat", "utimes", "futimesat", "chmod", "fchmod", "fchmodat", "chown", "fchown", "fchownat", "lchown",
    "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr",
])
SYNCS = {"fsync", "fdatasync", "syncfs", "sync"}  # traced when a sweep kills at them; no change
WRITES = {"write", "pwrite64", "writev", "pwritev", "pwritev2"}
OPENS = {"open", "openat"}
WHOLE = 1 << 20  # strace -s: every byte a job file or a record holds


def completed_calls(log_text: str) -> list[str]:
    """The calls of a `strace -f` log that returned, each on one line ("<unfinished ...>" and
    its "<... resumed>" joined), without the pid."""
    started: dict[str, str] = {}
    calls = []
    for line in log_text.splitlines():
        pid, _, rest = line.partition(" ")
        rest = rest.lstrip()
        if rest.startswith(("---", "+++")):
            continue
        if rest.endswith("<unfinished ...>"):
            started[pid] = rest[:-len("<unfinished ...>")].rstrip()
            continue
        if rest.startswith("<... "):
            if pid not in started:
                continue
            rest = started.pop(pid) + rest.split("resumed>", 1)[1]
        calls.append(rest)
    return calls


def changed(call: str, root: str) -> bool:
    """Whether a completed call changed a file: it succeeded, an open could create or truncate,
    a write went to a file under `root` (the spool, and the `root.*` files its jobs write)."""
    name = call[:call.find("(")]
    result = call.rsplit(" = ", 1)[-1].split(" ", 1)[0] if " = " in call else "?"
    if result == "?" or result.startswith("-") or name in SYNCS:
        return False
    if name in OPENS:
        return "O_CREAT" in call or "O_TRUNC" in call
    if name in WRITES:
        return root in call.split(",", 1)[0]
    return True


def crash_state(log_text: str, root: str) -> str:
    """The changes the killed command completed, in order: the same string for two kill points
    means the same spool left behind. Times, pids and random names are written as '#': they
    differ between any two runs of one kill point too."""
    changes = [call.replace(root, "ROOT") for call in completed_calls(log_text) if changed(call, root)]
    return re.sub(r"[0-9a-f]{6,}|\d+", "#", "\n".join(changes))
