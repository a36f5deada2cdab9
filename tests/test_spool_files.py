"""Spool files that are not what they should be (deep JSON, fifos, ill-typed config values, a huge
sparse attempts log): a one-line error or a skip, never a traceback or a hang."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import SPOOLQ
from spoolq import fsck, Spool
from spoolq.system import fsio
from spools import cli, REPO


# ---- hardening: 17. no tracebacks: deep JSON, closed stdin, ill-typed config, a BOM --------------


DEEP = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@pytest.mark.review("hardening 17")
@pytest.mark.parametrize("where", ["config.json", "workers/w.json", "quarantine/+q.000000000000.json"])
def test_deep_json_in_any_spool_file_gives_no_traceback(spool, where):
    with open(os.path.join(spool.root, where), "wb") as f:
        f.write(DEEP)
    if where.startswith("quarantine"):
        open(os.path.join(spool.layout.dead, "+q.000000000000.json"), "wb").close()
    for args in (("status",), ("worker", "list"), ("dlq", "list"), ("show", "+q.000000000000"), ("fsck",),
                 ("list",)):
        r = cli(spool.root, *args)
        assert "Traceback" not in r.stderr and r.returncode in (0, 1), (args, r.stderr)


@pytest.mark.review("hardening 17")
def test_a_marker_is_never_written_into_a_fifo(tmp_path):
    """A worker that lost its job marks the job's log; output/ is writable by the spool's group."""
    fifo = str(tmp_path / "job.log")
    os.mkfifo(fifo)
    code = "import sys; from spoolq.store import output; output.mark(sys.argv[1], 'result discarded')"
    r = subprocess.run([sys.executable, "-c", code, fifo], cwd=REPO, timeout=30, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.review("hardening 17")
def test_a_fifo_in_tmp_synced_by_name_is_refused_at_once(tmp_path):
    """tmp/ is writable by the spool's group: a fifo renamed over a staged file before a batch
    syncs it must fail that sync (EINVAL), not wait for a writer forever."""
    fifo = str(tmp_path / "staged.json")
    os.mkfifo(fifo)
    code = ("import errno, sys; from spoolq.system import fsio\n"
            "try: fsio.fsync_path(sys.argv[1])\n"
            "except OSError as e: sys.exit(0 if e.errno == errno.EINVAL else 3)\n"
            "sys.exit(4)")
    r = subprocess.run([sys.executable, "-c", code, fifo], cwd=REPO, timeout=30, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.review("hardening 17")
def test_a_fifo_as_the_detached_workers_log_hangs_nothing(spool, spool_dir, tmp_path):
    spool.enqueue({"command": "true"})
    os.makedirs(os.path.dirname(spool.worker_log()), exist_ok=True)
    os.mkfifo(spool.worker_log())
    with open(tmp_path / "cli.err", "w+") as err:  # not a pipe: a detached supervisor would hold it
        r = subprocess.run([*SPOOLQ, "--spool", spool_dir, "worker", "start", "--detach", "--burst"],
                           stdout=subprocess.DEVNULL, stderr=err, timeout=60)
        err.seek(0)
        said = err.read()
    assert r.returncode == 1 and said.startswith("Error: cannot write the workers' log") and \
        said.rstrip().endswith("not a regular file"), said
    assert not Spool(spool_dir).owners.workers(), "no supervisor or worker is left behind"


@pytest.mark.review("hardening 17")
def test_a_huge_sparse_attempts_log_is_read_no_further_than_a_writer_writes(spool):
    """events/ is writable by the spool's group: `stats`, the dashboard, the metrics textfile and
    a burst's tally read every log written lately (a sparse terabyte took an hour)."""
    from spoolq.store import attempts_log

    spool.enqueue({"command": "true"})
    directory = spool.layout.dir("events")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "vm-1-abcdef" + attempts_log.SUFFIX), "wb") as f:
        f.truncate(1 << 40)

    def too_long(*_):
        raise TimeoutError("still reading the attempts log after 20 s")

    old = signal.signal(signal.SIGALRM, too_long)
    signal.setitimer(signal.ITIMER_REAL, 20)
    try:
        assert spool.stats(3600) is not None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.review("hardening 17")
def test_ill_typed_config_values_are_said_not_silently_ignored(spool):
    fsio.publish(spool.store.temp_path(), json.dumps({"max_retries": "five", "colour": "blue"}).encode(),
                 spool.layout.config, mode=0o600)
    r = cli(spool.root, "config", "show")
    assert r.returncode == 0
    assert "max_retries" in r.stderr and "'colour' is ignored" in r.stderr
    kinds = [p.kind for p in fsck.check(Spool(spool.root, create=False))]
    assert kinds == ["config", "config"]

