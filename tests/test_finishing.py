"""Finishing (moves/finishing.py): every way a job reaches done/ or dead/ judges the jobs waiting
for it (`enqueue --after`) at once, in the move itself: a worker's success and final failure, a
dead worker's job recovered past its retries, a cancel, a waiter killed because what it waits for
died, fsck's judging of a waiter a crash left. "At once" is well inside the time until a worker's
recovery sweep would look through after/ for a wake-up a crash lost (recovery.py)."""

from __future__ import annotations

import json
import os

import pytest

from conftest import dead_pid, wait_for
from spoolq.format import layout
from spoolq.format.states import State
from spoolq.moves.recovery import DEPS_SWEEP_EVERY
from spoolq.running.duties import RECOVER_EVERY
from test_cli import clean

AT_ONCE = 8.0  # seconds: a finish judges its waiters itself, not a recovery sweep of after/ later
assert AT_ONCE < DEPS_SWEEP_EVERY * RECOVER_EVERY / 2


def state_of(spool, job_id: str) -> str:
    return spool.find(job_id).state


def pending_entry(spool, job_id: str) -> str:
    return next(e for e in spool.store.shards.entries() if getattr(layout.parse_pending(e), "job_id", None) == job_id)


def judged(spool, job_id: str, state: str) -> None:
    wait_for(lambda: state_of(spool, job_id) == state, AT_ONCE, f"job {job_id} to be {state}")


@pytest.fixture
def worker(workers, spool):
    """A worker that takes queue "work" only (a released waiter in "held" stays pending, to be
    seen), past its first recovery sweep: a probe job of its own ran."""
    started = workers(extra=("--queue", "work"))
    spool.enqueue({"id": "probe", "command": "true", "queue": "work"})
    judged(spool, "probe", State.DONE)
    return started


def test_a_workers_success_releases_its_waiter(cli, spool, worker):
    spool.enqueue({"id": "a", "command": "sleep 0.3", "queue": "work"})
    clean(cli("enqueue", "--id", "b", "--queue", "held", "--after", "a", "true"))
    judged(spool, "a", State.DONE)
    judged(spool, "b", State.PENDING)
    assert "job b, waiting for a, is now pending" in worker.output


def test_a_workers_final_failure_kills_its_waiter_and_theirs(cli, spool, worker):
    spool.enqueue({"id": "a", "command": "sleep 0.3; exit 3", "queue": "work", "max_retries": 0})
    clean(cli("enqueue", "--id", "b", "--queue", "held", "--after", "a", "true"))
    clean(cli("enqueue", "--id", "c", "--queue", "held", "--after", "b", "true"))
    judged(spool, "a", State.DEAD)
    judged(spool, "b", State.DEAD)
    judged(spool, "c", State.DEAD)
    assert spool.find("b").job.last_error == "dependency a is dead"
    assert spool.find("c").job.last_error == "dependency b is dead"


def _held_by_a_dead_worker(spool, job_id: str) -> None:
    """`job_id` claimed by a worker that died running it."""
    owner = spool.owners.register("worker")
    entry = pending_entry(spool, job_id)
    assert spool.transitions.claim(entry, owner) is not None
    path = spool.layout.worker_file(owner)
    with open(path) as f:
        record = json.load(f)
    record.update(pid=dead_pid(), start=None)
    with open(path, "w") as f:
        json.dump(record, f)


def test_recovery_of_a_dead_workers_job_past_its_retries_kills_its_waiter(cli, spool, worker):
    spool.enqueue({"id": "a", "command": "true", "queue": "elsewhere", "max_retries": 0})
    clean(cli("enqueue", "--id", "b", "--queue", "held", "--after", "a", "true"))
    _held_by_a_dead_worker(spool, "a")
    judged(spool, "a", State.DEAD)  # the running worker's recovery: its one attempt is spent
    judged(spool, "b", State.DEAD)
    assert spool.find("b").job.last_error == "dependency a is dead"


