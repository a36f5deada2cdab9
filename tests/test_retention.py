"""Retention: workers purge finished jobs and output past keep_done, keep_dead and keep_output,
once per spool at a time, in small batches, and keep what other jobs still wait for."""

from __future__ import annotations

import os
import time

import pytest

from spoolq import Spool
from spoolq.store import config
from spoolq.running.retention import MIN_GAP, Retention
from spoolq.running.worker import Worker

DAY = 86400.0


def burst(spool: Spool) -> None:
    assert Worker(spool, burst=True, log=lambda _m: None).run() == 0


def finished_spool(spool: Spool) -> dict[str, str]:
    ids = {"ok": spool.enqueue({"command": "echo ok"}).id,
           "bad": spool.enqueue({"command": "echo bad; false", "max_retries": 0}).id,
           "base": spool.enqueue({"command": "true"}).id}
    ids["blocker"] = spool.enqueue({"command": "true", "delay": 3600}).id
    ids["waiter"] = spool.enqueue({"command": "true", "after": [ids["base"], ids["blocker"]]}).id
    return ids


def states(spool: Spool, ids: dict[str, str]) -> dict[str, str | None]:
    out = {}
    for name, job_id in ids.items():
        try:
            out[name] = spool.find(job_id).state
        except Exception:
            out[name] = None
    return out


def test_done_jobs_past_keep_done_are_purged_with_their_output_and_dead_ones_kept(spool):
    ids = finished_spool(spool)
    spool.set_config("keep_done", 7 * DAY)
    burst(spool)  # runs the jobs, and a retention batch: nothing is old enough yet
    assert states(spool, ids)["ok"] == "done" and os.path.exists(spool.output_path(ids["ok"]))
    purged = Retention(spool).run(time.time(), fs_now=time.time() + 8 * DAY)
    assert (purged.done, purged.dead) == (1, 0)  # "base" is kept: a job may still wait for it
    assert states(spool, ids) == {"ok": None, "bad": "dead", "base": "done", "blocker": "scheduled",
                                  "waiter": "waiting"}
    assert not os.path.exists(spool.output_path(ids["ok"])) and not os.path.exists(spool.layout.id_marker(ids["ok"]))
    spool.set_config("keep_dead", 30 * DAY)
    assert Retention(spool).run(time.time(), fs_now=time.time() + 8 * DAY).dead == 0
    assert Retention(spool).run(time.time(), fs_now=time.time() + 31 * DAY).dead == 1
    assert states(spool, ids)["bad"] is None
    spool.enqueue({"command": "true", "id": ids["ok"]})  # its id is free again


@pytest.mark.parametrize("keep", ["keep_done", "keep_output"])
def test_a_batch_never_waits_for_the_dlq_lock_another_command_holds(spool, keep):
    """A purge, dlq retry or requeue holds "dlq" for as long as it takes: retention, which a
    worker runs between its claims (and a one-slot worker beside its running job), tried the
    lock for up to 30 s. It goes on without its batch, and purges once the lock is free."""
    job = spool.enqueue({"command": "echo out"}).id
    burst(spool)
    spool.set_config(keep, DAY)
    retention = Retention(spool)
    with spool.store.locked("dlq"):  # as `spoolq purge` holds it (a lock of its own: flock is per open)
        started = time.monotonic()
        assert retention.run(time.time(), fs_now=time.time() + 2 * DAY) is None
        assert time.monotonic() - started < 1.0
    assert os.path.exists(spool.output_path(job))
    retention.gap_at = 0.0
    purged = retention.run(time.time(), fs_now=time.time() + 2 * DAY)
    assert (purged.done, purged.outputs) == ((1, 0) if keep == "keep_done" else (0, 1))
    assert not os.path.exists(spool.output_path(job))


def test_keep_output_deletes_old_logs_of_finished_jobs_only(spool):
    ids = finished_spool(spool)
    burst(spool)
    running = spool.enqueue({"command": "true", "delay": 3600})  # no log yet: a log of a live job...
    with open(spool.output_path(running.id), "w") as f:  # ...written by an earlier attempt
        f.write("==> attempt 1 <==\n")
    spool.set_config("keep_output", DAY)
    purged = Retention(spool).run(time.time(), fs_now=time.time() + 2 * DAY)
    assert purged.outputs == 2 and (purged.done, purged.dead) == (0, 0)  # "base" wrote nothing: it left no log
    assert os.path.exists(spool.output_path(running.id))  # its job may run again: kept
    assert states(spool, ids)["ok"] == "done"  # the job stays, without its log


