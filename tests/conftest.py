"""Shared fixtures: real spools under tmp_path, the CLI in-process and as real processes."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, settings

# Property tests share two cores with real worker processes: no per-example deadline. In CI the
# examples are derandomized, so a red run is reproducible and a green one is not luck.
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", parent=settings.get_profile("dev"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
# The quick tier (scripts/test.sh --quick) runs every property with a quarter of its examples:
# a test that sets its own number gives it through examples(), which a profile cannot override.
QUICK = os.environ.get("SPOOLQ_QUICK") == "1"


def examples(n: int) -> int:
    """How many examples a property test with `n` of them runs in this tier."""
    return max(10, n // 4) if QUICK else n

from spoolq import Spool
from spoolq.cli import main

SPOOLQ = [sys.executable, "-m", "spoolq"]


def required_tool(name: str, require: str, package: str) -> str:
    """The path of a tool some tests need: they skip without it, unless the environment variable
    `require` is 1 (CI), which makes that a failure."""
    import shutil

    path = shutil.which(name)
    if path is None:
        if os.environ.get(require) == "1":
            pytest.fail(f"{name} is required here ({require}=1) and is not installed")
        pytest.skip(f"this test needs {name} (Debian package {package}; .ci/run installs it)")
    return path


def strace_path() -> str:
    """strace, for the crash-point sweeps and the fencing tests."""
    return required_tool("strace", "SPOOLQ_REQUIRE_STRACE", "strace")


def safecat_path() -> str:
    """Debian's safecat, the Maildir deliverer the maildir/ tests deliver with."""
    return required_tool("safecat", "SPOOLQ_REQUIRE_SAFECAT", "safecat")


def process_state(pid: int) -> str | None:
    """The one-letter process state from /proc (None if gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2:].split()[0].decode()


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> object:
    """Poll `predicate` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 1.5, 0.1)


RIG_FIXTURES = {"gluster", "safe_rig", "lazy"}  # the multi-host rigs and the power-cut file system
RIG_MODULES = {"test_hosts", "test_dfs", "test_powercut", "test_fencing"}
CONTAINER_FIXTURES = {"image", "owners"}  # tests/container.py: podman on this machine


def pytest_addoption(parser) -> None:
    parser.addoption("--machine-tests", choices=("all", "skip", "only"), default="all",
                     help="the tests that cannot share this machine with themselves (the rigs: GlusterFS on its "
                          "fixed port, FUSE mounts; the container image): run them too (all), leave them out "
                          "(skip: what may run under xdist), or run only them (only: one at a time)")


def shares_the_machine(item) -> bool:
    """Whether a test may run beside another copy of itself (under xdist): not a rig, not podman,
    not one that measures how two workers race (`alone`: another test's load makes them race more).
    (Not an xdist_group under `--dist loadgroup`: with pytest 9.2 and pytest-xdist 3.8 that groups
    nothing and says nothing, as xdist marks a group by rewriting an item's id, which pytest no
    longer reads: pytest-xdist issue 1386.)"""
    return not (item.get_closest_marker("rig") or item.get_closest_marker("alone")
                or set(getattr(item, "fixturenames", ())) & CONTAINER_FIXTURES)


