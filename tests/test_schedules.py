"""Periodic schedules: each slot fires exactly once across workers and hosts, driven by a clock
passed in; catch-up after no worker ran; pause and resume; the CLI; and one real minute."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from datetime import datetime, timezone

import pytest

import dfs
from conftest import SPOOLQ, wait_for
from spoolq import Spool
from spoolq.running.fired_slots import RETAIN
from spoolq.running.schedules import LATE_LIMIT, Schedule, Schedules, slot_id
from test_cli import clean
import test_hosts

safe_rig = test_hosts.safe_rig  # the two-host rigs (a fixture)


def at(text: str) -> float:
    """An ISO time (UTC) as epoch seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def add(spool: Spool, name: str = "rep", cron: str = "*/5 * * * *", *, created: str = "2026-01-01T00:00:30",
        **kwargs) -> Schedules:
    spool.init()
    schedules = Schedules(spool)
    t = at(created)
    schedules.add(Schedule(name, cron, {"command": "true"}, created_at=t, active_from=t, **kwargs))
    return schedules


def job_ids(spool: Spool) -> list[str]:
    return sorted(v.id for v in spool.list_jobs())


def test_each_slot_fires_once_at_its_time_and_never_again(spool):
    schedules = add(spool)
    assert schedules.fire_due(at("2026-01-01T00:04:59")) == []  # the first slot after creation is 00:05
    fired = schedules.fire_due(at("2026-01-01T00:05:00"))
    assert [(f.job_id, f.created) for f in fired] == [("rep.20260101T0005Z", True)]
    for t in ("2026-01-01T00:05:01", "2026-01-01T00:09:59"):
        assert schedules.fire_due(at(t)) == []
    assert [f.job_id for f in schedules.fire_due(at("2026-01-01T00:10:30"))] == ["rep.20260101T0010Z"]
    assert job_ids(spool) == ["rep.20260101T0005Z", "rep.20260101T0010Z"]
    job = spool.find("rep.20260101T0010Z").to_dict()
    assert job["schedule"] == "rep" and job["slot"] == "2026-01-01T00:10:00.000Z"
    assert schedules.last("rep") == (at("2026-01-01T00:10"), "rep.20260101T0010Z")


def test_fire_now_makes_one_job_a_minute_and_no_slot_fires_twice(spool):
    schedules = add(spool, cron="*/5 * * * *")
    first = schedules.fire_now("rep", at("2026-01-01T00:05:10"))  # the minute of a slot of its own
    assert (first.job_id, first.created) == ("rep.20260101T0005Z", True)
    assert not schedules.fire_now("rep", at("2026-01-01T00:05:50")).created  # pressed again in the minute
    fired = schedules.fire_due(at("2026-01-01T00:05:55"))  # a worker fires that slot: the job is there
    assert [(f.job_id, f.created) for f in fired] == [("rep.20260101T0005Z", False)]
    assert schedules.fire_due(at("2026-01-01T00:06:00")) == []
    again = schedules.fire_now("rep", at("2026-01-01T00:05:58"))  # its marker says the minute fired
    assert not again.created and job_ids(spool) == ["rep.20260101T0005Z"]
    assert spool.find("rep.20260101T0005Z").to_dict()["schedule"] == "rep"


def test_fire_now_leaves_a_slot_still_due_to_fire(spool):
    """Fire now marks no slot: a marker of its minute would count as a later slot fired, and the
    slot a worker has not fired yet (none ran) would never fire."""
    schedules = add(spool, cron="0 * * * *")
    assert schedules.fire_now("rep", at("2026-01-01T01:07:00")).created
    fired = schedules.fire_due(at("2026-01-01T01:08:00"))  # the 01:00 slot, caught up
    assert [(f.job_id, f.created) for f in fired] == [("rep.20260101T0100Z", True)]
    assert job_ids(spool) == ["rep.20260101T0100Z", "rep.20260101T0107Z"]


def test_a_slot_missed_while_no_worker_ran_fires_once_not_once_per_slot(spool):
    schedules = add(spool)
    schedules.fire_due(at("2026-01-01T00:05:00"))
    fired = schedules.fire_due(at("2026-01-01T03:02:00"))  # 35 slots passed: only the latest fires
    assert [(f.job_id, f.created) for f in fired] == [("rep.20260101T0300Z", True)]
    assert job_ids(spool) == ["rep.20260101T0005Z", "rep.20260101T0300Z"]


