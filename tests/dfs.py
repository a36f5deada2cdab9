"""A real distributed file system for the multi-host tests: GlusterFS on this machine.

One glusterd, started by hand (no systemd) with its state in a temp directory and its own
control socket; one brick per volume on 127.0.0.2 (gluster refuses "localhost"). Two volumes:

- ``strict``: client caches off (mounted with zero entry/attribute/negative timeouts and no
  fopen-keep-cache; the volume's performance translators and ``features.ctime`` off), the
  configuration the README asks for;
- ``stock``: gluster's defaults (about 1 s of entry and attribute caching, mtimes set by the
  writing client's clock).

Each volume is mounted by separate glusterfs FUSE clients, one per simulated host: each client has
caches of its own and gets no inotify events for the other's writes, as on two machines. A host
can be given a skewed clock (``faketime`` on its glusterfs client, and on its spoolq processes).
Everything is torn down by pid at the end of the session.

When the packages (Debian's glusterfs-server, glusterfs-client) are missing the tests that need
the rig skip, unless SPOOLQ_REQUIRE_DFS=1 (CI) makes that a failure.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

BRICK_HOST = "127.0.0.2"
PORT = 24007  # glusterd's: bricks and clients ask it for their volfiles there
STRICT_MOUNT = ["--entry-timeout=0", "--attribute-timeout=0", "--negative-timeout=0", "--fopen-keep-cache=off"]
STRICT_VOLUME = [*(f"performance.{x}" for x in ("stat-prefetch", "quick-read", "open-behind", "write-behind",
                                                 "io-cache", "read-ahead", "readdir-ahead")), "features.ctime"]
VOLUMES = ("strict", "stock")
LIBFAKETIME = next(iter(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1")), "libfaketimeMT.so.1")


def unavailable(reason: str) -> None:
    if os.environ.get("SPOOLQ_REQUIRE_DFS") == "1":
        pytest.fail(f"GlusterFS rig unavailable: {reason}")
    pytest.skip(f"GlusterFS rig unavailable: {reason}")


class Gluster:
    def __init__(self, root: Path):
        self.root = root
        self.sock = str(root / "glusterd.socket")
        self.mounts: dict[tuple[str, str], str] = {}
        self.clients: list[subprocess.Popen] = []
        self.glusterd_pid: int | None = None

    # ---- bring-up --------------------------------------------------------------------------

    def start(self) -> "Gluster":
        for exe in ("glusterd", "glusterfs", "gluster"):
            if sbin(exe) is None:
                unavailable(f"{exe} is not installed (Debian packages glusterfs-server, glusterfs-client)")
        if not os.path.exists("/dev/fuse"):
            unavailable("/dev/fuse is missing")
        if os.geteuid() != 0:
            unavailable("glusterd and its FUSE clients need root")
        if _port_busy(PORT):
            unavailable(f"port {PORT} is taken (another glusterd?)")
        state = self.root / "state"
        state.mkdir(parents=True)
        (self.root / "logs").mkdir()
        volfile = self.root / "glusterd.vol"
        volfile.write_text("volume management\n    type mgmt/glusterd\n"
                           f"    option working-directory {state}\n    option transport-type socket\n"
                           f"    option transport.socket.listen-port {PORT}\n"
                           f"    option glusterd-sockfile {self.sock}\n"
                           "    option ping-timeout 0\n    option event-threads 1\nend-volume\n")
        pidfile = self.root / "glusterd.pid"
        self._run(sbin("glusterd"), "-f", str(volfile), "-p", str(pidfile), "-l", str(self.root / "logs/glusterd.log"))
        self.glusterd_pid = int(_wait_for_file(pidfile).read_text())
        _wait(lambda: self._cli("volume", "list", check=False).returncode == 0, 15, "glusterd to answer")
        for volume in VOLUMES:
            brick = self.root / "bricks" / volume
            brick.mkdir(parents=True)
            self._cli("volume", "create", volume, f"{BRICK_HOST}:{brick}", "force")
            if volume == "strict":
                for option in STRICT_VOLUME:
                    self._cli("volume", "set", volume, option, "off")
            self._cli("volume", "start", volume)
        return self

    def mount(self, volume: str, host: str, *, skew: str | None = None) -> str:
        """The mount point of `volume` as seen by `host` (made on first use). `skew`, a faketime
        offset such as "+30s", runs that host's client on a clock that far off."""
        key = (volume, host)
        if key in self.mounts:
            return self.mounts[key]
        point = self.root / "mnt" / f"{volume}-{host}"
        point.mkdir(parents=True, exist_ok=True)  # unmount() leaves it
        options = STRICT_MOUNT if volume == "strict" else []
        log = open(self.root / "logs" / f"client-{volume}-{host}.out", "ab")
        # -N: in the foreground, so the client is our child and its pid is known without a pid file.
        client = subprocess.Popen([sbin("glusterfs"), "-N", *options, f"--volfile-server={BRICK_HOST}",
                                   f"--volfile-id={volume}", "-l", str(self.root / "logs" / f"client-{volume}-{host}.log"),
                                   str(point)], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, **(faketime(skew) if skew else {})})
        log.close()
        self.clients.append(client)
        _wait(lambda: os.path.ismount(point) or client.poll() is not None, 15, f"{volume} to mount for host {host}")
        if not os.path.ismount(point):
            unavailable(f"the glusterfs client for {volume} on host {host} exited ({client.returncode})")
        self.mounts[key] = str(point)
        return str(point)

    def unmount(self, volume: str, host: str) -> None:
        """Unmount one host's client (its process goes: a client with a skewed clock left the
        others several times slower while it lived, not understood yet)."""
        point = self.mounts.pop((volume, host), None)
        if point is None:
            return
        subprocess.run(["umount", "-l", point], capture_output=True)
        for client in self.clients:
            if client.args[-1] == point and client.poll() is None:
                client.kill()
                client.wait()

    def partition(self, volume: str, host: str) -> None:
        """Cut `host` off from the volume while its processes stay up: its client process is
        killed and its mount point left in place, so every call there fails at once (ENOTCONN)."""
        point = self.mounts[(volume, host)]
        for client in self.clients:
            if client.args[-1] == point and client.poll() is None:
                client.kill()
                client.wait()

    def kill_client(self, volume: str, host: str) -> None:
        """SIGKILL one host's client, as a host that dies takes its client with it (its
        connections to the brick close), then lazily unmount what is left of its mount."""
        self.partition(volume, host)
        subprocess.run(["umount", "-l", self.mounts.pop((volume, host))], capture_output=True)

    def heal(self, volume: str, host: str) -> str:
        """Connect a partitioned `host` again: a new client on the same mount point (paths
        taken afresh reach the volume; descriptors opened before the cut stay dead)."""
        self.unmount(volume, host)
        return self.mount(volume, host)

    def new_dir(self, volume: str, name: str) -> str:
        """A fresh directory on `volume` (a test's spool lives in one)."""
        path = os.path.join(self.mount(volume, "A"), name)
        os.mkdir(path, 0o700)
        return name

    # ---- teardown --------------------------------------------------------------------------

    def close(self) -> None:
        for point in self.mounts.values():
            subprocess.run(["umount", "-l", point], capture_output=True)
        bricks = [pid for pid in _pids() if str(self.root / "bricks") in _cmdline(pid)]
        for pid in [*(c.pid for c in self.clients), *bricks, *([self.glusterd_pid] if self.glusterd_pid else [])]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for client in self.clients:
            client.wait()

    # ---- helpers ---------------------------------------------------------------------------

    def _cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([sbin("gluster"), "--mode=script", f"--glusterd-sock={self.sock}", *args],
                           capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            self.close()
            unavailable(f"gluster {' '.join(args)}: {(r.stdout + r.stderr).strip()}")
        return r

    def _run(self, *argv: str) -> None:
        # Output to a file, not a pipe: a daemon that keeps the pipe open (glusterfs under faketime
        # does) would hold us until the timeout.
        with open(self.root / "logs" / "commands.log", "a+") as out:
            start = out.tell()
            code = subprocess.run(list(argv), stdout=out, stderr=subprocess.STDOUT, timeout=60,
                                  stdin=subprocess.DEVNULL).returncode
            out.seek(start)
            said = out.read().strip()
        if code != 0:
            self.close()
            unavailable(f"{' '.join(argv)}: {said or code}")


def sbin(exe: str) -> str | None:
    """Gluster's programs live in /usr/sbin, which a PATH set for an ordinary user may lack."""
    return shutil.which(exe, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def faketime(offset: str) -> dict[str, str]:
    """The environment that runs a C program (a glusterfs client) `offset` (such as "+30s") off
    the real clock, with Debian's libfaketime preloaded; its clock keeps running from there."""
    if shutil.which("faketime") is None or not os.path.exists(LIBFAKETIME):
        unavailable("faketime is not installed (Debian package faketime)")
    return {"LD_PRELOAD": LIBFAKETIME, "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def skewed_python(seconds: float, shim_dir: Path) -> dict[str, str]:
    """The environment that runs Python `seconds` off the real wall clock. Not libfaketime:
    under it Python 3.11's time.sleep fails with EINVAL, or threading's timed waits hang
    (libfaketime issues 426 and 390). Every wall-clock reading of spoolq's is time.time() or
    time.time_ns(), so a sitecustomize that shifts both skews spoolq as a host's clock would."""
    shim_dir.mkdir(parents=True, exist_ok=True)
    (shim_dir / "sitecustomize.py").write_text(
        "import time\n"
        f"_SKEW = {seconds!r}\n"
        "_time, _time_ns = time.time, time.time_ns\n"
        "time.time = lambda: _time() + _SKEW\n"
        "time.time_ns = lambda: _time_ns() + int(_SKEW * 1e9)\n")
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": f"{shim_dir}{os.pathsep}{path}" if path else str(shim_dir)}


def client_cmdline(mount_point: str) -> str:
    with open(os.path.join(mount_point, ".meta", "cmdline")) as f:
        return json.load(f)["Cmdlinestr"]


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            unavailable(f"timed out waiting for {what}")
        time.sleep(0.05)


def _wait_for_file(path: Path) -> Path:
    _wait(lambda: path.exists() and path.read_text().strip(), 15, f"{path} to be written")
    return path


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