def test_one_worker_at_a_time_and_a_small_share_of_its_time(spool):
    finished_spool(spool)
    burst(spool)
    spool.set_config("keep_done", 1)
    other = Retention(spool)
    with config.locked(spool.layout, "retention", mode=0o600):  # another worker, here or elsewhere, at it
        assert other.run(100.0, fs_now=time.time() + DAY) is None
    assert spool.counts().done == 2
    took = Retention(spool)
    assert took.run(100.0, fs_now=time.time() + DAY).done == 1
    assert took.next_at >= 100.0 + MIN_GAP


def test_a_retention_lock_held_for_long_is_said_once_in_the_log(spool):
    """Item 6: a worker that finds the retention lock held, batch after batch, for 10 minutes
    says so in its log, naming the holder (nothing is purged meanwhile), and only once."""
    from spoolq.running.duties import Duties

    finished_spool(spool)
    burst(spool)
    lines: list[str] = []
    duties = Duties(spool, lines.append, lambda: "")
    with config.locked(spool.layout, "retention", mode=0o600):  # a holder that never lets go
        for now in range(1000, 2300, 100):
            duties.run(float(now))
    said = [line for line in lines if "retention" in line]
    assert len(said) == 1 and f"held by pid {os.getpid()} on host " in said[0], lines


def test_a_batch_stops_on_its_time_and_the_next_goes_on_from_there(spool):
    spool.enqueue_many([{"command": "true"} for _ in range(30)])
    burst(spool)
    spool.set_config("keep_done", 1)
    retention = Retention(spool)
    first = retention.run(time.time(), fs_now=time.time() + DAY, seconds=0)
    assert (first.done, retention.behind) == (1, True)
    rest = retention.run(time.time(), fs_now=time.time() + DAY)
    assert (rest.done, retention.behind) == (29, False)


@pytest.mark.slow
def test_an_idle_worker_purges_a_backlog_at_once_a_busy_one_takes_its_share(spool, workers):
    spool.enqueue_many([{"command": "true"} for _ in range(3000)])
    burst(spool)
    spool.set_config("keep_done", 0.001)  # older than a millisecond: every one of them
    w = workers(1)
    from conftest import wait_for

    # The first batch takes its 0.1 s; the idle worker goes on in 20 ms batches, well before the
    # next busy batch would be due (99 x 0.1 s later).
    wait_for(lambda: spool.counts().done == 0, 8, "the idle worker to purge the backlog")
    job = spool.enqueue({"command": "true"}).id
    wait_for(lambda: spool.find(job).state == "done", 5, "a job after the purge")
    w.stop()


@pytest.mark.slow
def test_workers_purge_as_they_go(spool, workers):
    spool.set_config("keep_done", 1)
    first = spool.enqueue({"command": "true"}).id
    w = workers(1)
    from conftest import wait_for

    wait_for(lambda: spool.find(first).state == "done", 10, "the first job")
    # The next batch comes MIN_GAP after the first, and purges the job once it is a second old.
    wait_for(lambda: not os.path.exists(os.path.join(spool.layout.done, f"{first}.json")), MIN_GAP + 15,
             "the worker to purge it")
    assert "retention purged 1 done" in w.stop()


@pytest.mark.slow
def test_a_look_at_many_young_jobs_is_spread_over_batches_each_bounded_in_time(spool):
    """An idle worker goes on only while names are left to look at: batches of its time each,
    from where the last one stopped, never the whole directory at once and never again and again."""
    spool.init()
    for i in range(30000):  # young finished jobs, as a worker leaves them
        open(os.path.join(spool.layout.done, f"young{i:05d}.json"), "w").close()
    spool.set_config("keep_done", DAY)
    retention = Retention(spool)
    batches = 0
    while True:
        started = time.monotonic()
        purged = retention.run(time.time(), seconds=0.005)
        assert time.monotonic() - started < 0.15 + (0.3 if batches == 0 else 0)  # the first lists done/
        batches += 1
        if not retention.behind:
            break
        assert batches < 1000
    assert purged.done == 0 and batches > 1  # the look was spread, and it ended


