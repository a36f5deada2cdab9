"""Hostile input and permissions: malformed or malicious input through the CLI, --batch and
dropped files gets its documented exit code or quarantine reason; nothing else is disturbed;
the spool is private by default and opened to a group only on request."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest

from conftest import wait_for
from spoolq import Spool, fsck
from spoolq.format import layout as L
from spoolq.moves.transitions import Adopted

BIG = 10 * 1024 * 1024


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
    ("id-taken", lambda t: ["enqueue", "--id", "existing", "--cmd", "true"], None, 1, "already exists"),
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
     '{"command": "a"}\n{"id": "existing", "command": "b"}\n', 1, "already exists"),
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
def test_hostile_cli_input_is_refused_and_writes_nothing(spool, cli, tmp_path, case, argv, stdin, code, message):
    spool.enqueue({"id": "existing", "command": "true"})
    before = snapshot(spool.root, dir_times=code == 2)
    result = cli(*argv(tmp_path), input=stdin)  # in-process: any traceback fails the test
    assert result.exit_code == code, result.output
    assert message in result.output, result.output
    assert len(result.output) < 2000  # a message, not an echo of the input
    assert snapshot(spool.root, dir_times=code == 2) == before


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


# ---- dropped files ---------------------------------------------------------------------------


def _job(tag: str, **extra) -> bytes:
    return json.dumps({"command": f"echo {tag} >> runs.txt", **extra}).encode()


# Dropped files whose bytes can never be a job: (dropped name, bytes, a piece of the recorded reason)
HOSTILE_BYTES = [
    ("garbage.json", bytes(range(256)) * 4, "not UTF-8"),
    ("text.json", b"hello world", "not valid JSON"),
    ("array.json", b"[1, 2, 3]", "must be a JSON object"),
    ("string.json", b'"command"', "must be a JSON object"),
    ("empty.json", b"", "not valid JSON"),
    ("deep.json", b'{"command": "true", "x": ' + b"[" * 100000 + b"]" * 100000 + b"}", "nested too deeply"),
    ("hugeint.json", b'{"command": "true", "priority": ' + b"9" * 5000 + b"}", "not valid JSON"),
    ("hugefloat.json", b'{"command": "true", "priority": 1e999}', "priority: must be an integer"),
    ("rawnul.json", b'{"command": "tr\x00ue"}', "not valid JSON"),
    ("nul.json", b'{"command": "tr\\u0000ue"}', "NUL"),
    ("utf16.json", '{"command": "true"}'.encode("utf-16"), "not UTF-8"),
    ("latin1.json", '{"command": "echo café"}'.encode("latin-1"), "not UTF-8"),
    ("bom.json", b'\xef\xbb\xbf{"command": "true"}', "BOM"),
    ("nocmd.json", b'{"id": "nocmd"}', "command: required"),
    ("badid.json", _job("badid", id="../../etc/passwd"), "invalid job id"),
    ("dupid.json", _job("dupid", id="existing"), "duplicate"),
    ("nan.json", b'{"command": "true", "timeout": NaN}', "NaN"),
    ("envtype.json", _job("envtype", env={"A": 1}), "env"),
    ("10mb.json", b'{"command": "true", "x": "' + b"a" * BIG + b'"}', "the limit is"),
    ("1mbcmd.json", json.dumps({"command": "echo " + "a" * 1_000_000}).encode(), "command: longer than"),
]


def _outside(tmp_path, name: str, data: bytes) -> str:
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    path = outside / name
    path.write_bytes(data)
    return str(path)


def _hard_link(tmp_path, pending: str, name: str, data: bytes) -> None:
    os.link(_outside(tmp_path, "partner-" + name, data), os.path.join(pending, name))


def _owned_by_stranger(pending: str, name: str, data: bytes) -> None:
    path = os.path.join(pending, name)
    with open(path, "wb") as f:
        f.write(data)
    os.chown(path, 12345, 12345)


# Entries that are not regular, singly linked, trusted files: never read as jobs.
# (name, how to make it in pending/ given tmp_path and pending, a piece of the reason, needs root)
HOSTILE_ENTRIES = [
    ("fifo.json", lambda t, p: os.mkfifo(os.path.join(p, "fifo.json")), "is not a regular file", False),
    ("link.json", lambda t, p: os.symlink(_outside(t, "target.json", _job("symlink-target")),
                                          os.path.join(p, "link.json")), "is a symbolic link", False),
    ("dangling.json", lambda t, p: os.symlink(t / "nowhere", os.path.join(p, "dangling.json")),
     "is a symbolic link", False),
    ("hard.json", lambda t, p: _hard_link(t, p, "hard.json", _job("hardlink")), "has 2 hard links", False),
    (L.pending_name("canonlink", 0, 1, None), lambda t, p: os.symlink(
        _outside(t, "target2.json", _job("canonlink", id="canonlink")),
        os.path.join(p, L.pending_name("canonlink", 0, 1, None))), "is a symbolic link", False),
    (L.pending_name("canonhard", 0, 2, None), lambda t, p: _hard_link(
        t, p, L.pending_name("canonhard", 0, 2, None), _job("canonhard", id="canonhard")), "hard links", False),
    (L.pending_name("canonwrong", 0, 3, None), lambda t, p: os.rename(
        _outside(t, "w.json", _job("canonwrong", id="other")), os.path.join(p, L.pending_name("canonwrong", 0, 3, None))),
     "does not match its name", False),
    ("theirs.json", lambda t, p: _owned_by_stranger(p, "theirs.json", _job("theirs")),
     "owned by untrusted uid 12345", True),
    (L.pending_name("canontheirs", 0, 4, None), lambda t, p: _owned_by_stranger(
        p, L.pending_name("canontheirs", 0, 4, None), _job("canontheirs", id="canontheirs")),
     "owned by untrusted uid 12345", True),
]


def _files_outside(tmp_path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / "outside").glob("*")}


def _drop_bytes(pending: str, name: str, data: bytes) -> None:
    """The drop-in protocol: stage under a dot-name, then rename."""
    with open(os.path.join(pending, "." + name), "wb") as f:
        f.write(data)
    os.rename(os.path.join(pending, "." + name), os.path.join(pending, name))


def _take(spool: Spool, name: str, owner: str) -> None:
    """What a worker does first with a name in pending/: claim a canonical one, adopt a drop-in.
    `now` is past any drop_grace: a file that does not parse is judged at once."""
    if L.parse_pending(name):
        assert spool.transitions.claim(name, owner) is None
    else:
        result = spool.transitions.adopt(name, owner, now=time.time() + 3600)
        assert result.outcome is Adopted.QUARANTINED, result


def _quarantine_record(spool: Spool, source: str) -> dict:
    for name in os.listdir(spool.layout.dir("quarantine")):
        with open(os.path.join(spool.layout.dir("quarantine"), name)) as f:
            record = json.load(f)
        if record["source"] == source:
            return record
    raise AssertionError(f"no quarantine record for {source!r}")


@pytest.mark.parametrize("name,data,reason", HOSTILE_BYTES, ids=[c[0] for c in HOSTILE_BYTES])
def test_a_hostile_dropped_file_is_quarantined_with_its_bytes_kept(spool, name, data, reason):
    spool.enqueue({"id": "existing", "command": "true"})
    owner = spool.owners.register("worker")
    _drop_bytes(spool.layout.pending, name, data)
    _take(spool, name, owner)
    record = _quarantine_record(spool, name)
    assert reason in record["reason"], record
    with open(spool.quarantine.file(record["id"]), "rb") as f:
        assert f.read() == data  # bytes kept exactly
    assert spool.find(record["id"]).to_dict()["last_error"] == record["reason"]  # dlq list says why
    assert os.listdir(spool.layout.pending) == [L.pending_name_of(spool.find("existing").job)]


@pytest.mark.parametrize("name,make,reason,needs_root", HOSTILE_ENTRIES, ids=[c[0] for c in HOSTILE_ENTRIES])
def test_a_hostile_entry_is_never_read_as_a_job(spool, tmp_path, name, make, reason, needs_root):
    if needs_root and os.geteuid() != 0:
        pytest.skip("needs root to give a file to another uid")
    owner = spool.owners.register("worker")
    make(tmp_path, spool.layout.pending)
    outside = _files_outside(tmp_path)
    _take(spool, name, owner)
    record = _quarantine_record(spool, name)
    assert reason in record["reason"], record
    assert _files_outside(tmp_path) == outside  # symlink targets and hard-link partners untouched
    if "symbolic link" in reason:
        assert os.path.islink(spool.quarantine.file(record["id"]))


def test_the_hostile_corpus_dropped_at_once_never_runs_and_the_workers_go_on(spool, workers, tmp_path):
    """End to end: every hostile file at once, beside odd but valid ones and entries to leave alone."""
    spool.set_config("drop_grace", 0.3)
    spool.enqueue({"id": "existing", "command": "echo existing >> runs.txt", "cwd": str(tmp_path)})
    pending = spool.layout.pending
    for name, data, _ in HOSTILE_BYTES:
        _drop_bytes(pending, name, data)
    for name, make, _, needs_root in HOSTILE_ENTRIES:
        if not needs_root or os.geteuid() == 0:
            make(tmp_path, pending)
    # Left alone: a directory named *.json, other names, staging names.
    os.mkdir(os.path.join(pending, "dir.json"))
    _drop_bytes(pending, "notes.txt", b"notes")
    (tmp_path / "s.json").write_bytes(_job("staging"))
    os.rename(tmp_path / "s.json", os.path.join(pending, ".staging.json"))
    # Odd but valid: a name with a newline (the job gets a generated id) and non-ASCII content.
    _drop_bytes(pending, "new\nline.json", json.dumps({"command": "echo newline-name >> runs.txt",
                                                         "cwd": str(tmp_path)}).encode())
    _drop_bytes(pending, "ünïcode.json", json.dumps({"command": "echo unicode >> runs.txt", "cwd": str(tmp_path),
                                                     "note": "héllo ✓ \u202e"}).encode())

    w = workers(2)
    left_alone = {"dir.json", "notes.txt", ".staging.json"}
    wait_for(lambda: set(os.listdir(pending)) == left_alone and spool.counts().processing == 0, 20,
             "every dropped file to be dealt with")
    after = spool.enqueue({"command": "echo after >> runs.txt", "cwd": str(tmp_path)}).id
    wait_for(lambda: spool.find(after).state == "done", 10, "a job after the hostile ones")

    expected = len(HOSTILE_BYTES) + sum(1 for *_, root in HOSTILE_ENTRIES if not root or os.geteuid() == 0)
    assert len(os.listdir(spool.layout.dir("quarantine"))) == expected
    assert sorted((tmp_path / "runs.txt").read_text().split()) == ["after", "existing", "newline-name", "unicode"]
    assert os.path.isdir(os.path.join(pending, "dir.json"))
    assert len(w.live()) == 2  # the workers are still running; their log shows no crash
    log = w.stop()
    assert "Traceback" not in log and "crashed" not in log, log
    assert sorted((p.kind, os.path.basename(p.path)) for p in fsck.check(spool)) == \
        [("never-picked-up", "dir.json"), ("never-picked-up", "notes.txt")]  # said, and left alone


# ---- permissions -----------------------------------------------------------------------------


def tree_modes(root: str) -> dict[str, int]:
    out = {os.path.relpath(root, root): stat.S_IMODE(os.lstat(root).st_mode)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            out[os.path.relpath(path, root) + ("/" if stat.S_ISDIR(st.st_mode) else "")] = stat.S_IMODE(st.st_mode)
    return out


def exercise(spool_dir: str, run, workers, tag: str) -> str:
    """Enough activity to create every kind of file: jobs, logs, config, locks, registrations."""
    assert run("config", "set", "max_retries", "0").returncode == 0
    ok = run("enqueue", f"echo {tag}").stdout.strip()
    bad = run("enqueue", "exit 3").stdout.strip()
    w = workers(1)
    spool = Spool(spool_dir)
    wait_for(lambda: spool.find(ok).state == "done" and spool.find(bad).state == "dead", 10, "the jobs")
    assert run("enqueue", "--cmd", "true", "--delay", "100").returncode == 0
    w.stop()
    return ok


def test_spool_is_private_by_default(spool_dir, run, workers):
    old = os.umask(0)  # even a permissive umask must not open it up
    try:
        exercise(spool_dir, run, workers, "private")
    finally:
        os.umask(old)
    modes = tree_modes(spool_dir)
    assert any(k.startswith("output/") for k in modes) and any(k.startswith("done/") for k in modes)
    too_open = {k: oct(m) for k, m in modes.items() if m & 0o077}
    assert too_open == {}
    assert modes["config.json"] == 0o600


def test_group_access_opens_the_spool_to_its_group(spool_dir, run, workers):
    exercise(spool_dir, run, workers, "before")
    r = run("config", "set", "group_access", "true")
    assert r.returncode == 0, r.stderr
    ok = exercise(spool_dir, run, workers, "after")
    modes = tree_modes(spool_dir)
    for path, mode in modes.items():  # the group reads all, and creates files in the inboxes alone
        if path in ("pending/", "maildir/tmp/", "maildir/new/"):
            assert mode == 0o3770, oct(mode)
        elif path.endswith("/") or path == ".":
            assert mode == 0o2750, (path, oct(mode))
        elif path.startswith("locks/"):
            assert mode == 0o600, (path, oct(mode))  # whoever can open a lock file can hold the lock
        else:
            assert mode == 0o640, (path, oct(mode))
    assert modes[f"output/{ok}.log"] == 0o640
