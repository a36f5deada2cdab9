"""What a crash-point sweep counts as one crash state (tests/crash_states.py): a kill point is put
to use again only when it leaves a spool no earlier kill point left, so nothing that changes a
file or a process may be mistaken for nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

import crash_states
from conftest import strace_path

ROOT = "/t/spool"


def state(*calls: str) -> str:
    return crash_states.crash_state("".join(f"4242  {c}\n" for c in calls), ROOT)


def test_a_mkdir_that_found_its_directory_a_pipe_write_an_fsync_and_a_failed_call_change_nothing():
    assert state(f'mkdir("{ROOT}/pending", 0700) = -1 EEXIST (File exists)',
                 'write(2<pipe:[77]>, "started", 7) = 7',
                 f'fsync(3<{ROOT}/tmp/.x>) = 0',
                 f'rename("{ROOT}/a", "{ROOT}/b") = -1 ENOENT (No such file or directory)',
                 f'openat(AT_FDCWD</>, "{ROOT}/config.json", O_RDONLY|O_CLOEXEC) = 3<{ROOT}/config.json>',
                 f'rename("{ROOT}/pending/x", "{ROOT}/dead/x") = ?',
                 "+++ killed by SIGKILL +++") == state()


@pytest.mark.parametrize("call", [
    f'mkdir("{ROOT}/processing/w", 0700) = 0',
    f'write(3<{ROOT}/tmp/.x>, "{{}}", 2) = 2',
    f'write(1<{ROOT}.runs>, "a\\n", 2) = 2',
    f'openat(AT_FDCWD</>, "{ROOT}/locks/l", O_RDWR|O_CREAT|O_CLOEXEC, 0600) = 3<{ROOT}/locks/l>',
    f'rename("{ROOT}/pending/x", "{ROOT}/processing/w/x") = 0',
    'rename("a", "b") = 0',  # relative to wherever the command runs: a change all the same
    "kill(-4243, SIGKILL) = 0",
    'execve("/bin/sh", ["sh", "-c", "sleep 60"], 0x7ffd /* 3 vars */) = 0',
])
def test_a_call_that_changes_a_file_or_a_process_is_a_change(call):
    assert state(call) != state()


def test_the_same_changes_in_another_run_are_the_same_state_and_one_more_is_not():
    first = [f'write(3<{ROOT}/workers/vm-4242-97b555.json>, "{{\\"pid\\": 4242, \\"at\\": 1765100000.25}}", 30) = 30']
    again = [f'write(5<{ROOT}/workers/vm-5151-a0c3e1.json>, "{{\\"pid\\": 5151, \\"at\\": 1765100009.5}}", 29) = 29']
    assert state(*first) == state(*again)
    assert state(*first) != state(*first, f'unlink("{ROOT}/ids/x") = 0')


def test_a_call_split_by_another_thread_is_joined_and_one_that_never_returned_is_no_change():
    joined = crash_states.crash_state(
        f'4242  rename("{ROOT}/a", "{ROOT}/b" <unfinished ...>\n'
        f'4243  write(2<pipe:[9]>, "x", 1) = 1\n'
        "4242  <... rename resumed>) = 0\n"
        f'4243  unlink("{ROOT}/c" <unfinished ...>\n'
        "4243  +++ killed by SIGKILL +++\n", ROOT)
    assert joined == state(f'rename("{ROOT}/a", "{ROOT}/b") = 0')


def test_strace_logs_what_the_sweeps_read(tmp_path):
    """The log format read above, from the strace the sweeps run: a kill after a mkdir that
    found its directory there leaves the state of a kill before that mkdir; one after a write
    does not."""
    strace = strace_path()
    root = str(tmp_path / "spool")
    program = ("import os, sys\nfor _ in range(3):\n    os.makedirs(sys.argv[1], exist_ok=True)\n"
               "open(sys.argv[1] + '/f', 'w').write('x')\nos.mkdir(sys.argv[1] + '/d')\n")
    states = []
    for n in range(1, 5):
        log = tmp_path / f"log{n}"
        subprocess.run([strace, "-f", "-qq", "-y", "-s", "100", "-o", str(log), "-e",
                        f"trace={crash_states.STATE_CALLS}", "-e", f"inject=mkdir:signal=SIGKILL:when={n}",
                        sys.executable, "-c", program, root], capture_output=True, timeout=60)
        states.append(crash_states.crash_state(log.read_text(), root))
        subprocess.run(["rm", "-rf", root])
    assert states[0] != states[1] == states[2] != states[3]
    assert "mkdir(" in states[1] and "write(" in states[3]