def test_a_directory_is_not_looked_at_again_before_something_in_it_can_expire(spool):
    """An idle worker's retention costs nothing however many jobs done/ holds: after a pass, the
    next is due when the oldest job it left can expire (a keep shortened since is honoured), and
    nothing is listed before."""
    spool.enqueue_many([{"command": "true"} for _ in range(3)])
    burst(spool)
    spool.set_config("keep_done", DAY)
    retention = Retention(spool)
    now = time.time()
    assert retention.run(now, fs_now=now).done == 0
    assert DAY - 60 < retention.next_at - now <= DAY  # not MIN_GAP: nothing can expire before a day
    retention.spool.finished.examined = -1
    assert retention.run(now + 10, fs_now=now + 10).done == 0
    assert retention.spool.finished.examined == -1  # done/ was not even listed
    spool.set_config("keep_done", 3600)
    assert 3600 - 60 < retention.next_at - now <= 3600
    assert retention.run(now + 3601, fs_now=now + 3601).done == 3
    assert spool.counts().done == 0


def test_a_job_kept_for_its_waiters_is_looked_at_again_within_a_minute(spool):
    finished_spool(spool)
    burst(spool)
    spool.set_config("keep_done", 3600)
    retention = Retention(spool)
    now = time.time()
    assert retention.run(now, fs_now=now + DAY).done == 1  # "base" is kept: "waiter" waits for it
    assert retention.next_at - now <= 60 + 1  # its waiter may be gone by then
    retention.spool.finished.examined = -1
    retention.run(now + 30, fs_now=now + DAY + 30)
    assert retention.spool.finished.examined == -1  # not before
    retention.run(now + 61, fs_now=now + DAY + 61)
    assert retention.spool.finished.examined == 1  # "base", looked at again


# 8. a retention batch that fails leaves `behind` set: an idle worker retries without sleeping --
@pytest.mark.review("service 8")
def test_an_idle_worker_does_not_spin_on_a_failing_retention_batch(spool, monkeypatch):
    from spoolq.running.duties import Duties
    from spoolq.running.worker import Worker

    spool.init()
    for _ in range(2):
        spool.enqueue({"command": "true"})
    dead = spool.enqueue({"command": "false", "max_retries": 0})
    assert Worker(spool, burst=True, log=lambda _m: None).run() == 0
    os.unlink(spool.output_path(dead.id))
    os.mkdir(spool.output_path(dead.id))  # output/<dead id>.log that cannot be unlinked
    os.utime(spool.output_path(dead.id), (time.time() - 7200, time.time() - 7200))
    spool.set_config("keep_done", 0.01)
    spool.set_config("keep_output", 60)
    time.sleep(0.1)
    lines: list[str] = []
    duties = Duties(spool, lines.append, lambda: "")
    duties.retention.todo["output"] = [f"{dead.id}.log"]  # a pass half done, stopping at the bad log
    duties.retention.behind = True
    spins = 0
    while duties.idle(time.time()) and spins < 50:  # the worker loop: idle() True = "look again, don't sleep"
        spins += 1
    failures = [line for line in lines if "retention failed" in line]
    assert spins < 5, f"{spins} back-to-back idle batches, {len(failures)} failures logged: {failures[:1]}"


# 9. a retention batch is not bounded by its time when done/ holds many young jobs --------------
@pytest.mark.review("service 9")
@pytest.mark.slow
def test_a_retention_batch_keeps_to_its_time_budget(spool):
    from spoolq.running.retention import IDLE_BATCH, Retention

    spool.init()
    for i in range(60000):  # a busy spool's week of done jobs (keep_done 7 days, the default), in part
        open(os.path.join(spool.layout.done, f"j{i:06d}.json"), "w").close()
    spool.set_config("keep_done", 7 * 86400)
    started = time.monotonic()
    Retention(spool).run(time.time(), seconds=IDLE_BATCH)  # "a job that arrives waits at most 20 ms"
    spent = time.monotonic() - started
    assert spent < 5 * IDLE_BATCH, f"one batch took {spent:.3f}s for a budget of {IDLE_BATCH}s"


