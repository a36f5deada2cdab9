"""ids/ markers: an id whose creator died before publishing is taken over, by exactly one taker."""

from __future__ import annotations

import pytest

from spoolq import Spool
from spools import cli


# ---- hardening: 6. a killed enqueue leaves nothing behind that blocks a re-run -------------------


@pytest.mark.review("hardening 6")
def test_a_new_enqueue_takes_over_an_id_its_dead_creator_never_published(spool):
    _dead_reservation(spool, "nightly")
    assert cli(spool.root, "enqueue", "--id", "nightly", "--cmd", "true").returncode == 0
    assert spool.find("nightly").state == "pending"
    r = cli(spool.root, "enqueue", "--id", "nightly", "--cmd", "true")  # now a job has it
    assert r.returncode == 1 and "already exists" in r.stderr


def _dead_reservation(spool: Spool, job_id: str) -> None:
    """An id marker whose creator (a process that has exited) never published its job."""
    from conftest import dead_pid
    from spoolq.store.ids import Reservations

    with Reservations(spool.store) as ids:
        ids.creator = ids.creator._replace(pid=dead_pid(), start=None)
        assert ids.reserve(job_id)


# ---- hardening: races an adversarial review found in the first designs ---------------------------


def _take_over_in_a_process(root: str, job_id: str, go, results, done) -> None:
    from spoolq.store.ids import Reservations

    spool = Spool(root, create=False)
    with Reservations(spool.store) as ids:
        go.wait()
        results.put(spool.publisher.reserve(ids, job_id))
        done.wait()  # alive until all have tried: a winner that exited would have abandoned the id


@pytest.mark.review("hardening first designs")
def test_two_takers_of_an_abandoned_id_never_both_get_it(spool):
    """Processes racing to take over the marker of a dead creator: exactly one wins each round
    (the reviewed race let two win: the second moved the first's fresh marker away)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    for round_ in range(10):
        job_id = f"x{round_}"
        _dead_reservation(spool, job_id)
        go, done, results = ctx.Event(), ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_take_over_in_a_process, args=(spool.root, job_id, go, results, done))
                 for _ in range(4)]
        for p in procs:
            p.start()
        go.set()
        won = sorted(results.get(timeout=30) for _ in procs)
        done.set()
        for p in procs:
            p.join(30)
        assert won == [False, False, False, True], round_