def pytest_collection_modifyitems(config, items) -> None:
    """The quick tier leaves out what needs a rig or a browser: marked here by what a test uses.
    --machine-tests keeps or leaves out what cannot share the machine (scripts/test.sh runs the
    rest on two cores, then those one at a time)."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & RIG_FIXTURES or item.module.__name__ in RIG_MODULES:
            item.add_marker(pytest.mark.rig)
        if "browser" in names:
            item.add_marker(pytest.mark.browser)
    which = config.getoption("machine_tests")
    if which != "all":
        keep = [item for item in items if shares_the_machine(item) == (which == "skip")]
        dropped = [item for item in items if shares_the_machine(item) != (which == "skip")]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(scope="session")
def gluster(tmp_path_factory) -> Iterator[object]:
    """One GlusterFS server for the whole session (tests/dfs.py), torn down at its end."""
    import dfs

    rig = dfs.Gluster(tmp_path_factory.mktemp("gluster"))
    try:
        yield rig.start()
    finally:
        rig.close()


@pytest.fixture
def spool_dir(tmp_path) -> str:
    return str(tmp_path / "spool")


@pytest.fixture
def spool(spool_dir) -> Spool:
    return Spool(spool_dir)


class Cli:
    """Runs the click app in-process against one spool."""

    def __init__(self, spool_dir: str):
        self.spool_dir = spool_dir
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | bytes | None = None):
        return self.runner.invoke(main, ["--spool", self.spool_dir, *args], input=input, catch_exceptions=False)

    def json(self, *args: str):
        result = self(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.output)


@pytest.fixture
def cli(spool_dir) -> Cli:
    return Cli(spool_dir)


def spoolq(spool_dir: str, *args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    """Run the real `spoolq` CLI as a separate process."""
    return subprocess.run([*SPOOLQ, "--spool", spool_dir, *args], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


@pytest.fixture
def run(spool_dir):
    return lambda *args, **kw: spoolq(spool_dir, *args, **kw)


def stop_gracefully(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM a `worker start` process (running jobs finish first); SIGKILL its group if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Workers:
    """`spoolq worker start --count N` in the foreground, as a real process group."""

    def __init__(self, spool_dir: str, count: int = 1, env: dict | None = None, extra: tuple = ()):
        self.spool_dir = spool_dir
        self.count = count
        self.proc = subprocess.Popen([*SPOOLQ, "--spool", spool_dir, "worker", "start", "--count", str(count),
                                      *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})}, start_new_session=True)
        # Drained as it comes: a foreground worker says a line per job, and a pipe nobody reads
        # fills and blocks it.
        self._out = bytearray()
        self._drain = threading.Thread(target=self._read_all, daemon=True)
        self._drain.start()

    def _read_all(self) -> None:
        assert self.proc.stdout is not None
        while chunk := self.proc.stdout.read1(65536):
            self._out += chunk

    @property
    def output(self) -> str:
        return self._out.decode(errors="replace")

    def live(self, spool: Spool | None = None) -> list:
        spool = spool or Spool(self.spool_dir)
        return [w for w in spool.workers() if w.role == "worker"]

    def wait_ready(self, timeout: float = 15) -> "Workers":
        spool = Spool(self.spool_dir)
        wait_for(lambda: len([w for w in self.live(spool) if w.extra.get("supervisor") == self.proc.pid])
                 >= self.count, timeout, f"{self.count} workers to register")
        return self

    def stop(self, timeout: float = 20) -> str:
        stop_gracefully(self.proc, timeout)
        self._drain.join(timeout)
        return self.output

    def wait_for(self, predicate: Callable[[], object], timeout: float, what: str) -> object:
        """wait_for(), saying what the workers logged when it times out."""
        try:
            return wait_for(predicate, timeout, what)
        except AssertionError as e:
            raise AssertionError(f"{e}; the workers said:\n{self.output}") from None

    def kill_all(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


@pytest.fixture
def workers(spool_dir) -> Iterator[Callable[..., Workers]]:
    started: list[Workers] = []

    def start(count: int = 1, **kwargs) -> Workers:
        w = Workers(kwargs.pop("spool_dir", spool_dir), count, **kwargs)
        started.append(w)
        return w.wait_ready()

    yield start
    for w in started:
        w.stop()
        w.kill_all()


@contextmanager
def env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def dead_pid() -> int:
    """A pid that just exited (and was reaped): a crashed owner's."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def backdate(path: str, seconds: float = 7200) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t), follow_symlinks=False)


@pytest.fixture
def small_fs(tmp_path):
    """A few MB tmpfs to fill; skipped (saying why) where mounting is not allowed."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True,
                           text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"full-disk tests need a small tmpfs; cannot run mount: {e}")
    if r.returncode != 0:
        pytest.skip("full-disk tests need a small tmpfs, and mounting one is not allowed here "
                    f"(needs root or CAP_SYS_ADMIN): {r.stderr.strip()}")
    yield str(mnt)
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(directory: str) -> str:
    """Fill the file system holding `directory` to the last byte; returns the filler's path."""
    path = os.path.join(directory, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 65536, 4096, 512, 1):
            chunk = b"\0" * size
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as e:
                    assert e.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return path
