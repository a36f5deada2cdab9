"""enqueue and --batch: an interrupted batch unwinds, input is read in bounded memory, digits of
other scripts are refused, and its exit status tells the truth when stdin or stdout is odd."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from conftest import SPOOLQ, strace_path
from spoolq import Spool
from spools import _batch, cli


# ---- hardening: 6. a killed enqueue leaves nothing behind that blocks a re-run -------------------


@pytest.mark.review("hardening 6")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signalled_batch_unwinds_and_can_run_again(spool, tmp_path, signum):
    batch = _batch(tmp_path, 1_200)
    # The signal comes from strace, right after the batch's 1,000th id marker is linked: while it
    # reserves, always (a signal sent by the clock could come once the batch had finished).
    r = subprocess.run([strace_path(), "-f", "-qq", "-o", "/dev/null", "-e", "trace=link,linkat",
                        "-e", f"inject=link,linkat:signal={signal.Signals(signum).name}:when=1000",
                        *SPOOLQ, "--spool", spool.root, "enqueue", "--batch", batch],
                       capture_output=True, timeout=120,
                       # Under nohup SIGHUP comes ignored, and spoolq keeps it so (as a command
                       # should): the test's own command gets the default, whatever ran it.
                       preexec_fn=lambda: signal.signal(signum, signal.SIG_DFL))
    proc, err = r, r.stderr
    assert proc.returncode == 128 + signum, err
    assert b"Traceback" not in err
    assert os.listdir(spool.layout.pending) == [] and os.listdir(spool.layout.dir("ids")) == []
    assert os.listdir(spool.layout.tmp) == []
    assert cli(spool.root, "enqueue", "--batch", batch).returncode == 0


# ---- hardening: 8. unbounded input is read in bounded memory -------------------------------------


# The CLI as its console script runs it, telling its own peak memory as it exits. (A parent's
# getrusage counts the child's pre-exec copy of the parent too: pytest's own size.)
PEAK = [sys.executable, "-c", "import atexit, sys\n"
        "atexit.register(lambda: sys.stderr.write([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]))\n"
        "sys.argv[0] = 'spoolq'\nfrom spoolq.cli import run\nrun()"]


@pytest.mark.review("hardening 8")
@pytest.mark.parametrize("args,message", [
    (("enqueue", "--batch", "-"), "line 1: longer than the limit"),
    (("enqueue", "--file", "-"), "larger than a job may be"),
])
def test_an_endless_input_is_refused_in_bounded_memory(spool_dir, args, message):
    with open("/dev/zero", "rb") as zero:
        r = subprocess.run([*PEAK, "--spool", spool_dir, *args], stdin=zero, capture_output=True, text=True,
                           timeout=60)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    peak_kb = int(r.stderr.split("VmHWM:")[1].split()[0])
    assert peak_kb < 100 * 1024, r.stderr


@pytest.mark.review("hardening 8")
def test_a_batch_over_its_line_limit_is_refused(cli_in_process, monkeypatch):
    from spoolq.cli import enqueue as enqueue_cli

    monkeypatch.setattr(enqueue_cli, "MAX_BATCH_LINES", 10)
    r = cli_in_process("enqueue", "--batch", "-", input='{"command": "true"}\n' * 11)
    assert r.exit_code == 2 and "over the limit of 10 lines" in r.output


@pytest.fixture
def cli_in_process(cli):
    return cli


# ---- hardening: 12. enqueue's exit status tells the truth ----------------------------------------


@pytest.mark.review("hardening 12")
def test_enqueue_with_nowhere_to_print_exits_1_and_queues_nothing(spool):
    with open("/dev/full", "w") as full:
        r = subprocess.run([*SPOOLQ, "--spool", spool.root, "enqueue", "--id", "j1", "--cmd", "true"],
                           stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert r.returncode == 1 and "nothing was enqueued" in r.stderr, r.stderr
    read_end, write_end = os.pipe()
    os.close(read_end)
    r = subprocess.run([*SPOOLQ, "--spool", spool.root, "enqueue", "--id", "j2", "--cmd", "true"],
                       stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    os.close(write_end)
    assert r.returncode == 1 and "nothing was enqueued" in r.stderr, r.stderr
    assert spool.counts().pending == 0 and os.listdir(spool.layout.dir("ids")) == []


# ---- hardening: 13. lookalike digits -------------------------------------------------------------


LOOKALIKES = [
    ("purge", "--older-than", "nan"),
    ("wait", "--timeout", "inf"),
    ("list", "--limit", "1_0"),
    ("config", "set", "poll_interval", "nan"),
    ("config", "set", "max_retries", "1_0"),
    ("enqueue", "--run-at", "٣", "--cmd", "true"),
    ("enqueue", "--run-at", "１２", "--cmd", "true"),
    ("enqueue", "--priority", "٣", "--cmd", "true"),
    ("enqueue", "--max-retries", "٣", "--cmd", "true"),
    ("enqueue", "--timeout", "١.٥", "--cmd", "true"),
    ("enqueue", "--delay", "٣", "--cmd", "true"),
    ("config", "set", "max_retries", "٣"),
    ("config", "set", "poll_interval", "٣"),
    ("config", "set", "trusted_uids", "١٠٠٠"),
    ("list", "--limit", "٣"),
    ("worker", "start", "--count", "٢"),
    ("purge", "--older-than", "٣"),
]


@pytest.mark.review("hardening 13")
@pytest.mark.parametrize("args", LOOKALIKES, ids=[" ".join(a[:2]) + " " + a[2] for a in LOOKALIKES])
def test_numbers_in_other_scripts_digits_are_refused(spool, cli, args):
    """int() and float() read '٣' as 3: every number a user types is refused unless it is 0-9."""
    r = cli(*args)
    assert r.exit_code == 2, r.output
    assert spool.counts().pending == 0 and spool.config.max_retries == 3


# ---- hardening: 17. no tracebacks: deep JSON, closed stdin, ill-typed config, a BOM --------------


@pytest.mark.review("hardening 17")
def test_one_nesting_limit_for_enqueue_and_the_worker(spool_dir):
    """980 levels parsed in the CLI's shallow stack, and not in a worker's: one limit for both."""
    deep = '{"command": "true", "x": ' + "[" * 980 + "]" * 980 + "}"
    r = cli(spool_dir, "enqueue", deep)
    assert r.returncode == 2 and "nested too deeply" in r.stderr, r


@pytest.mark.review("hardening 17")
def test_enqueue_from_a_closed_stdin_says_so(spool_dir):
    r = subprocess.run([*SPOOLQ, "--spool", spool_dir, "enqueue", "--file", "-"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, close_fds=True, timeout=60,
                       preexec_fn=lambda: os.close(0))
    assert r.returncode == 2 and "stdin: it is closed" in r.stderr, r.stderr


@pytest.mark.review("hardening 17")
def test_a_json_argument_with_a_bom_is_refused_not_run_as_a_command(cli):
    r = cli("enqueue", '\ufeff{"command": "true"}')
    assert r.exit_code == 2 and "BOM" in r.output


# ---- hardening: what the adversarial review of this work found -----------------------------------


@pytest.mark.review("hardening this work")
def test_enqueue_with_stdout_closed_says_so(spool_dir):
    r = subprocess.run([*SPOOLQ, "--spool", spool_dir, "enqueue", "true"], stdin=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True, timeout=60, preexec_fn=lambda: os.close(1))
    assert r.returncode == 1 and "stdout is closed" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.review("hardening this work")
def test_enqueue_from_a_fifo_with_no_writer_does_not_hang(spool_dir, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    r = cli(spool_dir, "enqueue", "--file", str(fifo), timeout=20)
    assert r.returncode == 2 and "not valid JSON" in r.stderr, r.stderr


# ---- an `enqueue --after` that a signal reaches while its job is published ---------------------
# An `enqueue --after` that a signal reaches while its job is being published: the signal waits
# until the job is published and judged once more, so a job enqueued after one that is already dead
# goes dead at once (and one after a job done meanwhile is released), as without the signal; it is
# not left waiting for a recovery sweep of after/ that may come long after (or never, with no
# worker running).


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


def test_json_ids_with_text_stdout_cannot_encode_are_printed_in_utf_8(spool):
    """--json keeps a command's own characters; a stdout whose encoding cannot hold them (ASCII
    under a C locale, Latin-1) still gets the lines, in UTF-8 as JSON is, and the job is enqueued:
    never a traceback with nothing enqueued."""
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    r = subprocess.run([*SPOOLQ, "--spool", spool.root, "enqueue", "--json", "--id", "j1", "--cmd", "echo é €"],
                       capture_output=True, timeout=60, env=env)
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr.decode(errors="replace")
    import json
    assert json.loads(r.stdout.decode("utf-8"))["command"] == "echo é €"
    assert spool.counts().pending == 1
