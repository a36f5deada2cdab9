"""An `enqueue --after` that a signal reaches while its job is being published: the signal waits
until the job is published and judged once more, so a job enqueued after one that is already dead
goes dead at once (and one after a job done meanwhile is released), as without the signal; it is
not left waiting for a recovery sweep of after/ that may come long after (or never, with no
worker running)."""

from __future__ import annotations

import signal
import subprocess

import pytest

from conftest import SPOOLQ, strace_path
from spoolq import Spool


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_held_through_the_publish_still_lets_the_enqueuer_judge_its_job(tmp_path, signum):
    root = str(tmp_path / "spool")
    spool = Spool(root)
    spool.enqueue({"id": "a", "command": "false", "max_retries": 0})
    r = subprocess.run([*SPOOLQ, "--spool", root, "worker", "start", "--burst"], capture_output=True, timeout=120)
    assert r.returncode == 0 and spool.find("a").state == "dead", r.stderr
    # The signal comes at the job's rename into waiting/, where signals are held: it is heard
    # once the enqueue is done, which then has succeeded (its id printed, exit 0).
    r = subprocess.run([strace_path(), "-f", "-qq", "-o", "/dev/null", "-e", "trace=rename,renameat,renameat2",
                        "-e", f"inject=rename,renameat,renameat2:signal={signal.Signals(signum).name}:when=1",
                        *SPOOLQ, "--spool", root, "enqueue", "--id", "b", "--after", "a", "true"],
                       capture_output=True, text=True, timeout=120,
                       preexec_fn=lambda: signal.signal(signum, signal.SIG_DFL))  # not ignored, under nohup
    assert (r.returncode, r.stdout) == (0, "b\n"), r.stderr
    view = spool.find("b")
    assert (view.state, view.job.last_error) == ("dead", "dependency a is dead")
