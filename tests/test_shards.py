"""pending/ in shards (config `pending_shards`, shards.py): every way into pending/ lands in the
shard of its time, every reader reads both levels, a worker's poll lists only what changed, and a
shard that is not a real directory is never followed."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from conftest import SPOOLQ, spoolq, wait_for
from spoolq import Spool, fsck
from spoolq.format import layout as L
from spoolq.store import shards
from spoolq.pending.rescans import Arrivals
from spoolq.store.shards import PendingShards

WIDTH = 60


@pytest.fixture
def sharded(spool: Spool) -> Spool:
    spool.set_config("pending_shards", WIDTH)
    spool.set_config("backoff_base", 0)
    return spool


def pending_files(spool: Spool) -> tuple[list[str], list[str]]:
    """(canonical names in pending/ itself, entries in its shards)."""
    top, inside = [], []
    for name in os.listdir(spool.layout.pending):
        path = os.path.join(spool.layout.pending, name)
        if shards.is_shard(name) and os.path.isdir(path) and not os.path.islink(path):
            inside += [f"{name}/{n}" for n in os.listdir(path)]
        elif L.is_canonical(name):
            top.append(name)
    return top, inside


def shards_at(spool: Spool, when: float) -> PendingShards:
    """The shards as a writer whose clock says `when` sees them."""
    return PendingShards(spool.layout.pending, lambda: spool.store.modes.dir, lambda: WIDTH, lambda: when)


def record(tmp_path, tag: str) -> str:
    return f"echo {tag} >> {tmp_path}/runs"


def runs(tmp_path) -> list[str]:
    path = tmp_path / "runs"
    return path.read_text().split() if path.exists() else []


def test_every_way_into_pending_lands_in_a_shard_and_every_job_runs_once(sharded, spool_dir, tmp_path):
    spool = sharded
    spool.enqueue({"id": "single", "command": record(tmp_path, "single")})
    spool.enqueue_many([{"id": f"batch{i}", "command": record(tmp_path, f"batch{i}")} for i in range(3)])
    spool.enqueue({"id": "first", "command": record(tmp_path, "first")})
    spool.enqueue({"id": "then", "command": record(tmp_path, "then"), "after": ["first"]})
    with open(os.path.join(spool.layout.pending, "dropped.json"), "w") as f:
        json.dump({"command": record(tmp_path, "dropped")}, f)
    top, inside = pending_files(spool)
    assert top == [] and len(inside) == 5, (top, inside)
    assert all(e.startswith(shards.shard_of(time.time(), WIDTH)) or e.startswith(
        shards.shard_of(time.time() - WIDTH, WIDTH)) for e in inside), inside
    assert spool.counts().pending == 6  # the drop-in too
    assert {v.id for v in spool.list_jobs("pending")} == {"single", "batch0", "batch1", "batch2", "first", "dropped"}
    assert spool.find("batch1").state == "pending"

    # A failed attempt goes back into a shard: the worker's own retry path.
    owner = spool.owners.register("worker")
    entry = next(e for e in inside if "@single" in e)
    claimed = spool.transitions.claim(entry, owner)
    moved = spool.transitions.finish(claimed, ok=False, exit_code=1, error="first try")
    assert moved.state == "pending" and shards.is_shard(moved.name.split("/")[0]), moved
    spool.owners.unregister(owner)

    r = spoolq(spool_dir, "worker", "start", "--burst")
    assert r.returncode == 0, r.stderr
    ran = runs(tmp_path)
    assert sorted(ran) == sorted(["single", "batch0", "batch1", "batch2", "first", "then", "dropped"]), ran
    assert ran.index("first") < ran.index("then")  # released from waiting/ into a shard, then run

    # requeue puts a finished job back into a shard too
    assert spool.requeue(["batch0"]) == {"batch0": None}
    top, inside = pending_files(spool)
    assert top == [] and [e.split("@")[1] for e in inside] == ["batch0.json"], (top, inside)
    assert fsck.check(Spool(spool_dir, create=False)) == []


def test_readers_read_both_levels_and_run_order_spans_them(spool, spool_dir, tmp_path):
    """A spool that turns sharding on keeps its older names in pending/ itself: every reader and the
    worker see both, in one run order (priority, then arrival)."""
    spool.enqueue({"id": "flat-old", "command": record(tmp_path, "flat-old")})
    spool.enqueue({"id": "flat-urgent", "command": record(tmp_path, "flat-urgent"), "priority": 5})
    spool.set_config("pending_shards", WIDTH)
    spool.enqueue({"id": "shard-new", "command": record(tmp_path, "shard-new")})
    spool.enqueue({"id": "shard-urgent", "command": record(tmp_path, "shard-urgent"), "priority": 9,
                   "queue": "video"})
    top, inside = pending_files(spool)
    assert len(top) == 2 and len(inside) == 2, (top, inside)
    assert [v.id for v in spool.list_jobs("pending")] == ["shard-urgent", "flat-urgent", "flat-old", "shard-new"]
    assert spool.counts().pending == 4
    listed = json.loads(spoolq(spool_dir, "queue", "list", "--json").stdout)
    assert {q["queue"]: q["pending"] for q in listed} == {"default": 3, "video": 1}, listed
    assert json.loads(spoolq(spool_dir, "show", "shard-new", "--json").stdout)["state"] == "pending"
    assert fsck.check(Spool(spool_dir, create=False)) == []
    r = spoolq(spool_dir, "worker", "start", "--burst")
    assert r.returncode == 0, r.stderr
    assert runs(tmp_path) == ["shard-urgent", "flat-urgent", "flat-old", "shard-new"]


def test_cancel_takes_a_job_out_of_its_shard(sharded, spool_dir):
    sharded.enqueue({"id": "c1", "command": "true", "delay": 3600})
    r = spoolq(spool_dir, "cancel", "c1")
    assert r.returncode == 0, r.stderr
    assert sharded.find("c1").state == "dead"
    assert pending_files(sharded) == ([], [])


def test_a_symlink_where_a_shard_should_be_is_never_followed(sharded, spool_dir, tmp_path):
    """Another program (or a hand) puts a symlink where this minute's shard goes: nothing is
    written through it and nothing behind it is read as a job; the job goes into pending/ itself."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    planted = L.pending_name("planted", 0, 1, None)
    (outside / planted).write_text(json.dumps({"id": "planted", "command": f"touch {tmp_path}/pwned"}))
    now = time.time()
    for when in (now, now + WIDTH):  # this shard, and the next (should the minute turn meanwhile)
        os.symlink(outside, os.path.join(sharded.layout.pending, shards.shard_of(when, WIDTH)))
    job = sharded.enqueue({"command": "true"})
    top, inside = pending_files(sharded)
    assert top == [L.pending_name_of(job)] and inside == [], (top, inside)
    assert os.listdir(outside) == [planted]
    assert [v.id for v in sharded.list_jobs()] == [job.id]
    r = spoolq(spool_dir, "worker", "start", "--burst")
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "pwned").exists() and os.listdir(outside) == [planted]
    assert sharded.find(job.id).state == "done"


