"""Review of the day's changes (the `--` form of enqueue, wait's exit status, SPOOLQ_DIR in jobs,
root's read-only dashboard of a service user's spool, recovery's drop-in return, ...): each test
pins a hole found in them, as the one who would hit it: another local user, a service user whose
spool root serves, a careless operator, a script under `set -e`."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from typing import Iterator

import pytest

from spoolq import Spool
from spools import ROOT_ONLY

SERVICE_USER = 65534  # nobody: the uid a packaged service runs as


def give_to(root: str, uid: int) -> None:
    """Every entry of a spool made by the test, handed to `uid`, as `install -o` and `sudo -u` make it."""
    for path in [root, *(os.path.join(d, n) for d, ds, fs in os.walk(root) for n in ds + fs)]:
        os.lchown(path, uid, uid)


def read_as_root(root: str) -> Spool:
    """The spool as `spoolq web --read-only` run by root opens it (Context.reading)."""
    spool = Spool(root, create=False)
    spool.store.open_for_reading()
    assert spool.store.reading
    return spool


# ---- root's read-only dashboard of a service user's spool ----------------------------------------


def swapped_under_roots_dashboard(tmp_path, root: str, directory: str, name: str, secret: str):
    """A test client of root's read-only dashboard of `root`, a service user's spool; once it
    has started, that user swaps `directory` for a symlink to a root-only directory that holds
    `name` (`secret`, readable by root alone)."""
    pytest.importorskip("flask", reason="the dashboard needs the web extra")
    from spoolq.web import create_app

    give_to(root, SERVICE_USER)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / name).write_text(secret)
    os.chmod(private / name, 0o600)
    app = create_app(read_as_root(root), read_only=True)
    app.testing = True
    client = app.test_client()
    # The service user, after the dashboard started:
    os.rename(os.path.join(root, directory), os.path.join(root, directory + ".old"))
    os.symlink(private, os.path.join(root, directory))
    os.lchown(os.path.join(root, directory), SERVICE_USER, SERVICE_USER)
    return client


# 1. The dashboard checks the spool's directories once, when it starts; it then serves for days. The
# service user owns output/ and the spool's root: once root serves it, that user can swap output/
# for a symlink to a directory only root reads, and the log of its job `auth` was then root's
# /var/log/auth.log (here: a file of a root-only directory), served to every local user who reaches
# the loopback. A log is shown only when the spool's user made it (it is owned by that uid).
@ROOT_ONLY
def test_root_dashboard_does_not_serve_a_log_through_an_output_dir_swapped_for_a_symlink(tmp_path):
    root = str(tmp_path / "jobs")
    Spool(root).enqueue({"id": "auth", "command": "true"})
    os.makedirs(os.path.join(root, "output"), exist_ok=True)
    client = swapped_under_roots_dashboard(tmp_path, root, "output", "auth.log", "root's secret line\n")
    assert "secret" not in client.get("/job/auth/log").get_data(as_text=True)
    assert "secret" not in client.get("/api/job/auth").get_data(as_text=True)


# 2. The same swap of dead/ (or done/, any directory a job is found in): a file there that is no job
# is shown as a quarantined file is, its first 64 KiB, and through the symlink that was any
# root-only JSON file named as a job (/root/.docker/config.json as job `config`).
@pytest.mark.review("day s6 2")
@ROOT_ONLY
def test_root_dashboard_does_not_show_the_bytes_of_a_file_through_a_state_dir_swapped_for_a_symlink(tmp_path):
    root = str(tmp_path / "jobs")
    Spool(root).enqueue({"command": "true"})
    client = swapped_under_roots_dashboard(tmp_path, root, "done", "config.json",
                                           '{"auths": {"registry": {"auth": "root-secret-token"}}}\n')
    for page in ("/api/job/config", "/job/config"):
        assert "root-secret-token" not in client.get(page).get_data(as_text=True), page


# ---- wait without ids under `set -e` ---------------------------------------------------------------


# 3. `wait` without ids counted the spool, then listed dead/ to know which jobs were dead before it
#    began: a job that died between the two (a listing of a large dead/ takes a while: keep_dead
#    keeps them for good by default) was taken for one dead before, and wait exited 0 for it.
@pytest.mark.review("day s6 3")
def test_wait_without_ids_fails_for_a_job_that_dies_just_after_its_first_count(spool, cli, monkeypatch):
    job_id = spool.enqueue({"command": "false"}).id
    counts = Spool.counts
    looks: list[int] = []

    def counts_then_the_job_dies(self, *args, **kwargs):
        n = counts(self, *args, **kwargs)
        if not looks:  # the job was pending when wait first looked; a worker finishes it dead now
            spool.cancel([job_id])
        looks.append(1)
        return n

    monkeypatch.setattr(Spool, "counts", counts_then_the_job_dies)
    r = cli("wait", "--timeout", "10")
    assert r.exit_code == 1 and job_id in r.output, r.output


# 4. `wait ID...` named every dead one of the ids it was given ("dead: a b c ..."), which a script
#    reads to retry them; since the ids-less wait learnt to name dead jobs, it names ten and a
#    count ("… (12 jobs)"): the script retried ten. A change docs/cli.md does not list: the ids a
#    caller gave are named, every one; only the ids-less wait, naming jobs nobody listed, cuts.
@pytest.mark.review("day s6 4")
def test_wait_with_ids_names_every_dead_one_of_them(spool, cli):
    ids = [spool.enqueue({"command": "false"}).id for _ in range(12)]
    assert len(spool.cancel(ids)) == 12
    r = cli("wait", *ids, "--timeout", "10")
    assert r.exit_code == 1, r.output
    assert r.output.strip().splitlines()[-1] == f"Error: dead: {' '.join(ids)}", r.output


# ---- the dashboard's token ---------------------------------------------------------------------


# 5. A Bearer header's bytes are now read as UTF-8 (curl's): a token beyond ASCII sent in Latin-1,
#    as Python's urllib, http.client and requests encode a header, matched before and was refused
#    after ("that token is not this dashboard's"). A header that is not UTF-8 is taken as sent.
@pytest.mark.review("day s6 5")
def test_a_bearer_token_beyond_ascii_is_taken_in_latin_1_as_python_sends_it_and_in_utf_8(spool):
    pytest.importorskip("flask", reason="the dashboard needs the web extra")
    from spoolq.web import create_app

    token = "pässwörd-ü"
    app = create_app(spool, token=token)
    app.testing = True
    client = app.test_client()
    # A WSGI server hands a header over one character a byte: its bytes decoded as Latin-1.
    for sent in (token.encode("latin-1"), token.encode("utf-8")):
        header = "Bearer " + sent.decode("latin-1")
        assert client.get("/api/overview", headers={"Authorization": header}).status_code == 200, sent
    assert client.get("/api/overview", headers={"Authorization": "Bearer pässwörd-u"}).status_code == 401


# ---- enqueue's warning of a cwd its uid cannot enter ---------------------------------------------


@pytest.fixture
def open_tmp() -> Iterator[str]:
    """A scratch directory another uid can reach (pytest's tmp_path is root's alone)."""
    path = tempfile.mkdtemp(prefix="spoolq-review-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def _enqueue_as(uid: int, cwd: str, args: list[str]) -> int:
    """The exit status of `spoolq ARGS` run as `uid` in `cwd` (entered as root, as sudo -u leaves
    one in /root) with stderr closed (`2>&-`), in a child of this process."""
    pid = os.fork()
    if pid == 0:
        try:
            os.chdir(cwd)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            sys.stderr = None  # as Python starts with fd 2 closed
            sys.argv = ["spoolq", *args]
            from spoolq.cli import run

            run()
        except SystemExit as e:
            os._exit(e.code if isinstance(e.code, int) else 1)
        except BaseException:
            os._exit(99)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


# 6. `sudo -u spoolq spoolq enqueue ... 2>&-` typed in /root: the job was enqueued and its id
#    printed, then the new warning that its cwd cannot be entered was written to a stderr that is
#    not there, and the enqueue ended in a traceback, exit 1: a script retries an acknowledged
#    job, which then runs twice. A warning that cannot be said is left unsaid.
@pytest.mark.review("day s6 6")
@ROOT_ONLY
@pytest.mark.parametrize("how", ["plain", "click"])
def test_an_enqueue_with_stderr_closed_in_a_cwd_it_cannot_enter_exits_0(open_tmp, how):
    root = os.path.join(open_tmp, "jobs")
    Spool(root)
    give_to(root, SERVICE_USER)
    closed = os.path.join(open_tmp, "root-home")
    os.mkdir(closed, 0o700)
    words = ["true"] if how == "plain" else ["--delay", "60", "true"]  # --delay: click's path
    assert _enqueue_as(SERVICE_USER, closed, ["--spool", root, "enqueue", *words]) == 0
    [view] = read_as_root(root).list_jobs()
    assert view.job.cwd == closed


# ---- recovery's word for a job waiting out its backoff ----------------------------------------------


# 7. Recovery says a job back in pending/ but due later is `scheduled`, as show says (Moved.seen_as),
#    for the attempt a dead worker left without a result; a failed attempt whose move back its
#    worker began and did not complete (.next. and .taken., completed by the rescuer) still said
#    "now pending" in fsck --repair and the worker's log, where show says scheduled.
@pytest.mark.review("day s6 7")
def test_recovery_says_scheduled_of_a_retry_it_completes_the_move_of(spool, spool_dir):
    from spoolq.format import layout
    from spools import dead_owner

    job = spool.enqueue({"id": "retry-later", "command": "false", "max_retries": 3})
    owner = dead_owner(spool_dir)
    claimed = spool.transitions.claim(layout.pending_name_of(job), owner)
    failed = claimed.job
    failed.run_at = time.time() + 3600  # its backoff
    spool.transitions.takes.take_with(claimed.path, failed, "pending")  # and the worker is killed
    [recovered] = spool.recovery.run(spool.owners.register("worker"))
    assert spool.find("retry-later").state == "scheduled"
    assert recovered.state == "scheduled" and str(recovered).endswith("now scheduled"), str(recovered)


# ---- enqueue --after, given again ------------------------------------------------------------------


# 8. `--after A --after A` (a script that adds a flag per dependency, two of them on one job): click
#    kept the last --after, so it waited for A, exit 0; since every --after counts, the two made
#    `after: ["A", "A"]`, refused "an id appears twice" (exit 2, nothing enqueued), and a set -e
#    script that ran before stopped. An id named again counts once, as a repeated ID... does.
@pytest.mark.review("day s6 8")
def test_enqueue_after_the_same_job_twice_waits_for_it_once(spool, cli):
    spool.enqueue({"id": "a", "command": "true"})
    spool.enqueue({"id": "b", "command": "true"})
    r = cli("enqueue", "--id", "c", "--after", "a", "--after", "b,a", "true")
    assert r.exit_code == 0, r.output
    assert spool.find("c").job.after == ["a", "b"]
