"""A Python developer's day with the API (docs/python.md): what a program that hands jobs in
from a web app meets, from type hints to the errors it catches by type."""

from __future__ import annotations

import ast
import configparser
import os

import pytest

import spoolq
from spools import REPO
from spoolq import Spool


# ---- type hints -------------------------------------------------------------------------------

def _bound_under_type_checking(path: str) -> set[str]:
    """The names a module binds inside its `if TYPE_CHECKING:` blocks (what mypy sees)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for inner in node.body:
                if isinstance(inner, ast.ImportFrom):
                    names |= {alias.asname or alias.name for alias in inner.names}
                elif isinstance(inner, ast.ClassDef):
                    names.add(inner.name)
                elif isinstance(inner, ast.AnnAssign) and isinstance(inner.target, ast.Name):
                    names.add(inner.target.id)
    return names


def test_a_type_checker_sees_every_public_name_as_what_it_is():
    """`from spoolq import Spool` went through the package's lazy __getattr__, so mypy --strict
    typed every name as `object` ("Spool is not valid as a type", "object not callable") and,
    with no py.typed marker, skipped the package altogether."""
    package = os.path.join(REPO, "spoolq")
    assert os.path.exists(os.path.join(package, "py.typed"))
    setup = configparser.ConfigParser()
    setup.read(os.path.join(REPO, "setup.cfg"))
    assert "py.typed" in setup["options.package_data"]["spoolq"]  # shipped in the wheel, not only here
    assert set(spoolq.__all__) - {"__version__"} <= _bound_under_type_checking(os.path.join(package, "__init__.py"))
    states = os.path.join(package, "format", "states.py")
    assert {"State", "FINISHED", "NOT_STARTED"} <= _bound_under_type_checking(states)
    for node in ast.walk(ast.parse(open(states).read())):
        if isinstance(node, ast.ClassDef) and node.name == "State":  # the same members as the made one
            members = [stmt.targets[0].id.lower() for stmt in node.body if isinstance(stmt, ast.Assign)]
            assert members == [state.value for state in spoolq.State]


# ---- errors caught by type --------------------------------------------------------------------

def test_every_error_the_api_raises_can_be_caught_by_a_name_from_spoolq():
    """NoSpool, UntrustedFile, UnsafeFileSystem and LockBusy were raised to programs but could
    only be caught as SpoolError, or imported from the inner module spoolq.format.errors."""
    from spoolq.format import errors

    family = {name for name, value in vars(errors).items()
              if isinstance(value, type) and issubclass(value, errors.SpoolError)}
    assert family <= set(spoolq.__all__)
    for name in family:
        assert getattr(spoolq, name) is getattr(errors, name)


def test_a_full_or_read_only_disk_is_a_spool_error_of_its_own_type(small_fs):
    """On a full disk enqueue raised SpoolError, but set_config, pause and cancel a bare OSError
    that `except spoolq.SpoolError` let through; a read-only file system the same."""
    import errno
    import subprocess

    from conftest import fill

    spool = Spool(os.path.join(small_fs, "spool"))
    job = spool.enqueue({"command": "echo before"})
    filler = fill(small_fs)
    for call in (lambda: spool.enqueue({"command": "echo " + "x" * 20000}),
                 lambda: spool.set_config("max_retries", 5), spool.pause,
                 lambda: spool.cancel([job.id])):
        with pytest.raises(spoolq.DiskFull, match="the file system is full") as raised:
            call()
        assert isinstance(raised.value, spoolq.StorageError) and raised.value.errno == errno.ENOSPC
    os.unlink(filler)
    subprocess.run(["mount", "-o", "remount,ro", small_fs], check=True, capture_output=True)
    try:
        with pytest.raises(spoolq.StorageError, match="Read-only file system") as raised:
            spool.pause()
        assert raised.value.errno == errno.EROFS and not isinstance(raised.value, spoolq.DiskFull)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", small_fs], capture_output=True)
    assert spool.find(job.id).state == "pending"


# ---- what a program gets wrong ----------------------------------------------------------------

@pytest.mark.parametrize("spec", ["echo hi", ["echo", "hi"], None, 5])
def test_a_spec_that_is_not_a_dict_is_an_invalid_job(spool, spec):
    """enqueue("echo hi"), the RQ habit of passing the work itself, raised AttributeError: 'str'
    object has no attribute 'get'."""
    with pytest.raises(spoolq.InvalidJob, match="a job is a dict of its fields") as raised:
        spool.enqueue(spec)
    if spec == "echo hi":
        assert "{'command': 'echo hi'}" in str(raised.value)
    with pytest.raises(spoolq.InvalidJob):
        spool.enqueue_many([{"command": "true"}, spec])
    assert spool.list_jobs() == []  # all or none


def test_one_id_given_alone_is_that_id_not_its_letters(spool):
    """A str is an iterable of ids of one letter each: cancel("a1") cancelled jobs 'a' and '1'
    (and said nothing of a1), wait("a1") waited for a job 'a'."""
    for job_id in ("a1", "a", "1"):
        spool.enqueue({"command": "true", "id": job_id})
    [result] = spool.cancel("a1")
    assert result.job_id == "a1" and result.ok
    assert [spool.find(j).state for j in ("a1", "a", "1")] == ["dead", "pending", "pending"]
    assert [view.id for view in spool.wait("a1", timeout=5)] == ["a1"]
    assert spool.requeue("a1") == {"a1": None}
    spool.cancel(["a1"])
    assert spool.retry_dead("a1") == ["a1"]
    spool.cancel(["a1"])
    assert spool.purge_ids("a1") == {"a1": None}
    assert [spool.find(j).state for j in ("a", "1")] == ["pending", "pending"]


def test_a_state_that_does_not_exist_is_refused_not_an_empty_list(spool):
    """list_jobs("failed") (RQ's word) returned [], as if no job had failed."""
    spool.enqueue({"command": "true"})
    with pytest.raises(spoolq.InvalidJob, match="no state 'failed': a state is one of pending, scheduled"):
        spool.list_jobs("failed")
    assert len(spool.list_jobs(spoolq.State.PENDING)) == len(spool.list_jobs("pending")) == 1


def test_a_spool_opened_without_creating_it_that_is_not_there_is_no_spool(tmp_path):
    """Spool(path, create=False) of a mistyped path answered find() with "no job 'x'", list_jobs()
    and counts() with nothing at all, and enqueue() with an error about a temp file in it."""
    spool = Spool(str(tmp_path / "typo"), create=False)
    for call in (lambda: spool.find("x"), spool.list_jobs, spool.counts,
                 lambda: spool.enqueue({"command": "true"}), lambda: spool.wait(["x"], timeout=1)):
        with pytest.raises(spoolq.NoSpool, match=f"no spool at {tmp_path / 'typo'}$"):
            call()
    assert not os.path.exists(tmp_path / "typo")
    Spool(str(tmp_path / "typo"))  # made, as `spoolq init` makes it
    with pytest.raises(spoolq.JobNotFound):
        spool.find("x")
    assert spool.list_jobs() == [] and spool.counts().to_dict()["pending"] == 0


# ---- what the CLI does, a program can call ------------------------------------------------------

def test_a_jobs_output_is_read_as_logs_prints_it(spool, spool_dir):
    """`spoolq logs` had no method: docs/python.md opened output_path() itself, which follows a
    symlink planted there and raises FileNotFoundError for a job that printed nothing."""
    from conftest import spoolq as run_cli

    loud = spool.enqueue({"command": "echo to-stdout; echo to-stderr >&2; exit 3", "max_retries": 0})
    quiet = spool.enqueue({"command": "true"})
    waiting = spool.enqueue({"command": "true", "delay": 3600})
    assert spool.output(loud.id) is None  # not run yet
    r = run_cli(spool_dir, "worker", "start", "--burst", "-q")
    assert r.returncode == 0, r.stderr
    assert [v.state for v in spool.wait([loud.id, quiet.id], timeout=30)] == ["dead", "done"]
    shown = spool.output(loud.id)
    assert b"to-stdout\n" in shown and b"to-stderr\n" in shown
    assert shown == run_cli(spool_dir, "logs", loud.id).stdout.encode()
    assert spool.output(quiet.id) is None and spool.output(waiting.id) is None
    os.symlink(spool.output_path(loud.id), spool.output_path(waiting.id))
    assert spool.output(waiting.id) is None  # never through a symlink
    with pytest.raises(spoolq.JobNotFound):
        spool.output("no-such-job")


def test_a_queues_concurrency_limit_is_set_from_python(spool, spool_dir):
    """`spoolq queue set Q --concurrency N` had no method: a program reached for spool.slots, whose
    set_limit checks nothing (a limit of -1, or a queue name with a space, written to be ignored)."""
    from conftest import spoolq as run_cli

    assert spool.set_concurrency("mail", 2) == {"mail": 2} == spool.concurrency()
    assert "mail" in run_cli(spool_dir, "queue", "list").stdout
    for queue, limit, error in (("mail", -1, spoolq.ConfigError), ("mail", True, spoolq.ConfigError),
                                ("mail", 10_001, spoolq.ConfigError), ("my mail", 2, spoolq.InvalidJob)):
        with pytest.raises(error):
            spool.set_concurrency(queue, limit)
    assert spool.set_concurrency("mail", 0) == {} == spool.concurrency()


def test_a_wait_that_times_out_says_which_jobs_are_left(spool):
    """WaitTimeout named the unfinished jobs only in its message, cut after ten."""
    jobs = [spool.enqueue({"command": "true"}).id for _ in range(12)]
    with pytest.raises(spoolq.WaitTimeout) as raised:
        spool.wait(jobs, timeout=0.05)
    assert raised.value.job_ids == jobs
