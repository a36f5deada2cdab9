"""Wake-ups: events are fast and never delayed by claims; a rescan covers what events miss."""

from __future__ import annotations

import os
import threading
import time

import pytest

from conftest import wait_for
from spoolq import Spool
from spoolq.system import watch as watch_mod
from spoolq.running import worker as worker_mod
from spoolq.pending.index import PendingIndex
from spoolq.format.layout import pending_name


def _drop(directory: str, name: str) -> None:
    staged = os.path.join(directory, f".{name}")
    with open(staged, "w") as f:
        f.write("{}")
    os.rename(staged, os.path.join(directory, name))


def test_a_move_out_of_pending_does_not_delay_the_next_arrival(tmp_path):
    pending, elsewhere = tmp_path / "pending", tmp_path / "processing"
    pending.mkdir()
    elsewhere.mkdir()
    wake = watch_mod.Wakeups([str(pending)])
    try:
        assert wake.mode == "events"
        _drop(str(pending), "first.json")
        wait_for(lambda: any(n == "first.json" for _, n in wake.wait(1)), 5, "the first arrival")
        # A claim: the job leaves the watched directory for an unwatched one. watchdog would hold
        # the unpaired IN_MOVED_FROM for 0.5 s and every event behind it.
        os.rename(pending / "first.json", elsewhere / "first.json")
        started = time.monotonic()
        _drop(str(pending), "second.json")
        names: list[str] = []
        while "second.json" not in names and time.monotonic() - started < 2:
            names += [n for _, n in wake.wait(2)]
        assert "second.json" in names
        assert time.monotonic() - started < 0.25, "the arrival waited behind the claim's move"
    finally:
        wake.close()


