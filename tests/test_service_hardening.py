"""Running it as a service against hostile files, skewed clocks and careless operators: schedules,
retention, hooks, readiness, completion."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone

import pytest

from conftest import spoolq
from spoolq import Spool
from spoolq.running.schedules import Schedule, Schedules


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def add(spool: Spool, name: str = "rep", cron: str = "*/5 * * * *", *, created: str = "2025-11-01T00:00:30",
        job: dict | None = None, **kwargs) -> Schedules:
    spool.init()
    schedules = Schedules(spool)
    t = at(created)
    schedules.add(Schedule(name, cron, job or {"command": "true"}, created_at=t, active_from=t, **kwargs))
    return schedules


# 1. DST fall-back: the repeated hour's slots never fire ------------------------------------------

def test_slots_in_the_repeated_dst_hour_fire(spool):
    # New York falls back on 2025-11-02: 01:00-02:00 local happens twice (05:00-06:00 and
    # 06:00-07:00 UTC). Debian's cron (and cronsim forward) fire */5 in both hours.
    schedules = add(spool, tz="America/New_York")
    fired = []
    t = at("2025-11-02T05:00:00")
    while t <= at("2025-11-02T07:00:00"):
        fired += [f.job_id for f in schedules.fire_due(t) if f.created]
        t += 60
    assert "rep.20251102T0610Z" in fired  # 01:10 EST, the second 01:10
    assert len(fired) == 25  # 05:00 .. 07:00 every 5 minutes


def test_latest_slot_agrees_with_next_slot_in_the_repeated_hour():
    s = Schedule("r", "0 * * * *", {"command": "true"}, tz="America/New_York")
    assert s.next_slot(at("2025-11-02T05:59:00")) == at("2025-11-02T06:00:00")
    assert s.latest_slot(at("2025-11-02T06:30:00")) == at("2025-11-02T06:00:00")


# 2. a schedule file with a non-string tz: TypeError escapes, every schedule stops --------------

def _break_tz(spool: Spool, name: str) -> None:
    path = os.path.join(spool.root, "schedules", f"{name}.json")
    data = json.loads(open(path).read())
    data["tz"] = None
    with open(path + ".tmp", "w") as f:
        json.dump(data, f)
    os.rename(path + ".tmp", path)


def test_one_schedule_with_a_null_tz_does_not_stop_the_others(spool):
    add(spool, "aaa")
    add(spool, "zzz")
    _break_tz(spool, "aaa")
    fired = Schedules(spool).fire_due(at("2025-11-01T00:05:00"))  # raises TypeError
    assert [f.job_id for f in fired] == ["zzz.20251101T0005Z"]


def test_schedule_list_with_a_null_tz_is_not_a_traceback(spool, spool_dir):
    add(spool, "aaa")
    _break_tz(spool, "aaa")
    result = spoolq(spool_dir, "schedule", "list")
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode in (0, 1)


# 3. a schedule whose job cannot be enqueued stops every schedule after it -----------------------

def test_a_schedule_whose_job_is_refused_does_not_stop_the_others(spool, spool_dir):
    spool.init()
    r = spoolq(spool_dir, "schedule", "add", "aaa", "* * * * *", '{"command": "true", "after": ["nope"]}')
    assert r.returncode == 2 and "cannot wait for others" in r.stderr  # refused when added
    r = spoolq(spool_dir, "schedule", "add", "bbb", "* * * * *", "--cmd", "true")
    assert r.returncode == 0, r.stderr
    # And one edited by hand into a job that cannot be made: the others fire all the same.
    made = time.time() - 600
    with open(os.path.join(spool.layout.dir("schedules"), "aaa.json"), "w") as f:
        json.dump({"name": "aaa", "cron": "* * * * *", "job": {"command": 7}, "created_at": made,
                   "active_from": made}, f)
    fired = Schedules(spool).fire_due(time.time() + 120)
    assert any(f.name == "bbb" and f.created for f in fired)
    assert [f.error for f in fired if f.name == "aaa"][0]


# 4. a garbage .last: a schedule silenced for good, `schedule list` a traceback -----------------

def _write_last(spool: Spool, name: str, text: str) -> None:
    with open(os.path.join(spool.root, "schedules", f"{name}.last"), "w") as f:
        f.write(text)


def test_a_last_file_saying_inf_does_not_silence_the_schedule_for_good(spool):
    schedules = add(spool)
    _write_last(spool, "rep", "inf rep.x\n")
    assert [f.job_id for f in schedules.fire_due(at("2025-11-01T00:05:00"))] == ["rep.20251101T0005Z"]


@pytest.mark.parametrize("text", ["nan rep.x\n", "1e20 rep.x\n"])
def test_schedule_list_with_a_garbage_last_file_is_not_a_traceback(spool, spool_dir, text):
    add(spool)
    _write_last(spool, "rep", text)
    result = spoolq(spool_dir, "schedule", "list")
    assert "Traceback" not in result.stderr, result.stderr


# 5. a .last written by a host whose clock ran ahead silences the schedule on every host --------

def test_a_last_slot_from_a_clock_ahead_does_not_suppress_slots_that_never_fired(spool):
    schedules = add(spool, cron="0 * * * *")
    # host A, its clock a day ahead (booted before NTP synced), fires "its" latest slot
    assert [f.created for f in schedules.fire_due(at("2025-11-02T10:00:30"))] == [True]
    # host B, on time: 01:00 on the 1st has no job, and no worker ever fired it
    fired = Schedules(spool).fire_due(at("2025-11-01T01:00:30"))
    assert [(f.job_id, f.created) for f in fired] == [("rep.20251101T0100Z", True)]


# 6. a schedule added while a worker evaluates is never seen by that worker ---------------------

def test_a_schedule_added_during_a_workers_look_is_fired(spool, monkeypatch):
    from spoolq.running.duties import Duties

    add(spool, "yearly", cron="0 0 1 1 *")
    duties = Duties(spool, lambda _m: None, lambda: "")
    t = at("2025-11-01T00:10:00")
    real = Schedules.next_due

    def next_due_while_someone_adds(self, now):
        out = real(self, now)
        if not os.path.exists(os.path.join(spool.root, "schedules", "minutely.json")):
            # `schedule add` on another host lands between the look and the worker's stat
            Schedules(spool).add(Schedule("minutely", "* * * * *", {"command": "true"}, created_at=t, active_from=t))
        return out

    monkeypatch.setattr(Schedules, "next_due", next_due_while_someone_adds)
    duties.run(t)
    for k in range(1, 10):
        duties.run(t + 60 * k)
    assert any(v.id.startswith("minutely.") for v in spool.list_jobs())


# 7. a schedule file of an untrusted uid is fired: its command runs as the worker's user --------

@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a file of another uid")
def test_a_schedule_file_of_an_untrusted_uid_is_not_fired(spool):
    add(spool)
    path = os.path.join(spool.root, "schedules", "rep.json")
    os.chown(path, 54321, 54321)  # a group member of a group_access spool, not in trusted_uids
    assert not spool.store.trusts_uid(54321)
    fired = Schedules(spool).fire_due(at("2025-11-01T00:05:00"))
    assert not any(f.created for f in fired)  # a dropped file of that uid would be quarantined


# 8. a retention batch that fails leaves `behind` set: an idle worker retries without sleeping --

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


# 10. a hook that closes its output and hangs is never killed; the worker never stops -----------

def test_a_hook_that_redirects_its_output_is_still_bounded_by_hook_timeout(spool, tmp_path):
    import signal
    import subprocess

    from conftest import SPOOLQ

    pidfile = tmp_path / "hook.pid"
    # a usual hook shape: its output to a log of its own, then something that hangs (curl without -m)
    spool.set_config("on_done", f"echo $$ > {pidfile}; exec >/dev/null 2>&1; sleep 30")
    spool.set_config("hook_timeout", 0.5)
    spool.enqueue({"command": "true"})
    proc = subprocess.Popen([*SPOOLQ, "--spool", spool.root, "worker", "start", "--burst"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        proc.wait(timeout=8)  # the hook has 0.5 s; then it is killed and the burst ends
    except subprocess.TimeoutExpired:
        pytest.fail("worker start --burst still running 8 s later: it waits for a hook past hook_timeout")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if pidfile.exists():
            try:
                os.killpg(int(pidfile.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass


# 9. a retention batch is not bounded by its time when done/ holds many young jobs --------------

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


# 11. a hook killed by a real-time signal: a traceback from the hook thread, no log line --------

def test_a_hook_killed_by_a_realtime_signal_is_logged(spool):
    from spoolq.store.attempts_log import Fact
    from spoolq.running.hooks import Hooks

    spool.init()
    spool.set_config("on_done", "kill -40 $$")
    lines: list[str] = []
    hooks = Hooks(spool, lines.append)
    errors = []
    import threading
    old = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)
    try:
        hooks.after(Fact("j", "default", 1, "h", "w", 0, 0, 0, 0, "done", 0), "done")
        hooks.wait()
    finally:
        threading.excepthook = old
    assert errors == [], errors
    assert any("killed by signal" in line for line in lines), lines


# 12. completion lists all of pending/, not at most SCAN entries --------------------------------

def test_job_id_completion_reads_at_most_scan_entries(spool, monkeypatch):
    from spoolq.system import fsio
    from spoolq.cli import complete

    spool.init()
    for i in range(complete.SCAN + 3000):  # a backlog: names only, cheap to make
        open(os.path.join(spool.layout.pending, f"dropped-{i}.json"), "w").close()
    read = []
    real_listdir = fsio.listdir
    monkeypatch.setattr(fsio, "listdir", lambda path: read.append(len(names := real_listdir(path))) or names)
    real_scandir = os.scandir

    class Counting:
        def __init__(self, path):
            self.it = real_scandir(path)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.it.close()

        def __iter__(self):
            for entry in self.it:
                read.append(1)
                yield entry

    monkeypatch.setattr(os, "scandir", Counting)
    spool.views.some_ids("x", complete.LIMIT, complete.SCAN)
    assert sum(read) <= complete.SCAN, f"{sum(read)} directory entries read"


# 13. on a full disk, retention cannot make its lock (not made with the layout): it never frees space

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


# 14. `schedule rm` cannot remove a schedule file it cannot read (and `schedule list` hides it) ---

@pytest.mark.parametrize("make", ["garbage", "symlink", "huge"])
def test_schedule_rm_removes_a_broken_schedule(spool, spool_dir, make):
    spool.init()
    os.makedirs(os.path.join(spool.root, "schedules"), exist_ok=True)
    path = os.path.join(spool.root, "schedules", "broken.json")
    if make == "garbage":
        open(path, "w").write("{not json")
    elif make == "symlink":
        os.symlink("/etc/hostname", path)
    else:
        open(path, "wb").write(b" " * (300 * 1024))
    result = spoolq(spool_dir, "schedule", "rm", "broken")
    assert result.returncode == 0 and not os.path.lexists(path), result.stderr


# 15. a six-field expression (seconds) is accepted, though CRON is "five fields" -----------------

def test_schedule_add_refuses_a_six_field_expression(spool, spool_dir):
    spool.init()
    result = spoolq(spool_dir, "schedule", "add", "fast", "*/20 * * * * *", "--cmd", "true")
    if result.returncode == 0:  # what it then does: three slots a minute, one id a minute
        schedules = Schedules(spool)
        t = (time.time() // 60 + 2) * 60
        created = [f.job_id for k in (0, 20, 40) for f in schedules.fire_due(t + k) if f.created]
        assert len(created) == 3, f"accepted; fires {created} for the slots :00, :20 and :40"
    assert result.returncode == 2, result.stdout  # README: five fields; a bad one exits 2


def test_catch_up_none_skip_by_a_host_ahead_does_not_cancel_an_on_time_host(spool):
    schedules = add(spool, cron="0 * * * *", catch_up="none")
    # host A, 90 s ahead, was busy at the slot: at its 01:01:10 (real 00:59:40) it calls the slot late
    assert [f.skipped for f in schedules.fire_due(at("2025-11-01T01:01:10"))] == [True]
    # host B, on time and idle, looks at 01:00:00 sharp: the slot is due and never fired
    fired = Schedules(spool).fire_due(at("2025-11-01T01:00:00"))
    assert [(f.job_id, f.created) for f in fired] == [("rep.20251101T0100Z", True)]


# 17. a worker catching up on retention in its idle time does not see new jobs until its next poll

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