def test_a_file_dropped_inside_a_shard_is_moved_out_by_fsck(sharded, spool_dir, tmp_path):
    sharded.enqueue({"command": "true"})
    (shard,) = sharded.store.shards.shards()
    with open(os.path.join(sharded.layout.pending, shard, "lost.json"), "w") as f:
        json.dump({"id": "lost", "command": record(tmp_path, "lost")}, f)
    problems = fsck.check(Spool(spool_dir, create=False))
    assert [p.kind for p in problems] == ["misplaced-dropin"], problems
    r = spoolq(spool_dir, "fsck", "--repair")
    assert "1 repaired" in r.stdout, r.stdout + r.stderr
    assert spoolq(spool_dir, "fsck").returncode == 0
    assert os.path.exists(os.path.join(sharded.layout.pending, "lost.json"))
    assert spoolq(spool_dir, "worker", "start", "--burst").returncode == 0
    assert runs(tmp_path) == ["lost"]


def test_a_poll_lists_only_the_shards_that_changed(sharded):
    """5,000 jobs sit in shards an hour old; after the first poll, a poll lists only what arrived."""
    spool = sharded
    now = time.time()
    for k in range(5):
        shard = os.path.join(spool.layout.pending, shards.shard_of(now - 3600 - k * WIDTH, WIDTH))
        os.mkdir(shard)
        for i in range(1000):
            with open(os.path.join(shard, L.pending_name(f"old{k}-{i}", 0, k * 1000 + i + 1, now + 86400)), "w") as f:
                f.write("{}")
    arrivals = Arrivals(spool.store.shards)
    assert arrivals.poll(time.monotonic(), WIDTH) == []  # the backlog is the full listing's to find
    assert arrivals.names == 5  # pending/ itself: the five shards' names
    settled = time.monotonic() + 3  # past ListingGate.SAME_TICK: the stamps have settled
    arrivals.poll(settled, WIDTH)
    names_before, skipped_before = arrivals.names, arrivals.skipped
    assert arrivals.poll(settled + 1, WIDTH) == []
    assert (arrivals.names, arrivals.skipped) == (names_before, skipped_before + 1)  # one stat
    new = [spool.enqueue({"command": "true"}) for _ in range(5)]
    found = arrivals.poll(settled + 2, WIDTH)
    assert sorted(shards.base(e) for e in found) == sorted(L.pending_name_of(j) for j in new)
    assert arrivals.names - names_before == 5  # the new shard alone: it explains pending/'s change
    # A drop-in that lands beside an arrival in a shard: found by the listing of pending/ itself,
    # at most TOP_EVERY seconds later while arrivals keep coming.
    with open(os.path.join(spool.layout.pending, "dropped.json"), "w") as f:
        f.write("{}")
    job = spool.enqueue({"command": "true"})
    found = [shards.base(e) for e in arrivals.poll(settled + 3, WIDTH)]
    assert L.pending_name_of(job) in found and "dropped.json" not in found, found
    spool.enqueue({"command": "true"})
    later = arrivals.poll(settled + 3 + Arrivals.TOP_EVERY, WIDTH)
    assert "dropped.json" in later, later