def test_catch_up_none_skips_a_late_slot_and_fires_the_next(spool):
    schedules = add(spool, catch_up="none")
    skipped = schedules.fire_due(at("2026-01-01T00:05:00") + LATE_LIMIT + 1)
    assert [(f.job_id, f.created, f.skipped) for f in skipped] == [("rep.20260101T0005Z", False, True)]
    later = schedules.fire_due(at("2026-01-01T00:07"))  # skipped again, not recorded: a host whose clock
    assert [f.skipped for f in later] == [True] and job_ids(spool) == []  # is behind may still fire it
    assert [f.job_id for f in schedules.fire_due(at("2026-01-01T00:10:02"))] == ["rep.20260101T0010Z"]


def test_a_purged_slot_is_never_fired_again(spool):
    schedules = add(spool)
    schedules.fire_due(at("2026-01-01T00:05:00"))
    assert spool.cancel(["rep.20260101T0005Z"])[0].ok
    assert spool.purge_ids(["rep.20260101T0005Z"]) == {"rep.20260101T0005Z": None}
    assert schedules.fire_due(at("2026-01-01T00:07")) == [] and job_ids(spool) == []


def purge(spool: Spool, job_id: str) -> None:
    """The slot's job gone as retention takes it after keep_done: finished (cancelled here) and
    purged, its id free again."""
    assert spool.cancel([job_id])[0].ok
    assert spool.purge_ids([job_id]) == {job_id: None}


FIRE_AS_HOST = """
import sys, time
from spoolq import Spool
from spoolq.running.schedules import Schedules
print(" ".join(f.job_id for f in Schedules(Spool(sys.argv[1])).fire_due(time.time()) if f.created))
"""


