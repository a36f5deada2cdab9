"""Hostile input through the CLI and --batch: every malformed or malicious form gets its documented
exit code and message and writes nothing; oversized but legal input works."""

from __future__ import annotations

import json
import os
import stat

import pytest

from spools import BIG


def snapshot(root: str, dir_times: bool = True) -> dict[str, tuple[int, int, int]]:
    """Every path under the spool with its type, size and mtime: 'nothing written' means equal.
    Without `dir_times`: nothing left behind (an id reserved and given back changes ids/'s mtime).
    A lock file's mtime is when the lock was last taken, not a write to the spool."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            keep_time = (dir_times or not stat.S_ISDIR(st.st_mode)) and os.path.basename(dirpath) != "locks"
            out[os.path.relpath(path, root)] = (stat.S_IFMT(st.st_mode), st.st_size,
                                                st.st_mtime_ns if keep_time else 0)
    return out


def _file(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


# (case id, argv builder given tmp_path, stdin, exit status, a piece of the message)
CLI_CASES = [
    ("not-json", lambda t: ["enqueue", "{"], None, 2, "JOB is not valid JSON"),
    ("json-array", lambda t: ["enqueue", "[1, 2]"], None, 2, "must be a JSON object, not an array"),
    ("leading-space-brace", lambda t: ["enqueue", "   {oops"], None, 2, "not valid JSON"),
    ("command-not-string", lambda t: ["enqueue", '{"command": 5}'], None, 2, "command: required"),
    ("command-blank", lambda t: ["enqueue", '{"command": "   "}'], None, 2, "command: required"),
    ("command-missing", lambda t: ["enqueue", '{"id": "x"}'], None, 2, "command: required"),
    ("command-blank-arg", lambda t: ["enqueue", "   "], None, 2, "command: required"),
    ("nul-escape", lambda t: ["enqueue", '{"command": "a\\u0000b"}'], None, 2, "NUL"),
    ("lone-surrogate", lambda t: ["enqueue", '{"command": "a\\ud800"}'], None, 2, "surrogate"),
    ("huge-float", lambda t: ["enqueue", '{"command": "true", "priority": 1e400}'], None, 2,
     "priority: must be an integer"),
    ("huge-int", lambda t: ["enqueue", '{"command": "true", "priority": 100000000000000000000}'], None, 2,
     "priority: 100000000000000000000 is outside"),
    ("5000-digit-int", lambda t: ["enqueue", '{"command": "true", "x": ' + "9" * 5000 + "}"], None, 2,
     "not valid JSON"),
    ("nan", lambda t: ["enqueue", '{"command": "true", "timeout": NaN}'], None, 2, "NaN"),
    ("infinity", lambda t: ["enqueue", '{"command": "true", "delay": Infinity}'], None, 2, "Infinity"),
    ("deep-nesting", lambda t: ["enqueue", '{"command": "true", "x": ' + "[" * 100000 + "]" * 100000 + "}"],
     None, 2, "nested too deeply"),
    ("bool-retries", lambda t: ["enqueue", '{"command": "true", "max_retries": true}'], None, 2,
     "max_retries: must be an integer, not a boolean"),
    ("negative-timeout", lambda t: ["enqueue", '{"command": "true", "timeout": -1}'], None, 2, "out of range"),
    ("bad-run-at", lambda t: ["enqueue", '{"command": "true", "run_at": "2024-13-45"}'], None, 2, "run_at"),
    ("delay-and-run-at", lambda t: ["enqueue", '{"command": "true", "delay": 1, "run_at": 0}'], None, 2,
     "not both"),
    ("env-not-string", lambda t: ["enqueue", '{"command": "true", "env": {"A": 1}}'], None, 2, "env"),
    ("env-key-equals", lambda t: ["enqueue", '{"command": "true", "env": {"A=B": "x"}}'], None, 2, "env"),
    ("cwd-number", lambda t: ["enqueue", '{"command": "true", "cwd": 5}'], None, 2, "cwd"),
    ("id-newline", lambda t: ["enqueue", '{"command": "true", "id": "a\\nb"}'], None, 2, "invalid job id"),
    ("id-traversal", lambda t: ["enqueue", '{"command": "true", "id": "../../etc/passwd"}'], None, 2,
     "invalid job id"),
    ("id-dot", lambda t: ["enqueue", "--id", ".hidden", "--cmd", "true"], None, 2, "invalid job id"),
    ("id-empty", lambda t: ["enqueue", '{"command": "true", "id": ""}'], None, 2, "invalid job id"),
    ("id-too-long", lambda t: ["enqueue", "--id", "a" * 129, "--cmd", "true"], None, 2, "invalid job id"),
    ("id-shell", lambda t: ["enqueue", "--id", "x;rm -rf ~", "--cmd", "true"], None, 2, "invalid job id"),
    ("id-slash", lambda t: ["enqueue", "--id", "a/b", "--cmd", "true"], None, 2, "invalid job id"),
    ("job-dash", lambda t: ["enqueue", "-"], '{"command": "true"}', 2, "--file - takes one JSON job"),
    ("id-taken", lambda t: ["enqueue", "--id", "existing", "--cmd", "true"], None, 1,
     "already exists (with --if-absent: print its id, change nothing, exit 0)"),
    ("priority-text", lambda t: ["enqueue", "--priority", "abc", "--cmd", "true"], None, 2, "not a valid integer"),
    ("retries-negative", lambda t: ["enqueue", "--max-retries", "-1", "--cmd", "true"], None, 2, "-1"),
    ("timeout-zero", lambda t: ["enqueue", "--timeout", "0", "--cmd", "true"], None, 2, "timeout"),
    ("delay-negative", lambda t: ["enqueue", "--delay", "-5", "--cmd", "true"], None, 2, "delay"),
    ("run-at-garbage", lambda t: ["enqueue", "--run-at", "garbage", "--cmd", "true"], None, 2, "run_at"),
    ("run-at-far-future", lambda t: ["enqueue", "--run-at", "99999999999999", "--cmd", "true"], None, 2,
     "out of range"),
    ("1mb-command", lambda t: ["enqueue", "--cmd", "echo " + "a" * 1_000_000], None, 2,
     "command: longer than the limit"),
    ("1mb-command-file", lambda t: ["enqueue", "--file", _file(t, "c.json", json.dumps(
        {"command": "echo " + "a" * 1_000_000}).encode())], None, 2, "command: longer than the limit"),
    ("10mb-file", lambda t: ["enqueue", "--file", _file(t, "big.json", b'{"command": "true", "x": "'
                                                        + b"a" * BIG + b'"}')], None, 2, "the limit is"),
    ("utf16-file", lambda t: ["enqueue", "--file", _file(t, "u16.json", '{"command": "true"}'.encode("utf-16"))],
     None, 2, "not UTF-8"),
    ("latin1-file", lambda t: ["enqueue", "--file", _file(t, "l1.json", '{"command": "echo café"}'.encode("latin-1"))],
     None, 2, "not UTF-8"),
    ("bom-file", lambda t: ["enqueue", "--file", _file(t, "bom.json", b'\xef\xbb\xbf{"command": "true"}')],
     None, 2, "BOM"),
    ("binary-file", lambda t: ["enqueue", "--file", _file(t, "bin.json", bytes(range(256)) * 64)], None, 2,
     "not UTF-8"),
    ("raw-nul-file", lambda t: ["enqueue", "--file", _file(t, "nul.json", b'{"command": "tr\x00ue"}')], None, 2,
     "not valid JSON"),
    ("missing-file", lambda t: ["enqueue", "--file", str(t / "nope.json")], None, 2, "cannot read file"),
    ("directory-file", lambda t: ["enqueue", "--file", str(t)], None, 2, "cannot read file"),
    ("batch-bad-line", lambda t: ["enqueue", "--batch", "-"], '{"command": "a"}\n{"command": "b"}\n{oops\n',
     2, "line 3"),
    ("batch-array-line", lambda t: ["enqueue", "--batch", "-"], "[]\n", 2, "line 1"),
    ("batch-dup-ids", lambda t: ["enqueue", "--batch", "-"],
     '{"id": "d", "command": "a"}\n\n{"id": "d", "command": "b"}\n', 2, "line 3"),
    ("batch-existing-id", lambda t: ["enqueue", "--batch", "-"],
     '{"command": "a"}\n{"id": "existing", "command": "b"}\n', 1, "(with --if-absent: the lines whose id exists are skipped)"),
    ("batch-utf16", lambda t: ["enqueue", "--batch", _file(t, "b16.jsonl", '{"command": "a"}\n'.encode("utf-16"))],
     None, 2, "not UTF-8"),
    ("batch-100k-last-bad", lambda t: ["enqueue", "--batch", _file(
        t, "100k.jsonl", b'{"command": "true"}\n' * 99_999 + b'{"command": 1}\n')], None, 2, "line 100000"),
    ("batch-with-id-flag", lambda t: ["enqueue", "--batch", "-", "--id", "x"], '{"command": "a"}\n', 2, "--id"),
    ("no-job", lambda t: ["enqueue"], None, 2, "exactly one of"),
    ("two-forms", lambda t: ["enqueue", "true", "--cmd", "true"], None, 2, "exactly one of"),
    ("show-unknown", lambda t: ["show", "nosuchjob"], None, 1, "no job"),
    ("show-traversal", lambda t: ["show", "../../etc/passwd"], None, 2, "invalid job id"),
    ("logs-newline", lambda t: ["logs", "a\nb"], None, 2, "invalid job id"),
    ("wait-bad-id", lambda t: ["wait", "a b", "--timeout", "1"], None, 2, "invalid job id"),
    ("retry-unknown", lambda t: ["dlq", "retry", "nosuchjob"], None, 1, "no job"),
    ("config-unknown-key", lambda t: ["config", "set", "nope", "1"], None, 2, "unknown config key"),
    ("config-bad-value", lambda t: ["config", "set", "max_retries", "abc"], None, 2, "not a valid value"),
    ("config-huge-value", lambda t: ["config", "set", "max_retries", "9" * 30], None, 2, "out of range"),
    ("config-nan", lambda t: ["config", "set", "poll_interval", "nan"], None, 2, "poll_interval"),
    ("list-bad-state", lambda t: ["list", "--state", "bogus"], None, 2, "bogus"),
    ("list-negative-limit", lambda t: ["list", "--limit", "-1"], None, 2, "-1"),
]


@pytest.mark.parametrize("case,argv,stdin,code,message", CLI_CASES, ids=[c[0] for c in CLI_CASES])
@pytest.mark.slow
def test_hostile_cli_input_is_refused_and_writes_nothing(spool, cli, tmp_path, case, argv, stdin, code, message):
    spool.enqueue({"id": "existing", "command": "true"})
    before = snapshot(spool.root, dir_times=code == 2)
    result = cli(*argv(tmp_path), input=stdin)  # in-process: any traceback fails the test
    assert result.exit_code == code, result.output
    assert message in result.output, result.output
    assert len(result.output) < 2000  # a message, not an echo of the input
    assert snapshot(spool.root, dir_times=code == 2) == before


@pytest.mark.slow
def test_oversized_but_legal_input_works(spool, cli, tmp_path):
    """Up to the limits: a 100k-line batch, a 100 KB command, a 128-character id, odd text."""
    batch = tmp_path / "100k.jsonl"
    batch.write_bytes(b'{"command": "true"}\n' * 100_000)
    result = cli("enqueue", "--batch", str(batch))
    assert result.exit_code == 0
    assert len(result.output.split()) == 100_000
    big = cli("enqueue", "--cmd", "echo " + "a" * 100_000)
    assert big.exit_code == 0
    assert len(spool.find(big.output.strip()).job.command) == 100_005
    long_id = "a" * 128
    assert cli("enqueue", "--id", long_id, "--cmd", "true").output.strip() == long_id
    odd = cli("enqueue", '{"command": "printf \'%s\\\\n\' \\"héllo ✓ $(id -u)\\"\\nexit 0", "x": [1, {"y": null}]}')
    assert odd.exit_code == 0, odd.output
    assert spool.find(odd.output.strip()).job.extra == {"x": [1, {"y": None}]}
    assert spool.counts().pending == 100_003