@pytest.mark.parametrize("waiting", [False, True], ids=["pending", "waiting"])
def test_a_cancel_kills_what_waits_for_the_job(cli, spool, waiting):
    spool.enqueue({"id": "x", "command": "true"})
    spool.enqueue({"id": "a", "command": "true", **({"after": ["x"]} if waiting else {})})
    clean(cli("enqueue", "--id", "b", "--after", "a", "true"))
    assert state_of(spool, "a") == (State.WAITING if waiting else State.PENDING)
    clean(cli("cancel", "a"))
    assert state_of(spool, "b") == State.DEAD  # by the time the cancel returns
    assert spool.find("b").job.last_error == "dependency a is dead"
    assert os.listdir(spool.layout.dir("after")) == []  # b's edge, and a's own on x, went


def test_enqueued_after_a_dead_job_it_dies_and_so_does_what_waits_for_it(cli, spool):
    """settle(): the enqueuer's own judging kills the new waiter, whose waiters (published in the
    same batch) die with it through the same finish."""
    spool.enqueue({"id": "a", "command": "false", "max_retries": 0})
    _finish_as_a_worker(spool, "a", ok=False)
    batch = "\n".join(json.dumps(j) for j in ({"id": "b", "command": "true", "after": ["a"]},
                                             {"id": "c", "command": "true", "after": ["b"]}))
    clean(cli("enqueue", "--batch", "-", input=batch + "\n"))
    assert (state_of(spool, "b"), state_of(spool, "c")) == (State.DEAD, State.DEAD)


def _finish_as_a_worker(spool, job_id: str, *, ok: bool):
    owner = spool.owners.register("worker")
    entry = pending_entry(spool, job_id)
    claimed = spool.transitions.claim(entry, owner)
    try:
        return spool.transitions.finish(claimed, ok=ok, exit_code=0 if ok else 1, error=None if ok else "exit 1",
                                        final=True)
    finally:
        spool.owners.unregister(owner)


@pytest.mark.parametrize("ok", [True, False], ids=["done", "dead"])
def test_the_transition_itself_judges_the_waiters_and_says_so(spool, ok):
    """No caller has to remember: finish() returns with the waiters judged, and names them."""
    spool.enqueue({"id": "a", "command": "true"})
    spool.enqueue({"id": "b", "command": "true", "after": ["a"]})
    spool.enqueue({"id": "c", "command": "true", "after": ["b"]})
    moved = _finish_as_a_worker(spool, "a", ok=ok)
    if ok:
        assert (state_of(spool, "b"), state_of(spool, "c")) == (State.PENDING, State.WAITING)
        assert moved.woken == (("a", "b", State.PENDING),)
    else:
        assert (state_of(spool, "b"), state_of(spool, "c")) == (State.DEAD, State.DEAD)
        assert sorted(moved.woken) == [("a", "b", State.DEAD), ("b", "c", State.DEAD)]
    assert moved.unwoken is None


def test_fsck_judges_a_waiter_a_crash_left_and_what_waits_for_it(cli, spool):
    """a went dead, and its finisher died before it judged b: fsck kills b, and c with it."""
    spool.enqueue({"id": "a", "command": "true"})
    spool.enqueue({"id": "b", "command": "true", "after": ["a"]})
    spool.enqueue({"id": "c", "command": "true", "after": ["b"]})
    owner = spool.owners.register("worker")
    claimed = spool.transitions.claim(pending_entry(spool, "a"), owner)
    os.rename(claimed.path, os.path.join(spool.layout.dead, "a.json"))  # the move, then the crash
    spool.owners.unregister(owner)
    assert (state_of(spool, "b"), state_of(spool, "c")) == (State.WAITING, State.WAITING)
    clean(cli("fsck", "--repair"))
    assert (state_of(spool, "b"), state_of(spool, "c")) == (State.DEAD, State.DEAD)
    assert clean(cli("fsck")).stdout.endswith(": clean\n")
