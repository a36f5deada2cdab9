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

from conftest import SPOOLQ, wait_for
from spoolq import Spool
from spoolq.schedules import LATE_LIMIT, Schedule, Schedules, slot_id
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
from spoolq.schedules import Schedules
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
    from spoolq.duties import SCHEDULE_RECHECK, Duties

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