def test_a_poll_finds_arrivals_beside_a_shard_from_a_clock_far_ahead(sharded):
    """A writer whose clock is a day ahead makes the newest shard by name; this host's current
    shard is still polled, so what arrives in it is found."""
    ahead = shards_at(sharded, time.time() + 86400)
    entry = ahead.place(L.pending_name("ahead", 0, 1, None))
    open(ahead.path(entry), "w").write("{}")
    for k in range(1, 4):  # and shards for each minute up to it, none of them current
        shards_at(sharded, time.time() + 86400 - k * WIDTH).place(L.pending_name(f"x{k}", 0, k + 1, None))
    arrivals = Arrivals(sharded.store.shards)
    arrivals.poll(time.monotonic(), WIDTH)
    job = sharded.enqueue({"command": "true"})
    found = wait_for(lambda: [e for e in arrivals.poll(time.monotonic(), WIDTH)
                              if shards.base(e) == L.pending_name_of(job)], timeout=5, what="the arrival")
    assert found


def test_a_writer_whose_clock_is_behind_still_writes_into_the_newest_shard(sharded):
    first = shards.split(sharded.store.shards.place(L.pending_name("now", 0, 1, None)))[0]
    late = shards_at(sharded, time.time() - 2 * 3600)  # two hours behind
    shard = shards.split(late.place(L.pending_name("late", 0, 2, None)))[0]
    assert shards.is_shard(shard) and 0 <= shards.start_of(shard) - shards.start_of(first) <= WIDTH, (first, shard)


def test_empty_old_shards_are_pruned_and_a_writer_whose_shard_went_makes_it_again(sharded):
    spool = sharded
    now = time.time()
    empty_old = shards.shard_of(now - 2 * 3600, WIDTH)
    full_old = shards.shard_of(now - 3 * 3600, WIDTH)
    os.mkdir(os.path.join(spool.layout.pending, empty_old))
    os.mkdir(os.path.join(spool.layout.pending, full_old))
    with open(os.path.join(spool.layout.pending, full_old, L.pending_name("kept", 0, 1, now + 86400)), "w") as f:
        f.write("{}")
    spool.enqueue({"command": "true"})
    arrivals = Arrivals(spool.store.shards)
    arrivals.poll(time.monotonic(), WIDTH)
    assert arrivals.prune(spool.views.pending_entries()) == [empty_old]  # a shard holding a job stays
    assert empty_old not in spool.store.shards.shards() and full_old in spool.store.shards.shards()
    # A writer made sure of its shard, which a pruner then removed before the writer's rename:
    # the rename meets no directory, and the writer makes it again.
    writer = shards_at(spool, now + 7200)
    entry = writer.place(L.pending_name("moved", 0, 2, None))
    os.rmdir(os.path.join(spool.layout.pending, shards.split(entry)[0]))
    src = os.path.join(spool.layout.tmp, ".moved")
    open(src, "w").write("{}")
    assert writer.move_in(src, L.pending_name("moved", 0, 2, None)) == entry
    assert os.path.exists(writer.path(entry)) and not os.path.exists(src)


