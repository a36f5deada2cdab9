"""The container rig: the image of contrib/container/ built and run by podman on this machine.

There is no image registry here, so the base is made: `debootstrap --variant=minbase` of Debian
bookworm with python3 and its venv module, from the mirror apt already uses, imported into
podman. It is cached outside the repository (``${TMPDIR:-/tmp}/spoolq-container/``: the tarball,
and the imported image in podman's store), so only the first run pays for it. spoolq and its
dependencies go in as wheels built here (`pip wheel`), and the build has no network.

podman runs with runc and the cgroupfs manager, and without default ulimits (these machines lack
CAP_SYS_RESOURCE and use hybrid cgroups, which crun refuses): a containers.conf of the rig's own,
named by CONTAINERS_CONF for each podman command, leaves the machine's configuration alone.

Without podman, runc, debootstrap, Debian's python3 with venv (the spool's owner's spoolq on the
host, from the same wheels) or root the tests that need the rig skip, unless
SPOOLQ_REQUIRE_CONTAINER=1 (CI) makes that a failure.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import required_tool

CHECKOUT = Path(__file__).resolve().parent.parent
CONTEXT = CHECKOUT / "contrib" / "container"
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv")
BASE_IMAGE = f"localhost/spoolq-test-base:{SUITE}-minbase-{'-'.join(BASE_PACKAGES)}"
REQUIRE = "SPOOLQ_REQUIRE_CONTAINER"
HOST_PYTHON = "/usr/bin/python3"
CONTAINERS_CONF = """\
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


def cache_dir() -> Path:
    return Path(os.environ.get("TMPDIR") or "/tmp") / "spoolq-container"


@functools.cache
def tools() -> dict[str, str]:
    """podman, runc, debootstrap and Debian's python3 with venv, as root: or skip (fail with
    SPOOLQ_REQUIRE_CONTAINER=1)."""
    found = {name: required_tool(name, REQUIRE, name) for name in ("podman", "runc", "debootstrap")}
    if os.geteuid() != 0:
        _missing("root (debootstrap, and acting as the spool's owner)")
    if subprocess.run([HOST_PYTHON, "-c", "import ensurepip"], capture_output=True).returncode != 0:
        _missing(f"{HOST_PYTHON} with its venv module (Debian package python3-venv), for the owner's spoolq")
    return found


def _missing(what: str) -> None:
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"the container test needs {what} here ({REQUIRE}=1)")
    pytest.skip(f"the container test needs {what}")


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    conf = cache_dir() / "containers.conf"
    if not conf.exists() or conf.read_text() != CONTAINERS_CONF:
        conf.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(conf, CONTAINERS_CONF.encode())
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    done = subprocess.run([tools()["podman"], *args], capture_output=True, text=True, timeout=timeout, env=env)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    return done


def debian_mirror() -> str:
    """The Debian mirror apt uses here for `SUITE` (deb822 .sources or one-line .list files)."""
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.sources")),
                 *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
            if SUITE in fields.get("Suites", "").split() and "debian-security" not in fields.get("URIs", ""):
                return fields["URIs"].split()[0]
        for line in text.splitlines():
            words = line.split()
            if len(words) >= 3 and words[0] == "deb" and SUITE in words and "security" not in line:
                return next(w for w in words[1:] if "://" in w)
    pytest.fail(f"no Debian {SUITE} mirror in /etc/apt/sources.list*: debootstrap needs one")


def base_image() -> str:
    """The minbase image: from podman's store, else imported from the cached tarball, else
    debootstrapped first (about a minute) and the tarball cached."""
    if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return BASE_IMAGE
    tarball = cache_dir() / f"{SUITE}-minbase-{'-'.join(BASE_PACKAGES)}.tar"
    if not tarball.exists():
        _debootstrap(tarball)
    podman("import", str(tarball), BASE_IMAGE, timeout=600)
    return BASE_IMAGE


def _debootstrap(tarball: Path) -> None:
    tarball.parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=tarball.parent))
    try:
        made = subprocess.run([tools()["debootstrap"], "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                               SUITE, str(root / "root"), debian_mirror()],
                              capture_output=True, text=True, timeout=1800)
        assert made.returncode == 0, f"debootstrap failed: {made.stdout[-2000:]}{made.stderr[-2000:]}"
        partial = root / "base.tar"
        subprocess.run(["tar", "-C", str(root / "root"), "-cf", str(partial), "."], check=True, timeout=600)
        os.replace(partial, tarball)  # whole or not at all: a run killed meanwhile leaves no half base
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _write_atomically(path: Path, data: bytes) -> None:
    fd, partial = tempfile.mkstemp(dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(partial, path)


def image_uid() -> tuple[int, int]:
    """The uid and gid the image runs as unless told otherwise (the Containerfile's build args)."""
    text = (CONTEXT / "Containerfile").read_text()
    uid, gid = (re.search(rf"^ARG {name}=(\d+)$", text, re.M) for name in ("UID", "GID"))
    assert uid and gid, "the Containerfile names its default UID and GID"
    return int(uid.group(1)), int(gid.group(1))


def build_image(source: Path, workdir: Path, tag: str) -> str:
    """The image as docs/container.md builds it, from `source` (a copy of the checkout: pip builds
    in the tree it is given): a context of contrib/container/ and the wheels, on the
    debootstrapped base."""
    context = workdir / "context"
    shutil.copytree(CONTEXT, context)
    wheels = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
                             f"{source}[web]", "-w", str(context / "wheels")],
                            capture_output=True, text=True, timeout=600)
    assert wheels.returncode == 0, wheels.stderr[-2000:]
    podman("build", "--quiet", "--format", "docker", "--network", "none", "--build-arg", f"BASE={base_image()}",
           "-t", tag, "-f", str(context / "Containerfile"), str(context), timeout=900)
    return tag


def owner_install(wheels: Path, dest: Path) -> Path:
    """spoolq for the spool's owner on the host, from the image's wheels, in a virtualenv of
    Debian's python3 (one other users can run: the tests' own may live in root's home); its
    `spoolq` command."""
    made = subprocess.run([HOST_PYTHON, "-m", "venv", str(dest)], capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, f"python3 -m venv: {made.stderr[-2000:]}"
    done = subprocess.run([str(dest / "bin" / "pip"), "install", "--quiet", "--no-index", "--disable-pip-version-check",
                           "--find-links", str(wheels), "spoolq"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return dest / "bin" / "spoolq"
