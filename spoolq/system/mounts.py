"""The file system under a spool: what kind it is, and whether it keeps the promises spoolq's
leases and fences rest on (docs/hosts.md, "Running on several hosts").

A shared file system must take flock(2) locks on its server, so that a lock excludes every host
(NFS mounted nolock or local_lock, and Lustre without -o flock, keep them on one host: named
here, refused by workers). It must give every host fresh answers: a name another host renamed away is
gone, a file another host replaced is read anew, and a file's mtime is the server's clock. A
GlusterFS client at its defaults breaks all three for about a second (entry and attribute
caches in the kernel and in md-cache, quick-read and io-cache serving old content, and the
``utime`` translator stamping mtimes with each client's own clock). The client says how it is
set up in its virtual ``.meta`` directory, so that is read, not guessed.
"""

from __future__ import annotations

import json
import os
import re

NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "lustre", "9p", "afs", "gpfs",
              "beegfs", "ocfs2", "gfs2", "virtiofs")

# Client options that turn the kernel's caches off, and the translators that must not be in the
# client's graph (each caches names, attributes or content, or stamps times on the client).
GLUSTER_MOUNT_OPTIONS = ("--entry-timeout=0", "--attribute-timeout=0", "--negative-timeout=0")
GLUSTER_CACHING = {
    "performance/md-cache": "performance.stat-prefetch",
    "performance/quick-read": "performance.quick-read",
    "performance/open-behind": "performance.open-behind",
    "performance/write-behind": "performance.write-behind",
    "performance/io-cache": "performance.io-cache",
    "performance/read-ahead": "performance.read-ahead",
    "performance/readdir-ahead": "performance.readdir-ahead",
    "performance/nl-cache": "performance.nl-cache",
    "features/utime": "features.ctime",
}


def mount_of(path: str) -> tuple[str, str]:
    """(mount point, file system type) of the mount holding `path`, from /proc/self/mountinfo
    (("", "") if unknown)."""
    return _mount(path)[:2]


def _mount(path: str) -> tuple[str, str, frozenset[str]]:
    """(mount point, type, the file system's own options) of the mount holding `path`."""
    try:
        real = os.path.realpath(path)
        best, kind, options = "", "", frozenset[str]()
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or not right:
                    continue
                mount = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])  # \040, \011, \134
                kinds = right.split()
                if kinds and (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
                    best, kind = mount, kinds[0]
                    options = frozenset(kinds[2].split(",")) if len(kinds) > 2 else frozenset()
        return best, kind, options
    except OSError:
        return "", "", frozenset()


def kind_of(path: str) -> str:
    """The type of the file system holding `path` ('' if unknown)."""
    return mount_of(path)[1]


def is_network(kind: str) -> bool:
    return kind in NETWORK_FS or kind.startswith("fuse")


def unsafe_because(path: str) -> str | None:
    """Why the file system under `path` cannot keep spoolq's promises across hosts, None if it can
    (or nothing is known against it)."""
    mount, kind, options = _mount(path)
    if kind == "fuse.glusterfs":
        return _gluster_problems(mount)
    why = flock_stays_local(kind, options)
    return f"{kind} mount {mount}: {why}: spool locks would not exclude other hosts" if why else None


def flock_stays_local(kind: str, options: frozenset[str]) -> str | None:
    """Why flock(2) on a mount of this type and these options never reaches the server (it
    excludes the processes of one host only), or None. A FUSE file system's daemon may or may
    not forward locks, and nothing in the mount says which: trusted as mounted (docs/hosts.md)."""
    if kind in ("nfs", "nfs4"):
        local = next((o.split("=", 1)[1] for o in options if o.startswith("local_lock=")), "none")
        if "nolock" in options or local in ("flock", "all"):
            return f"flock(2) is kept on this host ({'nolock' if 'nolock' in options else 'local_lock=' + local})"
    if kind == "lustre" and "flock" not in options:
        return ("flock(2) is kept on this host (localflock)" if "localflock" in options
                else "flock(2) is not supported (mounted without -o flock)")
    return None


def _gluster_problems(mount: str) -> str | None:
    meta = os.path.join(mount, ".meta")
    try:
        with open(os.path.join(meta, "cmdline"), encoding="utf-8") as f:
            cmdline = str(json.load(f).get("Cmdlinestr", ""))
        with open(os.path.join(meta, "graphs", "active", "volfile"), encoding="utf-8") as f:
            translators = set(re.findall(r"^\s*type\s+(\S+)", f.read(), re.M))
    except (OSError, ValueError, AttributeError, RecursionError):
        return (f"GlusterFS mount {mount}: its client's settings cannot be read from {meta}, so its caches "
                "cannot be known to be off")
    args = cmdline.split()
    missing = [o for o in GLUSTER_MOUNT_OPTIONS if o not in args]
    if "--fopen-keep-cache=on" in args or "--fopen-keep-cache" in args:
        missing.append("--fopen-keep-cache=off")
    caching = sorted(option for translator, option in GLUSTER_CACHING.items() if translator in translators)
    if not missing and not caching:
        return None
    parts = []
    if missing:
        parts.append(f"mounted without {' '.join(missing)}")
    if caching:
        parts.append(f"volume options {', '.join(caching)} not off")
    return (f"GlusterFS mount {mount} caches names, attributes or content, or stamps mtimes on each client's "
            f"clock ({'; '.join(parts)}): leases and fences are not safe across hosts")