def test_a_batch_writes_into_the_shard_of_its_renames_not_of_its_staging(spool):
    """Staging a big batch can take longer than a shard lasts: its jobs go into the shard of when
    they are renamed in, which pollers are watching then, not the one of when they were staged."""
    spool.set_config("pending_shards", 1)
    staged_in = shards.shard_of(time.time(), 1)

    def slow_staging(_n: int) -> None:  # the batch's progress callback, once per job staged
        wait_for(lambda: shards.shard_of(time.time(), 1) != staged_in, 5, "the next second")

    jobs = spool.enqueue_many([{"command": "true"} for _ in range(2)], progress=slow_staging)
    top, inside = pending_files(spool)
    assert top == [] and len(inside) == 2, (top, inside)
    assert all(shards.split(e)[0] > staged_in for e in inside), (staged_in, inside)
    assert sorted(shards.base(e) for e in inside) == sorted(L.pending_name_of(j) for j in jobs)


def test_a_poll_after_a_long_gap_finds_what_landed_in_a_shard_it_knew(spool):
    """A worker that has not polled for longer than a shard lasts (a long job, a long
    poll_interval) still looks into every shard written since its last look."""
    spool.set_config("pending_shards", 1)
    spool.enqueue({"command": "true"})
    arrivals = Arrivals(spool.store.shards)
    t = time.monotonic()
    arrivals.poll(t, 1)  # it knows the shard of now
    late = spool.enqueue({"command": "true"})  # into that shard (or the next)
    first = shards.shard_of(time.time(), 1)
    wait_for(lambda: shards.shard_of(time.time(), 1) > shards.shard_of(time.time() - 2, 1) > first, 5,
             "two more seconds")
    found = [shards.base(e) for e in arrivals.poll(t + 10, 1)]
    assert L.pending_name_of(late) in found, found


def test_a_misplaced_drop_in_whose_name_is_taken_is_left_alone(sharded, spool_dir):
    sharded.enqueue({"command": "true"})
    (shard,) = sharded.store.shards.shards()
    for directory in (os.path.join(sharded.layout.pending, shard), sharded.layout.pending):
        with open(os.path.join(directory, "same.json"), "w") as f:
            json.dump({"command": "true"}, f)
    r = spoolq(spool_dir, "fsck", "--repair")
    assert "left alone: pending/ has a file of that name" in r.stdout, r.stdout + r.stderr


def test_group_access_gives_shards_and_their_jobs_the_spools_modes(sharded, spool_dir):
    sharded.enqueue({"command": "true"})
    (shard,) = sharded.store.shards.shards()
    path = os.path.join(sharded.layout.pending, shard)
    (job_file,) = os.listdir(path)
    mode = lambda p: os.lstat(p).st_mode & 0o7777  # noqa: E731
    assert (mode(path), mode(os.path.join(path, job_file))) == (0o700, 0o600)
    assert spoolq(spool_dir, "config", "set", "group_access", "true").returncode == 0
    assert (mode(path), mode(os.path.join(path, job_file))) == (0o2750, 0o640)
    assert spoolq(spool_dir, "config", "set", "group_access", "false").returncode == 0
    assert (mode(path), mode(os.path.join(path, job_file))) == (0o700, 0o600)
    os.chmod(path, 0o777)  # opened up by hand: fsck says so
    assert [p.kind for p in fsck.check(Spool(spool_dir, create=False))] != []


def test_config_pending_shards_rejects_garbage(cli):
    assert cli("config", "set", "pending_shards", "-5").exit_code == 2
    assert cli("config", "set", "pending_shards", "soon").exit_code == 2
    assert cli("config", "set", "pending_shards", "60").exit_code == 0