# 13. on a full disk, retention cannot make its lock (not made with the layout): it never frees space
@pytest.mark.review("service 13")
def test_retention_frees_space_on_a_full_disk(tmp_path):
    import subprocess

    from spoolq.running.retention import Retention
    from spoolq.running.worker import Worker

    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,nr_inodes=300", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(r.stderr)
    try:
        spool = Spool(str(mnt / "spool"))
        spool.init()
        spool.set_config("keep_done", 0)  # retention off so far (or: a spool made before it existed)
        for _ in range(20):
            spool.enqueue({"command": "true"})
        assert Worker(spool, burst=True, log=lambda _m: None).run() == 0
        spool.set_config("keep_done", 3600)
        filler = mnt / "filler"
        filler.mkdir()
        i = 0
        while True:  # no inode left
            try:
                open(filler / f"f{i}", "w").close()
            except OSError:
                break
            i += 1
        purged = Retention(spool).run(time.time(), fs_now=time.time() + 7200)  # OSError: ENOSPC
        assert purged is not None and purged.done == 20
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# 16. retention purges a done job that a waiting job names in its --after (no edge: it was done
#     when the waiter was enqueued); the waiter then waits for good --------------------------------
@pytest.mark.review("service 16")
@pytest.mark.slow
def test_retention_keeps_a_done_job_a_waiting_job_still_names(spool):
    from spoolq.running.retention import Retention
    from spoolq.running.worker import Worker

    spool.init()
    spool.set_config("keep_done", 3600)
    x = spool.enqueue({"command": "true"}).id
    assert Worker(spool, burst=True, log=lambda _m: None).run() == 0  # x done
    y = spool.enqueue({"command": "true", "delay": 2}).id  # still to run
    w = spool.enqueue({"command": "true", "after": [x, y]}).id
    assert spool.find(w).state == "waiting"
    Retention(spool).run(time.time(), fs_now=time.time() + 7200)  # x is past keep_done
    time.sleep(2.1)
    assert Worker(spool, burst=True, log=lambda _m: None).run() == 0  # y done: w should be released
    assert spool.find(y).state == "done"
    assert spool.find(w).state != "waiting", "w waits for good: x was purged under it"


# 17. a worker catching up on retention in its idle time does not see new jobs until its next poll
@pytest.mark.review("service 17")
@pytest.mark.slow
def test_a_job_that_arrives_while_retention_catches_up_waits_at_most_a_batch(spool, workers):
    spool.init()
    spool.set_config("poll_interval", 30)  # file-system events wake workers; polling is the fallback
    for i in range(60000):  # an expired backlog (done jobs; names only, cheap to make)
        open(os.path.join(spool.layout.done, f"old{i:06d}.json"), "w").close()
    spool.set_config("keep_done", 0.01)
    time.sleep(0.1)
    w = workers(1)
    time.sleep(0.5)  # the worker is now purging in its idle time, 20 ms at a time
    left = len(os.listdir(spool.layout.done))
    assert left > 1000, "the backlog is gone already: make it bigger here"
    started = time.monotonic()
    job = spool.enqueue({"command": "true"}).id
    while spool.find(job).state != "done" and time.monotonic() - started < 25:
        time.sleep(0.01)
    waited = time.monotonic() - started
    w.stop()
    assert waited < 1.0, f"the job waited {waited:.1f}s (README: at most 20 ms) with {left} done jobs left to purge"


# 18. past ~100,000 done jobs, a retention batch's listing eats its whole budget: one job a batch
@pytest.mark.review("service 18")
@pytest.mark.slow
def test_retention_batches_make_progress_on_a_large_backlog(spool):
    from spoolq.running.retention import IDLE_BATCH, Retention

    spool.init()
    for i in range(100000):  # expired done jobs (names only, cheap to make)
        open(os.path.join(spool.layout.done, f"old{i:06d}.json"), "w").close()
    spool.set_config("keep_done", 0.01)
    time.sleep(0.05)
    retention = Retention(spool)
    started, purged = time.monotonic(), 0
    for _ in range(20):
        purged += retention.run(time.time(), seconds=IDLE_BATCH).done
    spent = time.monotonic() - started
    # README: "a purge costs about 0.1 ms a job": 20 batches of 20 ms are some 4,000 jobs
    assert purged >= 1000, f"20 idle batches ({spent:.2f}s) purged {purged} of 100,000 expired jobs"