def fire_as_host(spool: Spool, tmp_path, clock: str | float) -> list[str]:
    """A process whose clock reads `clock` (skewed as tests/dfs.py skews a host's) fires the due
    slots; the ids of the jobs it created."""
    clock = at(clock) if isinstance(clock, str) else clock
    env = {**os.environ, **dfs.skewed_python(clock - time.time(), tmp_path / f"skew{clock:.0f}")}
    done = subprocess.run([SPOOLQ[0], "-c", FIRE_AS_HOST, spool.root], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_a_purged_slot_never_fires_again_on_a_host_whose_clock_is_behind(spool, tmp_path):
    """November's slot fired and purged, December's fired: a host whose clock reads 150 s before
    December's slot (or one whose clock stepped back) finds November's latest, and must not fire it."""
    add(spool, cron="@monthly", created="2026-10-15T00:00")
    assert fire_as_host(spool, tmp_path, "2026-11-01T00:00:05") == ["rep.20261101T0000Z"]
    purge(spool, "rep.20261101T0000Z")
    assert fire_as_host(spool, tmp_path, "2026-12-01T00:00:05") == ["rep.20261201T0000Z"]
    assert fire_as_host(spool, tmp_path, at("2026-12-01T00:00") - 150) == []
    assert fire_as_host(spool, tmp_path, at("2026-12-01T00:00") - 3600) == []
    assert job_ids(spool) == ["rep.20261201T0000Z"]


@pytest.mark.parametrize("skew", [30, -30, 120, -150, 200, -200])
def test_two_hosts_with_skewed_clocks_fire_each_slot_once_though_every_job_is_purged(spool, skew):
    """An on-time host and one `skew` seconds off fire a minutely schedule for six minutes; each
    slot's job is purged as soon as it is made (keep_done at its smallest). Every slot fires once
    (but for those a host ahead jumps over when it starts, as any worker that starts late does)."""
    schedules = add(spool, cron="* * * * *", created="2026-01-01T00:00")
    made = []
    start = at("2026-01-01T00:10:03")
    for k in range(36):
        for clock in (start + 10 * k, start + 10 * k + skew):
            for fired in schedules.fire_due(clock):
                if fired.created:
                    made.append(fired.job_id)
                    purge(spool, fired.job_id)
    assert len(made) == len(set(made)), sorted(made)
    slots = sorted(datetime.strptime(m, "rep.%Y%m%dT%H%MZ").replace(tzinfo=timezone.utc).timestamp() for m in made)
    assert slots[-1] - slots[1] == 60 * (len(slots) - 2)  # none missed since a host ahead made its first jump


@pytest.mark.slow
def test_a_host_hours_behind_fires_no_slot_again_though_markers_are_pruned(spool):
    """Markers younger than RETAIN on the file system's clock, and the two newest, are kept: a
    host an hour or two behind finds its latest slot fired, or a later one within HORIZON of it."""
    schedules = add(spool, cron="* * * * *", created="2026-01-01T00:00")
    start = at("2026-01-01T00:00:03")
    for k in range(150):  # two and a half hours on time, every job purged at once
        for f in schedules.fire_due(start + 60 * k, fs_now=start + 60 * k):
            purge(spool, f.job_id)
    end = start + 60 * 149
    assert len(os.listdir(os.path.join(spool.layout.dir("schedules"), "rep.fired"))) == RETAIN // 60
    for behind in (200, 3600, 7200, RETAIN):
        assert schedules.fire_due(end - behind, fs_now=end) == [], behind
    assert job_ids(spool) == []


def test_a_fixed_time_fires_once_through_both_daylight_saving_changes(spool):
    """01:30 comes twice on New York's fall-back night: it fires once, at the first (cronsim's and
    Debian cron's reading), and the second pass of the hour knows it as the latest slot. 02:30 does
    not come on the spring-forward night: it fires once, at 03:00 EDT, the first minute after the jump."""
    schedules = add(spool, cron="30 1 * * *", tz="America/New_York", created="2026-10-30T00:00")
    schedule = schedules.get("rep")
    first = at("2026-11-01T05:30")  # 01:30 EDT; 06:30 UTC is 01:30 EST
    for t in ("2026-11-01T05:30", "2026-11-01T06:00", "2026-11-01T06:30", "2026-11-01T06:59:59"):
        assert schedule.latest_slot(at(t)) == first, t
        assert schedule.next_slot(at(t)) == at("2026-11-02T06:30"), t
    fired = [f.job_id for t in ("2026-11-01T05:30:10", "2026-11-01T06:00", "2026-11-01T06:30:10", "2026-11-01T07:00",
                                "2026-11-02T06:30:10") for f in schedules.fire_due(at(t)) if f.created]
    assert fired == ["rep.20261101T0530Z", "rep.20261102T0630Z"]

    spring = add(spool, "spring", cron="30 2 * * *", tz="America/New_York", created="2026-03-07T12:00")
    fired = [f.job_id for t in ("2026-03-08T06:59", "2026-03-08T07:00:05", "2026-03-08T07:30:05", "2026-03-08T08:00",
                                "2026-03-09T06:30:05") for f in spring.fire_due(at(t)) if f.name == "spring" and f.created]
    assert fired == ["spring.20260308T0700Z", "spring.20260309T0630Z"]


def test_a_slot_marked_but_never_published_is_published_by_the_next_look(spool, monkeypatch):
    """A crash between a slot's marker and its job: the next look publishes it (the latest slot
    still), once; an older one is superseded by the next slot, and said."""
    schedules = add(spool)
    monkeypatch.setattr(Spool, "enqueue_many", lambda *_a, **_k: (_ for _ in ()).throw(OSError(5, "crash")))
    with pytest.raises(OSError):
        schedules.fire_due(at("2026-01-01T00:05:01"))
    monkeypatch.undo()
    assert job_ids(spool) == [] and schedules.fired.newest("rep").state == "marked"
    assert [(f.job_id, f.created) for f in schedules.fire_due(at("2026-01-01T00:06"))] == [("rep.20260101T0005Z", True)]
    assert schedules.fire_due(at("2026-01-01T00:07")) == [] and schedules.fired.newest("rep").state == "fired"
    schedules.fired.mark("rep", at("2026-01-01T00:10"), "rep.20260101T0010Z")  # and its firer died
    fired = schedules.fire_due(at("2026-01-01T00:15:01"))
    assert [f.job_id for f in fired] == ["rep.20260101T0015Z"] and "rep.20260101T0010Z" in fired[0].note
    assert job_ids(spool) == ["rep.20260101T0005Z", "rep.20260101T0015Z"]


def test_a_record_of_a_slot_that_others_could_write_is_not_believed(spool):
    """A .last or a marker of a later slot made by an untrusted uid, writable by the group, or
    renamed to name another slot, keeps no slot from firing."""
    schedules = add(spool)
    schedules.fire_due(at("2026-01-01T00:05"))
    ahead = at("2026-01-01T00:10:30")  # a slot's worth ahead: what a .last was believed up to
    last = os.path.join(spool.layout.dir("schedules"), "rep.last")
    fired_dir = os.path.join(spool.layout.dir("schedules"), "rep.fired")
    os.makedirs(fired_dir, exist_ok=True)
    forged = {last: (f"{ahead:.0f} rep.x\n", 4242, 0o600),
              os.path.join(fired_dir, "20990101T0000Z"): (f"{at('2099-01-01'):.0f} rep.y fired\n", 0, 0o620),
              os.path.join(fired_dir, "20980101T0000Z"): (f"{at('2099-01-01'):.0f} rep.z fired\n", 0, 0o600)}
    for path, (text, uid, mode) in forged.items():
        with open(path, "w") as f:
            f.write(text)
        os.chown(path, uid, -1)
        os.chmod(path, mode)
    assert [f.job_id for f in schedules.fire_due(at("2026-01-01T00:10:01"))] == ["rep.20260101T0010Z"]


def test_in_a_shared_spool_markers_are_the_owners_alone_and_are_believed(spool):
    schedules = add(spool)
    schedules.fire_due(at("2026-01-01T00:05"))
    spool.set_config("group_access", True)
    schedules.fire_due(at("2026-01-01T00:10"))
    fired_dir = os.path.join(spool.layout.dir("schedules"), "rep.fired")
    assert {e: oct(os.stat(os.path.join(fired_dir, e)).st_mode & 0o777) for e in os.listdir(fired_dir)} == {
        "20260101T0005Z": "0o640", "20260101T0010Z": "0o640"}
    assert oct(os.stat(fired_dir).st_mode & 0o7777) == "0o2750"
    purge(spool, "rep.20260101T0010Z")
    assert schedules.fire_due(at("2026-01-01T00:10") - 150) == [] and schedules.fire_due(at("2026-01-01T00:11")) == []


def test_removing_a_schedule_removes_the_slots_it_fired(spool):
    """A schedule added again under a removed one's name starts with no slot fired, even one that a
    worker which read the old schedule before its removal marked after it."""
    schedules = add(spool)
    schedules.fire_due(at("2026-01-01T00:05"))
    purge(spool, "rep.20260101T0005Z")
    schedules.remove("rep")
    assert sorted(os.listdir(spool.layout.dir("schedules"))) == []
    schedules.fired.mark("rep", at("2026-01-01T00:10"), "rep.20260101T0010Z")  # that worker, late
    schedules = add(spool)
    assert [f.job_id for f in schedules.fire_due(at("2026-01-01T00:05:30")) if f.created] == ["rep.20260101T0005Z"]
    assert [f.job_id for f in schedules.fire_due(at("2026-01-01T00:10:30")) if f.created] == ["rep.20260101T0010Z"]


def test_a_last_of_an_older_spoolq_counts_as_fired(spool):
    """A spool that has only <name>.last: its slot is not fired again once its job is purged; the
    markers that follow take over, and the .last is pruned like an old marker."""
    schedules = add(spool)
    path = os.path.join(spool.layout.dir("schedules"), "rep.last")
    with open(path, "w") as f:
        f.write(f"{at('2026-01-01T00:05'):.0f} rep.20260101T0005Z\n")
    assert schedules.fire_due(at("2026-01-01T00:06")) == [] and schedules.last("rep")[1] == "rep.20260101T0005Z"
    for t in ("2026-01-01T00:10", "2026-01-01T00:15", "2026-01-01T00:20"):
        assert [f.created for f in schedules.fire_due(at(t))] == [True]
    assert not os.path.exists(path) and schedules.last("rep")[1] == "rep.20260101T0020Z"
    assert sorted(os.listdir(path[:-5] + ".fired")) == ["20260101T0015Z", "20260101T0020Z"]


def test_a_paused_schedule_fires_nothing_and_resumes_from_the_next_slot(spool):
    schedules = add(spool)
    schedules.set_paused("rep", True, now=at("2026-01-01T00:01"))
    assert schedules.fire_due(at("2026-01-01T00:05:00")) == []
    schedules.set_paused("rep", False, now=at("2026-01-01T00:12"))
    assert schedules.fire_due(at("2026-01-01T00:12:30")) == []  # 00:05 and 00:10 passed while paused
    assert [f.job_id for f in schedules.fire_due(at("2026-01-01T00:15"))] == ["rep.20260101T0015Z"]


def test_the_expression_is_read_in_the_schedules_time_zone(spool):
    schedules = add(spool, cron="0 2 * * *", tz="Europe/Berlin")  # 02:00 in Berlin is 01:00 UTC in winter
    assert [f.job_id for f in schedules.fire_due(at("2026-01-01T01:00:10"))] == ["rep.20260101T0100Z"]
    assert Schedules(spool).get("rep").next_slot(at("2026-06-30T23:59")) == at("2026-07-01T00:00")  # summer: 00 UTC


SCRIPT = """
import os, sys, time
from spoolq import Spool
from spoolq.running.schedules import Schedules
root, go, first, count = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
schedules = Schedules(Spool(root))
while not os.path.exists(go):
    time.sleep(0.002)
created = 0
for k in range(count):
    for jitter in (0.0, 0.4, 1.5):  # every worker looks more than once at every slot
        created += sum(f.created for f in schedules.fire_due(first + 300 * k + jitter))
print(created)
"""


def fire_together(paths: list[tuple[str, dict]], tmp_path, first: float, count: int) -> int:
    go = tmp_path / "go"
    procs = [subprocess.Popen([SPOOLQ[0], "-c", SCRIPT, path, str(go), str(first), str(count)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for path, env in paths]
    time.sleep(0.3)
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    return sum(int(out) for out, _ in outs)


def test_many_workers_firing_the_same_slots_create_each_job_once(spool, tmp_path):
    add(spool)
    first = at("2026-01-01T00:05")
    created = fire_together([(spool.root, dict(os.environ))] * 4, tmp_path, first, 6)
    assert created == 6
    assert job_ids(spool) == sorted(slot_id("rep", first + 300 * k) for k in range(6))


def test_workers_on_two_hosts_fire_each_slot_exactly_once(safe_rig, tmp_path):
    rig = safe_rig  # host A, and host B through FUSE (bindfs) or a second GlusterFS client
    add(rig.spool("A"))
    first = at("2026-01-01T00:05")
    hosts = [(rig.path(h), rig.env(h)) for h in ("A", "B", "A", "B")]
    assert fire_together(hosts, tmp_path, first, 6) == 6
    assert job_ids(rig.spool("B")) == sorted(slot_id("rep", first + 300 * k) for k in range(6))



@pytest.mark.parametrize("skew", [120, -200])
def test_two_hosts_of_a_rig_with_skewed_clocks_fire_each_slot_once_though_every_job_is_purged(safe_rig, tmp_path,
                                                                                              skew):
    """The same across a shared file system: host A on time and host B `skew` seconds off (its
    processes' clocks; the file server's is the one clock they share) look at a minutely schedule
    every 10 s for two minutes, each slot's job purged as soon as it is made: no slot fires twice."""
    rig = safe_rig
    add(rig.spool("A"), cron="* * * * *", created="2026-01-01T00:00")
    made = []
    start = at("2026-01-01T00:10:03")
    for k in range(12):
        for host, clock in (("A", start + 10 * k), ("B", start + 10 * k + skew)):
            env = {**rig.env(host), **dfs.skewed_python(clock - time.time(), tmp_path / f"skew-{host}-{k}")}
            done = subprocess.run([SPOOLQ[0], "-c", FIRE_AS_HOST, rig.path(host)], env=env, capture_output=True,
                                  text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            for job_id in done.stdout.split():
                made.append(job_id)
                purge(rig.spool("A"), job_id)
    assert made and len(made) == len(set(made)), sorted(made)

# ---- the CLI ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cron, field", [("61 * * * *", "minute"), ("* 24 * * *", "hour"), ("* * 32 * *", "day-of-month"),
                                         ("* * * 13 *", "month"), ("* * * * 9", "day-of-week"),
                                         ("* * *", "wrong number of fields"), ("@often", "unknown alias")])
def test_a_bad_expression_is_refused_naming_the_field(cli, spool_dir, cron, field):
    result = cli("schedule", "add", "x", cron, "--cmd", "true")
    assert result.exit_code == 2 and field in result.output and "Traceback" not in result.output
    assert not os.path.exists(spool_dir)  # nothing written, not even the spool


@pytest.mark.parametrize("args, what", [
    (("--cmd", "true", "--", "-bad", "@hourly"), "invalid schedule name"),
    (("a.b", "@hourly", "--cmd", "true"), "invalid schedule name"),
    (("x" * 101, "@hourly", "--cmd", "true"), "invalid schedule name"),
    (("ok", "@hourly", "--cmd", "true", "--tz", "Mars/Base"), "unknown time zone"),
    (("ok", "@hourly", '{"command": "true", "id": "fixed"}'), "without an id"),
    (("ok", "@hourly", '{"command": 7}'), "command"),
    (("ok", "@hourly"), "exactly one of"),
    (("ok", "@hourly", '{"command": "a"}', '{"command": "b"}'), "exactly one of"),
    (("ok", "15", "2", "a.txt", "b.txt", "c.txt", "--cmd", "true"), "quote it, as in '15 2 * * *'"),  # the shell split it
    (("ok", "15", "--cmd", "true"), "quote the whole expression"),
])
def test_bad_schedules_are_refused_and_write_nothing(cli, spool_dir, args, what):
    result = cli("schedule", "add", *args)
    assert result.exit_code == 2 and what in result.output, result.output
    assert not os.path.exists(spool_dir)


def test_schedule_add_list_show_pause_resume_rm(cli, spool):
    out = clean(cli("schedule", "add", "nightly", "15 2 * * *", "--cmd", "backup.sh", "--queue", "ops",
                    "--max-retries", "5")).stdout
    assert "name:       nightly" in out
    assert cli("schedule", "add", "nightly", "@daily", "--cmd", "x").exit_code == 1  # the name is taken
    listed = cli.json("schedule", "list")
    assert [(s["name"], s["cron"], s["tz"], s["catch_up"], s["paused"], s["last"], s["last_job"]) for s in listed] == [
        ("nightly", "15 2 * * *", "UTC", "last", False, None, None)]
    assert listed[0]["next"].endswith("T02:15:00.000Z") and listed[0]["job"] == {
        "command": "backup.sh", "queue": "ops", "max_retries": 5}
    clean(cli("schedule", "pause", "nightly"))
    assert cli.json("schedule", "show", "nightly")["paused"] is True and cli.json("schedule", "show", "nightly")["next"] is None
    clean(cli("schedule", "resume", "nightly"))
    assert cli.json("schedule", "show", "nightly")["paused"] is False
    clean(cli("schedule", "rm", "nightly"))
    assert cli.json("schedule", "list") == [] and cli("schedule", "show", "nightly").exit_code == 1


def test_schedule_list_says_how_the_last_job_ended_and_when_nothing_fires(cli, spool):
    """The last job's id alone did not say whether it died, and a NEXT time was shown while no
    worker ran (only workers fire schedules)."""
    schedules = add(spool, "rep", created="2026-01-01T00:00:30")
    schedules.fire_due(at("2026-01-01T00:05:00"))
    spool.cancel(["rep.20260101T0005Z"])  # the last job ends dead
    text = clean(cli("schedule", "list"))
    assert "LAST STATE" in text.stdout and re.search(r"rep\.20260101T0005Z\s+dead\s", text.stdout), text.stdout
    assert text.stderr.startswith("Note: no worker is running") and "nothing fires" in text.stderr
    shown = cli.json("schedule", "show", "rep")
    assert (shown["last_state"], shown["fires"]) == ("dead", False) and shown["next"] is not None
    clean(cli("purge", "--state", "dead"))
    assert cli.json("schedule", "list")[0]["last_state"] == "purged"
    owner = spool.owners.register("worker")  # a live worker: the schedule fires
    assert cli.json("schedule", "show", "rep")["fires"] is True
    assert clean(cli("schedule", "list")).stderr == ""
    spool.owners.unregister(owner)


def test_a_hand_broken_schedule_file_is_left_out_not_a_traceback(cli, spool):
    clean(cli("schedule", "add", "good", "@hourly", "--cmd", "true"))
    with open(os.path.join(spool.layout.dir("schedules"), "broken.json"), "w") as f:
        f.write('{"name": "broken", "cron": "99 * * * *"')
    assert [s["name"] for s in cli.json("schedule", "list")] == ["good"]
    result = cli("schedule", "show", "broken")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert Schedules(spool).fire_due(time.time()) is not None


@pytest.mark.slow
def test_a_running_worker_fires_a_slot_at_its_time_across_a_real_minute(spool, workers):
    """The one real-time test: a minute boundary, with polling slowed down so that only the
    worker's wake-up for the slot can fire it in time."""
    spool.set_config("poll_interval", 300)
    clean_run = subprocess.run([*SPOOLQ, "--spool", spool.root, "schedule", "add", "tick", "* * * * *", "--cmd",
                                'echo "$SPOOLQ_JOB_ID"'], capture_output=True, text=True, timeout=60)
    assert clean_run.returncode == 0, clean_run.stderr
    w = workers(2)
    boundary = (int(time.time() // 60) + 1) * 60
    expected = slot_id("tick", boundary)
    wait_for(lambda: os.path.exists(spool.layout.output(expected)) and spool.find(expected).state == "done",
             boundary - time.time() + 15, f"{expected} to run")
    assert spool.find(expected).job.extra["slot"] == datetime.fromtimestamp(boundary, timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:00.000Z")
    started = spool.find(expected).last_attempt.started
    assert started - boundary < 3  # woken for it, not by a poll (every 300 s here)
    assert [j for j in job_ids(spool) if j.startswith("tick.")] == [expected]
    assert json.loads(subprocess.run([*SPOOLQ, "--spool", spool.root, "schedule", "show", "tick", "--json"],
                                     capture_output=True, text=True, timeout=60).stdout)["last_job"] == expected
    w.stop()


def test_a_worker_looks_again_only_when_a_slot_is_due_or_a_schedule_changed(spool, monkeypatch):
    from spoolq.running.duties import SCHEDULE_RECHECK, Duties

    add(spool, cron="0 3 * * *")  # next slot hours away
    duties = Duties(spool, lambda _m: None, lambda: "")
    looks = []
    real = Schedules.fire_due
    monkeypatch.setattr(Schedules, "fire_due", lambda self, now: looks.append(now) or real(self, now))
    t = at("2026-01-01T00:10")
    for k in range(5):  # every recheck: one stat, no evaluation
        duties.run(t + k * SCHEDULE_RECHECK)
    assert len(looks) == 1
    Schedules(spool).add(Schedule("other", "@hourly", {"command": "true"}, created_at=t, active_from=t))
    duties.run(t + 5 * SCHEDULE_RECHECK)  # a schedule added: looked at
    duties.run(at("2026-01-01T01:00:01"))  # a slot due: looked at
    assert len(looks) == 3 and job_ids(spool) == ["other.20260101T0100Z"]


def test_replacing_a_paused_schedule_keeps_it_paused(cli, spool):
    clean(cli("schedule", "add", "nightly", "@daily", "--cmd", "true"))
    clean(cli("schedule", "pause", "nightly"))
    clean(cli("schedule", "add", "nightly", "@hourly", "--cmd", "true", "--replace"))
    shown = cli.json("schedule", "show", "nightly")
    assert (shown["cron"], shown["paused"]) == ("@hourly", True)


@pytest.mark.slow  # seconds of waiting: the full suite's
def test_a_worker_busy_with_a_long_job_fires_a_schedule_s_slot_meanwhile(spool, spool_dir):
    """A worker of one slot runs its job in its own thread: a schedule's slot still fires on time
    (the job waits in pending for a free worker), not when the long job ends."""
    from conftest import Workers
    from spools import cli

    long = spool.enqueue({"command": "sleep 120"}).id
    w = Workers(spool_dir, 1).wait_ready()
    try:
        wait_for(lambda: spool.find(long).state == "processing", 15, "the long job to start")
        created = time.time() - 3600  # its latest slot, this minute's, is due at once
        Schedules(spool).add(Schedule("busy", "* * * * *", {"command": "true"}, created_at=created,
                                      active_from=created))
        # A look every 2 s; the budget is for a loaded machine, far below the long job's 120 s.
        w.wait_for(lambda: any(v.id.startswith("busy.") for v in spool.list_jobs()), 30, "the slot's job")
        assert spool.find(long).state == "processing"  # fired while the long job still ran
    finally:
        cli(spool_dir, "worker", "stop", "--now", "--wait", "--timeout", "20")
        w.stop()