def _names_within(wake: watch_mod.Wakeups, seconds: float, want: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """What `wake` reports until every pair in `want` came, or `seconds` pass."""
    seen: set[tuple[str, str]] = set()
    deadline = time.monotonic() + seconds
    while not want <= seen and time.monotonic() < deadline:
        seen.update(wake.wait(deadline - time.monotonic()))
    return seen


def test_a_new_shard_is_watched_and_what_landed_in_it_first_is_reported(tmp_path):
    """pending/'s shards appear while a worker waits: the shard is watched from its creation,
    and a name that landed before the watch came (a shard's first job) is reported too."""
    pending = tmp_path / "pending"
    pending.mkdir()
    (pending / "=100").mkdir()  # a shard from before the worker started
    wake = watch_mod.Wakeups([str(pending)], recursive=(str(pending),))
    try:
        assert wake.mode == "events"
        _drop(str(pending / "=100"), "old.json")
        shard = pending / "=200"
        staged = tmp_path / "=200"  # made elsewhere with its first job, then renamed in: no event inside it
        staged.mkdir()
        (staged / "first.json").write_text("{}")
        os.rename(staged, shard)
        want = {(str(pending / "=100"), "old.json"), (str(shard), "first.json")}
        assert want <= _names_within(wake, 5, want)
        _drop(str(shard), "second.json")  # and from now on, by its own events
        assert (str(shard), "second.json") in _names_within(wake, 5, {(str(shard), "second.json")})
    finally:
        wake.close()


def test_a_poke_wakes_the_waiter_and_a_closed_source_ignores_one(tmp_path):
    for events in (True, False):
        wake = watch_mod.Wakeups([str(tmp_path)], events=events)
        assert wake.mode == ("events" if events else "none")
        started = time.monotonic()
        assert wake.wait(0.05) == [] and time.monotonic() - started >= 0.04  # nothing: the timeout
        threading.Timer(0.05, wake.poke).start()
        started = time.monotonic()
        assert wake.wait(5) == [watch_mod.WAKE]
        assert time.monotonic() - started < 2
        for _ in range(100_000):  # more pokes than a pipe holds: never blocks, one wake-up waits
            wake.poke()
        assert wake.wait(0) == [watch_mod.WAKE] and wake.wait(0) == []
        wake.close()
        wake.poke()  # a stop signal after the worker closed it: nothing happens
        wake.close()


def test_a_job_inherits_none_of_the_wake_up_descriptors(tmp_path):
    wake = watch_mod.Wakeups([str(tmp_path)])
    try:
        fds = [wake._poke_r, wake._poke_w, wake._inotify.fd]
        assert not any(os.get_inheritable(fd) for fd in fds)
    finally:
        wake.close()


def test_a_directory_that_goes_away_is_reported_once_and_then_polled(tmp_path):
    watched = tmp_path / "control"
    watched.mkdir()
    wake = watch_mod.Wakeups([str(watched)])
    try:
        watched.rename(tmp_path / "elsewhere")
        deadline = time.monotonic() + 5
        while wake.failure is None and time.monotonic() < deadline:
            wake.wait(deadline - time.monotonic())
        reason = wake.check()
        assert reason is not None and "removed or moved" in reason and str(watched) in reason
        assert wake.mode == "polling" and wake.check() is None  # said once
        threading.Timer(0.05, wake.poke).start()
        assert wake.wait(5) == [watch_mod.WAKE]  # pokes and timeouts still work
    finally:
        wake.close()


class _Deaf(watch_mod.Wakeups):
    """A wake-up source that lost every event: it watches a directory nothing is written to."""

    def __init__(self, _directories, **kw):
        super().__init__([os.environ["SPOOLQ_TEST_DEAF_DIR"]], **kw)


def _run_worker_in_thread(spool: Spool) -> tuple[worker_mod.Worker, threading.Thread]:
    w = worker_mod.Worker(spool, log=lambda _m: None)
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    wait_for(lambda: w.owner and w._wake is not None, 10, "the worker to start")
    return w, t


def test_a_lost_event_is_recovered_by_the_rescan(spool, tmp_path, monkeypatch, cli):
    deaf = tmp_path / "deaf"
    deaf.mkdir()
    monkeypatch.setenv("SPOOLQ_TEST_DEAF_DIR", str(deaf))
    monkeypatch.setattr(worker_mod.watch, "Wakeups", _Deaf)
    assert cli("config", "set", "poll_interval", "0.3").exit_code == 0
    w, t = _run_worker_in_thread(spool)
    try:
        time.sleep(0.05)  # let the worker reach its idle wait; the rescan must find the job anyway
        marker = tmp_path / "ran"
        job = spool.enqueue({"command": f": > {marker}"})
        started = time.monotonic()
        wait_for(lambda: spool.find(job.id).state == "done", 5, "the rescan to find the job")
        assert time.monotonic() - started < 2.5, "a lost event must cost about one poll_interval, no more"
        assert marker.exists()
    finally:
        w.request_stop()
        t.join(10)
    assert not t.is_alive()


def test_an_idle_worker_picks_up_a_published_job_quickly(spool, tmp_path):
    w, t = _run_worker_in_thread(spool)
    try:
        wait_for(lambda: w.spool.workers(), 5, "registration")
        time.sleep(0.1)  # idle: the thing measured is a wake-up from the event, not the first scan
        fifo = tmp_path / "started"
        os.mkfifo(fifo)
        job = spool.make_job({"command": f": > {fifo}"})
        staged = os.path.join(spool.layout.pending, ".staged")
        with open(staged, "wb") as f:
            f.write(job.to_json())
        os.close(os.open(spool.layout.id_marker(job.id), os.O_CREAT | os.O_WRONLY))
        published = time.monotonic()
        os.rename(staged, os.path.join(spool.layout.pending, pending_name(job.id, 0, job.seq, None)))
        fd = os.open(fifo, os.O_RDONLY)  # returns when the job's shell opens it for writing
        latency = time.monotonic() - published
        os.close(fd)
        assert latency < 0.5, f"pickup took {latency * 1000:.0f} ms"
    finally:
        w.request_stop()
        t.join(10)


def test_the_index_pops_in_priority_then_fifo_order_and_a_rescan_adds_only_new_names():
    index = PendingIndex()
    names = [pending_name("low", -5, 1, None), pending_name("a", 0, 2, None), pending_name("b", 0, 3, None),
             pending_name("high", 7, 4, None), pending_name("later", 9, 5, 4_000_000_000)]
    for name in reversed(names[1:]):
        index.add(name)
    index.rescan(names + [".staged.tmp", "dropped.json"])
    assert len(index) == 5 and index.dropins_due(0.0) == ["dropped.json"]
    order = []
    while (name := index.pop_ready(now_ms=3_000_000_000_000)) is not None:
        order.append(name.split("@")[1].split(".")[0])
    assert order == ["high", "a", "b", "low"]
    assert index.next_due_ms() == 4_000_000_000_000
    assert index.pop_ready(now_ms=4_000_000_000_000).split("@")[1] == "later.json"


@pytest.mark.parametrize("backlog", [0, 20_000])
def test_a_rescan_stays_cheap_with_a_backlog(spool, backlog):
    """The rescan that covers lost events lists pending/ and parses names; it opens no job file."""
    jobs = [spool.make_job({"command": "true"}) for _ in range(backlog)]
    if jobs:
        spool.enqueue_many(jobs)
    index = PendingIndex()
    started = time.process_time()
    index.rescan(spool.views.pending_entries())
    index.rescan(spool.views.pending_entries())
    assert len(index) == backlog
    assert time.process_time() - started < 1.0


def test_a_burst_worker_starts_no_observer_and_still_takes_a_drop_in_that_is_being_written(tmp_path):
    """--burst leaves when nothing is ready, so it never waits for an arrival: it starts no event
    observer (watchdog is never imported). A dropped file still being written (too new to judge)
    is waited for by timeouts alone, and run."""
    import subprocess
    import sys

    root = tmp_path / "s"
    spool = Spool(str(root))
    spool.init()
    done_marker = tmp_path / "ran"
    spool.enqueue({"id": "ready", "command": "true"})
    with open(os.path.join(spool.layout.pending, "late.json"), "w") as f:  # written in place, just now
        f.write('{"id": "late", "command": ": > %s"}' % done_marker)
    probe = ("import sys\nfrom spoolq import Spool\nfrom spoolq.running.worker import Worker\n"
             "code = Worker(Spool(sys.argv[1]), burst=True).run()\n"
             "print('watchdog' in sys.modules, code)\n")
    out = subprocess.run([sys.executable, "-c", probe, str(root)], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "0"], out.stderr
    assert "--burst: runs what is ready and the retries of what it ran, then leaves" in out.stderr
    assert {spool.find("ready").state, spool.find("late").state} == {"done"}
    assert done_marker.exists()


# ---- polling: one stat when nothing changed ---------------------------------------------------


def test_a_listing_is_needed_only_when_the_directory_changed_or_has_not_settled(tmp_path):
    from spoolq.pending.index import ListingGate

    d = tmp_path / "pending"
    d.mkdir()
    gate = ListingGate()
    t = 1000.0
    assert gate.should_list(str(d), t)  # nothing known yet
    gate.listed(t)
    # Within SAME_TICK of first seeing this stamp, a change in the same second could hide behind it.
    assert gate.should_list(str(d), t + 1)
    gate.listed(t + 1)
    assert gate.should_list(str(d), t + 2.5)
    gate.listed(t + 2.5)  # taken once the stamp had settled: it saw everything the stamp stands for
    assert not gate.should_list(str(d), t + 3) and not gate.should_list(str(d), t + 60)
    (d / "x.json").write_text("{}")  # a name arrives
    assert gate.should_list(str(d), t + 61)
    gate.listed(t + 61)
    assert gate.should_list(str(d), t + 62)  # not settled yet
    os.unlink(d / "x.json")  # a name goes
    assert gate.should_list(str(d), t + 63.5)
    assert (gate.listings, gate.skipped) == (4, 2)


class _Polling(watch_mod.Wakeups):
    """No file-system events: as on a network file system, polling is what finds jobs."""

    def __init__(self, directories, *, events=True, recursive=()):
        super().__init__(directories, events=False)


def test_an_idle_polling_worker_lists_pending_only_until_it_settles(spool, monkeypatch):
    spool.set_config("poll_interval", 0.1)
    monkeypatch.setattr(worker_mod.watch, "Wakeups", _Polling)
    log: list[str] = []
    w = worker_mod.Worker(spool, log=log.append)
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    try:
        wait_for(lambda: w.owner, 5, "the worker to register")
        time.sleep(3.5)  # 35 polls: those in the first 2 s list, the rest are one stat each
        job = spool.enqueue({"command": "true"})
        wait_for(lambda: spool.find(job.id).state == "done", 5, "the new job to run, found by a poll")
    finally:
        w.request_stop()
        t.join(10)
    line = next(m for m in log if "stopped (" in m)
    listings = int(line.split("listed pending/ ")[1].split()[0])
    stats = int(line.split(" times, ")[1].split()[0])
    assert listings <= 30 and stats >= 10, line


def test_a_rescan_forgets_names_other_workers_took():
    """A name gone from the listing costs no failed claim: the index forgets it."""
    index = PendingIndex()
    names = [pending_name(f"j{i}", 0, i, None) for i in range(4)] + [pending_name("later", 0, 9, 4_000_000_000)]
    index.rescan(names)
    index.rescan([names[2]])  # the others were claimed elsewhere
    assert index.pop_ready(1) == names[2] and index.pop_ready(1) is None
    assert index.next_due_ms() is None and len(index) == 0
    index.rescan(names[:2])  # they may come back (a name is never reused in practice): then they count again
    assert [index.pop_ready(1), index.pop_ready(1), index.pop_ready(1)] == [names[0], names[1], None]


def test_a_spread_pick_stays_within_the_first_names_of_the_head_priority():
    index = PendingIndex()
    high = [pending_name(f"h{i}", 5, i, None) for i in range(20)]
    low = [pending_name("low", 0, 0, None)]
    index.rescan(high + low)
    popped = []
    while (name := index.pop_ready(1, 8)) is not None:
        popped.append(name)
    assert sorted(popped) == sorted(high + low) and popped[-1] == low[0]  # each once; priority first
    first = PendingIndex()
    first.rescan(high)
    picked = first.pop_ready(1, 8)
    assert picked in high[:8]
    assert first.pop_ready(1) == min(set(high) - {picked})  # without a spread: the head again


# ---- from an adversarial review of the worker reading inotify itself ---------------------------


def test_a_shard_moved_out_and_back_in_is_still_watched(tmp_path):
    """An operator parks a shard outside pending/ and puts it back (or a directory already in
    pending/ is renamed to a shard's name): arrivals in it must still wake the worker."""
    pending, hold = tmp_path / "pending", tmp_path / "hold"
    pending.mkdir()
    hold.mkdir()
    (pending / "=100").mkdir()
    (pending / ".stage").mkdir()
    wake = watch_mod.Wakeups([str(pending)], recursive=(str(pending),))
    try:
        assert wake.mode == "events"
        os.rename(pending / "=100", hold / "=100")
        os.rename(hold / "=100", pending / "=100")
        os.rename(pending / ".stage", pending / "=200")
        wake.wait(0.2)  # the moves' events are read
        for shard in (str(pending / "=100"), str(pending / "=200")):
            _drop(shard, "job.json")
            assert (shard, "job.json") in _names_within(wake, 2, {(shard, "job.json")})
    finally:
        wake.close()


def test_a_shard_made_while_the_event_queue_overflowed_is_watched(tmp_path):
    """While the worker runs a long job nobody reads inotify; a burst of arrivals overflows the
    kernel's queue and the new shard's IN_CREATE is among the events lost. The shard is found
    all the same, with what landed in it."""
    pending = tmp_path / "pending"
    pending.mkdir()
    wake = watch_mod.Wakeups([str(pending)], recursive=(str(pending),))
    try:
        with open("/proc/sys/fs/inotify/max_queued_events") as f:
            limit = int(f.read())
        for i in range(limit // 2 + 100):  # IN_CREATE and IN_CLOSE_WRITE each: the queue overflows
            os.close(os.open(pending / f"j{i}", os.O_CREAT | os.O_WRONLY))
        (pending / "=300").mkdir()
        _drop(str(pending / "=300"), "early.json")
        seen = []
        while batch := wake.wait(0.2):  # the worker is back from its job: it reads the backlog
            seen += batch
        assert watch_mod.WAKE in seen  # the overflow was noticed
        shard = str(pending / "=300")
        assert (shard, "early.json") in seen
        _drop(shard, "job.json")
        assert (shard, "job.json") in _names_within(wake, 2, {(shard, "job.json")})
    finally:
        wake.close()


def test_an_arrival_read_together_with_a_lost_watch_is_still_reported(tmp_path):
    pending, control = tmp_path / "pending", tmp_path / "control"
    pending.mkdir()
    control.mkdir()
    wake = watch_mod.Wakeups([str(pending), str(control)])
    try:
        _drop(str(pending), "job.json")
        control.rename(tmp_path / "away")  # both events are read in the same turn
        deadline = time.monotonic() + 5
        seen: list[tuple[str, str]] = []
        while wake.failure is None and time.monotonic() < deadline:
            seen += wake.wait(deadline - time.monotonic())
        assert wake.failure is not None and "removed or moved" in wake.failure
        assert (str(pending), "job.json") in seen
    finally:
        wake.close()


def test_waiting_works_with_descriptors_numbered_above_1023(tmp_path):
    """A worker started with many descriptors open (inherited, or a process embedding it) is
    given numbers above 1023, which select() refuses: it must wait, not spin, and hear events."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard == resource.RLIM_INFINITY or hard >= 1100, "the test needs 1,100 descriptors"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1100), hard))
    held = []
    try:
        while not held or held[-1] < 1030:
            held.append(os.open(os.devnull, os.O_RDONLY))
        wake = watch_mod.Wakeups([str(tmp_path)])
        try:
            assert wake._poke_r > 1023 and wake._inotify.fd > 1023
            started = time.monotonic()
            assert wake.wait(0.2) == []  # nothing happened: the timeout, not a spin
            assert time.monotonic() - started >= 0.15
            _drop(str(tmp_path), "job.json")
            assert wake.mode == "events" and wake.check() is None
            assert (str(tmp_path), "job.json") in _names_within(wake, 2, {(str(tmp_path), "job.json")})
        finally:
            wake.close()
        # A job's pipe and pidfd get such numbers too: the worker runs it and reads its output.
        from spoolq.system import runner

        got = bytearray()
        outcome = runner.run("echo hello", cwd=None, env=dict(os.environ), timeout=10, output=got.extend)
        assert outcome.ok and bytes(got) == b"hello\n"
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
