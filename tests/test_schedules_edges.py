"""Schedules against hostile files, skewed clocks and careless operators: DST, a broken tz or
.last file, a schedule whose job is refused, clocks ahead, schedule files of untrusted uids.
(The schedules themselves: tests/test_schedules.py.)"""

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
@pytest.mark.review("service 1")
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
@pytest.mark.review("service 3")
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
@pytest.mark.review("service 5")
def test_a_last_slot_from_a_clock_ahead_does_not_suppress_slots_that_never_fired(spool):
    schedules = add(spool, cron="0 * * * *")
    # host A, its clock a day ahead (booted before NTP synced), fires "its" latest slot
    assert [f.created for f in schedules.fire_due(at("2025-11-02T10:00:30"))] == [True]
    # host B, on time: 01:00 on the 1st has no job, and no worker ever fired it
    fired = Schedules(spool).fire_due(at("2025-11-01T01:00:30"))
    assert [(f.job_id, f.created) for f in fired] == [("rep.20251101T0100Z", True)]


# 6. a schedule added while a worker evaluates is never seen by that worker ---------------------
@pytest.mark.review("service 6")
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
@pytest.mark.review("service 7")
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a file of another uid")
def test_a_schedule_file_of_an_untrusted_uid_is_not_fired(spool):
    add(spool)
    path = os.path.join(spool.root, "schedules", "rep.json")
    os.chown(path, 54321, 54321)  # a group member of a group_access spool, not in trusted_uids
    assert not spool.store.trusts_uid(54321)
    fired = Schedules(spool).fire_due(at("2025-11-01T00:05:00"))
    assert not any(f.created for f in fired)  # a dropped file of that uid would be quarantined


# 14. `schedule rm` cannot remove a schedule file it cannot read (and `schedule list` hides it) ---
@pytest.mark.review("service 14")
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
@pytest.mark.review("service 15")
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

