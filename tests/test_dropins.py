"""Drop-ins and quarantine: a dropped file that can never be a job is quarantined with its bytes
kept, an entry that is not a regular trusted file is never read, a lookalike of a finished job
never replaces or reruns it, and a quarantine never replaces an earlier one."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from conftest import SPOOLQ, wait_for
from spoolq import fsck, Spool
from spoolq.format import layout as L
from spoolq.moves.transitions import Adopted
from spoolq.system import fsio
from spools import BIG


# ---- hardening: 3. every file spoolq creates gets the spool's mode; strays in pending/ stay inert 


@pytest.mark.review("hardening 3")
def test_a_marker_or_stray_moved_into_pending_never_runs(spool, workers, tmp_path):
    spool.set_config("drop_grace", 0.2)
    proof = tmp_path / "ran"
    spool.enqueue({"id": "victim", "command": f"touch {proof}", "delay": 3600})
    os.rename(spool.layout.id_marker("victim"), os.path.join(spool.layout.pending, "victim.json"))
    with open(os.path.join(spool.layout.pending, "stray"), "w") as f:  # not *.json: left alone
        f.write(json.dumps({"command": f"touch {proof}"}))
    w = workers(1)
    wait_for(lambda: "victim.json" not in os.listdir(spool.layout.pending), 10, "the moved marker to be dealt with")
    w.stop()
    assert not proof.exists()
    assert "stray" in os.listdir(spool.layout.pending)


# ---- hardening: 13. lookalike digits -------------------------------------------------------------


@pytest.mark.review("hardening 13")
def test_a_name_with_lookalike_digits_is_a_drop_in_and_never_replaces_a_finished_job(spool, workers, tmp_path):
    done = spool.enqueue({"id": "victim", "command": "echo original"}).id
    workers(1)
    wait_for(lambda: spool.find(done).state == "done", 10, "the original")
    before = open(os.path.join(spool.layout.done, "victim.json"), "rb").read()
    arabic = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
    name = L.pending_name("victim", 0, 1, None).translate(arabic)
    assert L.parse_pending(name) is None
    (tmp_path / "x").write_text(json.dumps({"command": "echo impostor"}))
    os.rename(tmp_path / "x", os.path.join(spool.layout.pending, name))
    wait_for(lambda: name not in os.listdir(spool.layout.pending), 10, "the dropped file to be taken")
    assert open(os.path.join(spool.layout.done, "victim.json"), "rb").read() == before


@pytest.mark.review("hardening 13")
def test_a_copy_of_a_finished_job_under_a_canonical_name_is_quarantined_not_run(spool, workers, tmp_path):
    job = spool.enqueue({"id": "once", "command": f"echo x >> {tmp_path / 'runs'}"})
    name = L.pending_name_of(job)
    copy = open(os.path.join(spool.layout.pending, name), "rb").read()
    workers(1)
    wait_for(lambda: spool.find("once").state == "done", 10, "the job")
    (tmp_path / "c").write_bytes(copy)
    os.rename(tmp_path / "c", os.path.join(spool.layout.pending, name))
    wait_for(lambda: name not in os.listdir(spool.layout.pending), 10, "the copy to be taken")
    assert (tmp_path / "runs").read_text() == "x\n"
    assert spool.find("once").state == "done"


# ---- hardening: 19. read-only commands never create a spool; quarantine never replaces -----------


@pytest.mark.review("hardening 19")
def test_a_quarantine_never_replaces_an_earlier_one(spool, monkeypatch):
    qids = iter(["+same.000000000000", "+same.000000000000", "+other.000000000001"])
    monkeypatch.setattr(L, "quarantine_id", lambda _source: next(qids))
    for name in ("a.json", "b.json"):
        with open(os.path.join(spool.layout.pending, name), "w") as f:
            f.write(name)
        spool.quarantine.put(os.path.join(spool.layout.pending, name), name, "test", time.time())
    assert open(spool.quarantine.file("+same.000000000000")).read() == "a.json"
    assert open(spool.quarantine.file("+other.000000000001")).read() == "b.json"


@pytest.mark.review("hardening 19")
def test_move_no_replace_refuses_to_replace(tmp_path):
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    with pytest.raises(FileExistsError):
        fsio.move_no_replace(str(tmp_path / "a"), str(tmp_path / "b"))
    assert (tmp_path / "b").read_text() == "b" and (tmp_path / "a").exists()


# ---- hostile: dropped files ----------------------------------------------------------------------


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



# ---- a return of a drop-in cut on another host ------------------------------------------------------


def test_a_return_cut_on_another_host_waits_for_the_next_rescuer(spool, tmp_path):
    """Recovery gives a drop-in its adopter died holding back to pending/. Where renameat2 is
    refused (FUSE, NFS, GlusterFS) that is a link and then an unlink, and a rescuer killed between
    them leaves the file under two names: processing/<rescuer>~<owner>/~x.json and pending/x.json.
    The next rescuer removes the first (test_crashpoints_fuse.py). On another host, that next
    rescuer comes only once the dead one's lease has run out; after drop_grace, long before, this
    host's workers quarantined the file as "2 hard links", and the job never ran. It now waits
    for that rescuer, and runs once."""
    spool.set_config("drop_grace", 0.2)
    spool.set_config("lease_timeout", 2)
    ran = tmp_path / "ran"
    rescuer = "other-1-abc"  # another host's worker, alive as far as its lease says, for now
    with open(spool.layout.worker_file(rescuer), "w") as f:
        json.dump({"owner": rescuer, "host": "other", "pid": 1, "role": "worker", "lease": 2}, f)
    fenced = spool.layout.owned(f"{rescuer}{L.RESCUE_SEP}other-2-def")
    os.mkdir(fenced, 0o700)
    held = os.path.join(fenced, f"{L.ADOPT_PREFIX}x.json")
    with open(held, "w") as f:
        json.dump({"command": f"echo once >> {ran}"}, f)
    os.link(held, os.path.join(spool.layout.pending, "x.json"))  # the return's link, its unlink never made
    linked = os.lstat(held).st_ctime
    wait_for(lambda: time.time() > linked + 0.4, 5, "drop_grace to pass since the link")

    from spoolq.store import dropins
    found = dropins.inspect(spool.store, "x.json")
    assert found.verdict is dropins.Verdict.WAIT, found
    assert "rescued worker's directory" in str(found.reason)

    worker = subprocess.run([*SPOOLQ, "--spool", spool.root, "worker", "start", "--burst", "-q"],
                            capture_output=True, text=True, timeout=60)
    assert worker.returncode == 0, worker.stderr
    assert ran.read_text() == "once\n"
    assert os.listdir(spool.layout.dir("quarantine")) == []
    assert os.listdir(spool.layout.pending) == []