def test_a_worker_is_woken_by_events_for_jobs_written_into_shards(sharded, spool_dir, tmp_path):
    """Polling every 30 s, the worker still starts each job at once: its shards are watched, the
    one made for the first job as well as the one it then finds there."""
    sharded.set_config("poll_interval", 30)
    log = open(tmp_path / "worker.log", "wb")
    proc = subprocess.Popen([*SPOOLQ, "--spool", spool_dir, "worker", "start"], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=log, start_new_session=True)
    try:
        # Registered: its watches are made before its first listing, so from here on a job is
        # found by that listing or by an event, never by a poll.
        wait_for(lambda: sharded.workers(role="worker"), 15, "the worker to register")
        for i in range(3):
            started = time.monotonic()
            job = sharded.enqueue({"command": "true"})
            wait_for(lambda: sharded.find(job.id).state == "done", 5, f"job {i} to run")
            assert time.monotonic() - started < 3, f"job {i} waited for a poll"
            if i == 0:
                # the next job lands in an existing shard: remake none, keep the watch
                assert len(sharded.store.shards.shards()) == 1
        assert "waking on file-system events" in (tmp_path / "worker.log").read_text()
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()


def test_lost_claims_on_arrivals_do_not_make_a_worker_list_the_backlog():
    """Every worker races for each arrival; a listing of the whole backlog would not spare it one
    of those lost claims. Lost claims on names from a listing still make it list at once once
    they have cost more than a listing (which forgets every name others took)."""
    from spoolq.pending.index import Pacing

    snapshot = type("Snap", (), {"started": 0.0, "cost": 0.05, "names": [], "covered": True, "stamp": None})()
    arrivals, backlog = Pacing(), Pacing()
    for pacing in (arrivals, backlog):
        pacing.took(snapshot, theirs=False)
    for _ in range(100):  # 0.2 s of lost claims, against a 0.05 s listing
        arrivals.claimed(False, 0.002, listed=False)
        backlog.claimed(False, 0.002)
    assert arrivals.rescan_interval(True, 1.0, sharded=True) >= 1.0
    assert backlog.rescan_interval(True, 1.0, sharded=True) == 0.0
    assert backlog.rescan_interval(True, 1.0) == 0.0


def test_a_drop_in_beside_an_arrival_is_found_as_soon_as_arrivals_stop(sharded):
    spool = sharded
    spool.enqueue({"command": "true"})
    arrivals = Arrivals(spool.store.shards)
    t = time.monotonic()
    arrivals.poll(t, WIDTH)  # lists pending/ itself
    with open(os.path.join(spool.layout.pending, "dropped.json"), "w") as f:
        f.write("{}")
    job = spool.enqueue({"command": "true"})
    found = [shards.base(e) for e in arrivals.poll(t + 1, WIDTH)]
    assert L.pending_name_of(job) in found and "dropped.json" not in found  # explained by the arrival
    # Nothing more arrives: the next look (pending/'s stamp not settled yet) finds the shard
    # unchanged, so pending/ itself is listed, long before TOP_EVERY.
    assert "dropped.json" in arrivals.poll(t + 2, WIDTH)


def test_a_writer_whose_clock_is_behind_on_a_long_idle_spool_writes_where_polls_look(sharded):
    """pending/'s mtime is an hour old and the writer's clock three minutes behind: it still
    writes into the shard of the file system's now, each time, so a poll in between misses none."""
    spool = sharded
    spool.enqueue({"command": "true"})
    hour_ago = time.time() - 3600
    os.utime(spool.layout.pending, (hour_ago, hour_ago))
    arrivals = Arrivals(spool.store.shards)
    t = time.monotonic() + 3
    arrivals.poll(t, WIDTH)
    behind = shards_at(spool, time.time() - 180)
    entries = []
    for i, job_id in enumerate(["a", "b"]):
        src = os.path.join(spool.layout.tmp, f".{job_id}")
        open(src, "w").write("{}")
        entries.append(behind.move_in(src, L.pending_name(job_id, 0, i + 1, None)))
        found = arrivals.poll(t + 3 * (i + 1), WIDTH)
        assert entries[-1] in found, (entries, found)
    assert shards.start_of(shards.split(entries[0])[0]) > time.time() - 2 * WIDTH


def test_an_unsharded_worker_counts_every_lost_claim_toward_a_listing(spool):
    from spoolq.pending.index import Pacing, PendingIndex
    from spoolq.pending.rescans import Rescans

    rescans = Rescans(spool, PendingIndex(), Pacing(), None, burst=False)
    rescans.remember("1000000000.0000000000000000001.0000000000000@x.json")
    assert rescans.from_listing("1000000000.0000000000000000001.0000000000000@x.json")
    spool.set_config("pending_shards", WIDTH)
    assert not rescans.from_listing("1000000000.0000000000000000001.0000000000000@x.json")
