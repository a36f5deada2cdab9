"""The workers of one `worker start` take turns listing pending/ and read each other's listing."""

from __future__ import annotations

import os
import re
import signal
import time

from hypothesis import given, strategies as st

from conftest import wait_for
from spoolq.pending.listing import Listings, SharedListing, Snapshot, decode, encode, list_and_share

# Names as os.listdir gives them: any bytes but NUL and "/", undecodable ones as surrogates.
names = st.lists(st.binary(min_size=1, max_size=40).filter(lambda b: b"\0" not in b and b"/" not in b)
                 .map(os.fsdecode), max_size=30)


@given(names=names, covered=st.booleans())
def test_a_snapshot_round_trips_any_name(names, covered):
    snapshot = Snapshot(7, 12.5, 0.25, covered, (1, 2, 3, 4), names)
    assert decode(encode(snapshot)) == snapshot


def test_a_torn_or_foreign_snapshot_is_ignored():
    whole = encode(Snapshot(1, 3.0, 0.1, True, None, ["a.json", "b c.json", "new\nline.json"]))
    assert decode(whole) is not None
    assert [cut for cut in range(len(whole)) if decode(whole[:cut]) is not None] == []
    for foreign in (b"", b"\n", b"spoolq-listing 2 1 1 1 1 - 0 0\n", b"spoolq-listing 1 x 1 1 1 - 0 0\n",
                    whole.replace(b" 3 ", b" 4 ", 1), whole + b"\0extra"):
        assert decode(foreign) is None, foreign


def lister(names: list[str], calls: list[int]):
    def list_names() -> list[str]:
        calls.append(1)
        return list(names)
    return list_names


def test_a_sibling_reads_the_listing_it_did_not_take_and_lists_when_it_has_used_it():
    shared = SharedListing.create()
    assert shared is not None
    calls: list[int] = []
    a, b = Listings(lister(["x.json"], calls), shared), Listings(lister(["x.json"], calls), shared)
    first, theirs = a.take(time.monotonic(), 1.0, (1,), lambda _t: True)
    assert (theirs, first.names, first.serial, len(calls)) == (False, ["x.json"], 1, 1)
    second, theirs = b.take(time.monotonic(), 1.0, (1,), lambda _t: True)
    assert (theirs, second.serial, len(calls)) == (True, 1, 1)  # no listing: A's served
    third, theirs = b.take(time.monotonic(), 1.0, (1,), lambda _t: True)
    assert (theirs, third.serial, len(calls)) == (False, 2, 2)  # B had used it: B lists, for both
    fourth, theirs = a.take(time.monotonic(), 1.0, (1,), lambda _t: True)
    assert (theirs, len(calls)) == (True, 2)  # A had not used B's listing


def test_names_noted_after_a_listing_began_are_given_back_to_the_rescan():
    listings = Listings(lambda: [], SharedListing.create())
    listings.noted("before.json")
    started = time.monotonic()
    listings.noted("after.json")
    assert listings.noted_since(started) == ["after.json"]
    for i in range(30_000):  # bounded, however many arrive
        listings.noted(f"{i}.json")
    assert 0 < len(listings.noted_since(0.0)) <= 20_000


def test_a_listing_older_than_the_age_asked_for_is_not_taken():
    shared = SharedListing.create()
    calls: list[int] = []
    a, b = Listings(lister([], calls), shared), Listings(lister([], calls), shared)
    a.take(time.monotonic(), 1.0, None, lambda _t: False)
    _, theirs = b.take(time.monotonic(), 0.0, None, lambda _t: False)  # a burst worker about to leave
    assert not theirs and len(calls) == 2


def test_a_sibling_killed_while_listing_holds_up_no_one():
    shared = SharedListing.create()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            with shared.listing_turn():
                whole = encode(Snapshot(5, time.monotonic(), 0.1, True, None, ["gone.json"] * 100))
                os.pwrite(shared.fd, whole[: len(whole) // 2], 0)  # killed half-way through publishing
                os.write(ready_w, b"x")
                time.sleep(60)
        finally:
            os._exit(0)
    assert os.read(ready_r, 1) == b"x"
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    calls: list[int] = []
    started = time.monotonic()
    snapshot, theirs = Listings(lister(["mine.json"], calls), shared).take(time.monotonic(), 60.0, None,
                                                                           lambda _t: True)
    assert (theirs, snapshot.names, snapshot.serial) == (False, ["mine.json"], 1)  # the torn one was not read
    assert time.monotonic() - started < 5


def test_the_lock_makes_a_sibling_wait_for_the_listing_in_progress_and_take_it():
    shared = SharedListing.create()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            def slow() -> Snapshot:
                os.write(go_w, b"x")  # holding the turn now
                time.sleep(0.5)
                return Snapshot(0, time.monotonic(), 0.5, True, None, ["slow.json"])
            list_and_share(shared, lambda _s: False, slow)
        finally:
            os._exit(0)
    assert os.read(go_r, 1) == b"x"
    calls: list[int] = []
    snapshot, theirs = Listings(lister(["never.json"], calls), shared).take(time.monotonic(), 60.0, None,
                                                                            lambda _t: True)
    os.waitpid(pid, 0)
    assert (theirs, snapshot.names, calls) == (True, ["slow.json"], [])


STOP = re.compile(r"stopped \(claimed (\d+) jobs?.*?(\d+) listings taken from sibling workers[;)]")


def test_the_workers_of_one_start_share_listings_and_run_each_job_once(spool, workers, tmp_path):
    spool.set_config("poll_interval", 0.2)
    w = workers(3)
    jobs = []
    for i in range(60):  # a trickle: every claim and arrival changes pending/, so polls list it
        jobs.append(spool.enqueue({"command": f"echo {i} >> {tmp_path}/ran"}).id)
        time.sleep(0.02)
    wait_for(lambda: all(spool.find(j).state == "done" for j in jobs), 30, "every job to run")
    out = w.stop()
    stops = STOP.findall(out)
    assert len(stops) == 3, out
    assert sum(int(claimed) for claimed, _ in stops) == 60
    assert sum(int(shared) for _, shared in stops) > 0, out
    ran = sorted(int(line) for line in (tmp_path / "ran").read_text().split())
    assert ran == list(range(60))  # each exactly once


def test_jobs_never_inherit_the_shared_listing(spool, workers, tmp_path):
    w = workers(2)
    job = spool.enqueue({"command": f"for f in /proc/$$/fd/*; do readlink $f; done > {tmp_path}/fds; true"})
    wait_for(lambda: spool.find(job.id).state == "done", 15, "the job to run")
    w.stop()
    fds = (tmp_path / "fds").read_text()
    assert "/dev/null" in fds or "pipe:" in fds  # it did list its descriptors
    assert "spoolq-listing" not in fds
