"""A cron user's day: what someone used to cron, systemd timers and sidekiq-cron does with
spoolq's schedules, from the docs alone: every cron form they know, time zones, a clock that
steps, replacing a schedule, firing one by hand, a slow job, with real workers where it matters.
Time is passed in (or a worker's clock shifted), never waited out."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import Workers, spoolq, wait_for
from spoolq import Spool
from spoolq.system import watch
from spoolq.running.schedules import Schedule, Schedules


def at(text: str) -> float:
    """An ISO time (UTC) as epoch seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def add(spool: Spool, name: str, cron: str, created: float, **kwargs) -> Schedules:
    spool.init()
    schedules = Schedules(spool)
    schedules.add(Schedule(name, cron, {"command": "true"}, created_at=created, active_from=created, **kwargs))
    return schedules


def job_ids(spool: Spool) -> list[str]:
    return sorted(v.id for v in spool.list_jobs())


def stepping_clock(ahead: float, flag: Path, shim_dir: Path) -> dict[str, str]:
    """The environment of a Python whose clock reads `ahead` seconds fast until `flag` exists,
    and then the right time: NTP stepping a fast clock back (as tests/dfs.py skews a host's)."""
    shim_dir.mkdir(parents=True, exist_ok=True)
    (shim_dir / "sitecustomize.py").write_text(
        "import os, time\n"
        "_time, _time_ns, _exists = time.time, time.time_ns, os.path.exists\n"
        f"_skew = lambda: 0.0 if _exists({str(flag)!r}) else {ahead!r}\n"
        "time.time = lambda: _time() + _skew()\n"
        "time.time_ns = lambda: _time_ns() + int(_skew() * 1e9)\n")
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": f"{shim_dir}{os.pathsep}{path}" if path else str(shim_dir)}


def test_a_worker_whose_clock_steps_back_keeps_firing_schedules(spool, spool_dir, tmp_path):
    """NTP steps a clock that ran half an hour fast back to the right time: a worker went on
    firing nothing (nor sweeping for dead workers' jobs, nor purging) for that half hour, as its
    duties' next times stood half an hour ahead. A schedule added after the step fires at once."""
    flag = tmp_path / "stepped"
    spool.init()
    w = Workers(spool_dir, 1, env=stepping_clock(1800, flag, tmp_path / "shim")).wait_ready()
    try:
        add(spool, "fast", "* * * * *", time.time())  # the fast clock's minute is due at once
        w.wait_for(lambda: any(j.startswith("fast.") for j in job_ids(spool)), 20, "the fast clock's slot")
        flag.touch()  # the step back
        add(spool, "after", "* * * * *", time.time() - 120)  # this minute's slot is due at once
        w.wait_for(lambda: any(j.startswith("after.") for j in job_ids(spool)), 20, "a slot after the step")
    finally:
        w.stop()
        w.kill_all()


def test_replacing_a_schedule_unchanged_keeps_the_slot_its_catch_up_owes(spool):
    """A provisioning script (or a unit's ExecStartPre) runs `schedule add --replace` on every
    boot. After a night with no worker, the boot's re-add made the schedule start afresh, and the
    missed 02:15 slot, which the catch-up was to fire once a worker started, never fired. The same
    times keep their start; new times start at the replace (no past slot of theirs fires)."""
    schedules = add(spool, "nightly", "15 2 * * *", at("2026-01-01T00:00"))
    t = at("2026-01-01T07:59")
    schedules.add(Schedule("nightly", "15 2 * * *", {"command": "backup.sh"}, created_at=t, active_from=t),
                  replace=True)
    fired = schedules.fire_due(at("2026-01-01T08:00"))
    assert [(f.job_id, f.created) for f in fired] == [("nightly.20260101T0215Z", True)]
    assert spool.find("nightly.20260101T0215Z").job.command == "backup.sh"  # the new command
    t = at("2026-01-01T10:00")
    schedules.add(Schedule("nightly", "0 9 * * *", {"command": "backup.sh"}, created_at=t, active_from=t),
                  replace=True)
    assert schedules.fire_due(at("2026-01-01T10:00:01")) == []  # 09:00 today was before it: not owed


def test_schedule_fire_enqueues_its_job_now_once_a_minute(cli, spool):
    """`systemctl start backup.service` runs a timer's job by hand, sidekiq-cron has "Enqueue
    now", the dashboard "fire now": the command line had nothing (`schedule fire` was an unknown
    command). It enqueues the job as this minute's slot and prints its id; again in the minute,
    it makes no second job and says so."""
    assert cli("schedule", "add", "nightly", "15 2 * * *", "--cmd", "echo backup").exit_code == 0
    first = cli("schedule", "fire", "nightly")
    assert first.exit_code == 0, first.output
    job_id = first.stdout.strip()
    assert job_id.startswith("nightly.") and spool.find(job_id).job.command == "echo backup"
    again = cli("schedule", "fire", "nightly", "--json")
    shown = json.loads(again.stdout)
    if not shown["created"]:  # (unless a minute turned between the two)
        assert shown == {"id": job_id, "created": False} and "fired this minute already" in again.stderr
        assert job_ids(spool) == [job_id]
    missing = cli("schedule", "fire", "nope")
    assert missing.exit_code == 1 and "no schedule 'nope'" in missing.stderr


@pytest.mark.parametrize("cron, hint", [
    ("@reboot", "a schedule fires at times, not when a host starts"),
    ("@every 5m", "'*/5 * * * *'"),
    ("0 */5 * * * *", "no seconds field"),
    ("CRON_TZ=Europe/Berlin 15 2 * * *", "--tz Europe/Berlin"),
])
def test_what_other_crons_take_is_refused_with_what_to_type_instead(cli, spool_dir, cron, hint):
    """cronie's @reboot and CRON_TZ=, Go cron's @every, sidekiq-cron's and Quartz's seconds field:
    each was refused with 'unknown alias' or 'wrong number of fields' alone."""
    result = cli("schedule", "add", "job", cron, "--cmd", "true")
    assert result.exit_code == 2 and hint in result.stderr, result.stderr
    assert not os.path.exists(spool_dir)


def test_a_schedule_read_in_utc_on_a_host_that_is_not_says_so(spool_dir):
    """cron reads '15 2 * * *' in the host's zone; spoolq in UTC unless --tz. On a Berlin host the
    nightly job ran at 03:15 or 04:15 local, silently. `schedule add` without --tz says so, naming
    the host's zone; with --tz, or on a host in UTC, it says nothing."""
    def add_with(tz: str, *extra: str) -> str:
        done = spoolq(spool_dir, "schedule", "add", "nightly", "15 2 * * *", "--cmd", "true", "--replace", *extra,
                      env={**os.environ, "TZ": tz})
        assert done.returncode == 0, done.stderr
        return done.stderr

    said = add_with("Europe/Berlin")
    assert "read in UTC" in said and "--tz Europe/Berlin --replace" in said
    assert "read in UTC" not in add_with("Europe/Berlin", "--tz", "Europe/Berlin")
    assert "read in UTC" not in add_with("UTC")


def test_overlap_forbid_holds_a_slot_while_the_last_job_is_unfinished(spool):
    """A backup every 5 minutes that takes 7: cron and spoolq start the next while the last one
    runs (another worker takes it), and a job slower than its schedule piles up; so does every
    slot of a schedule whose queue is paused. A systemd timer, or Kubernetes' `Forbid`, starts
    none while the last runs: `--overlap forbid` holds the slot until the last slot's job is
    done or dead, then fires it once (the worker looks again every couple of seconds)."""
    from spoolq.running.duties import SCHEDULE_RECHECK, Duties

    add(spool, "slow", "*/5 * * * *", at("2026-01-01T00:00:30"), overlap="forbid")
    add(spool, "cron", "*/5 * * * *", at("2026-01-01T00:00:30"))  # overlap allow, as cron
    duties = Duties(spool, lambda _m: None, lambda: "")
    duties.run(at("2026-01-01T00:05:00"))
    assert job_ids(spool) == ["cron.20260101T0005Z", "slow.20260101T0005Z"]
    for t in ("2026-01-01T00:10:00", "2026-01-01T00:11:00", "2026-01-01T00:15:00"):
        duties.run(at(t))  # slow.0005 is still unfinished (pending here: as running, or a paused queue's)
    assert [j for j in job_ids(spool) if j.startswith("slow.")] == ["slow.20260101T0005Z"]
    assert len([j for j in job_ids(spool) if j.startswith("cron.")]) == 3
    assert spool.cancel(["slow.20260101T0005Z"])[0].ok  # finished (dead): the held slot may fire
    now = at("2026-01-01T00:16:00")
    assert duties.due(now + SCHEDULE_RECHECK)  # a held slot is looked at again, not at the next slot
    duties.run(now + SCHEDULE_RECHECK)
    assert [j for j in job_ids(spool) if j.startswith("slow.")] == ["slow.20260101T0005Z", "slow.20260101T0015Z"]
    assert Schedules(spool).row(Schedules(spool).get("slow"), now, working=True)["overlap"] == "forbid"


class _Polling(watch.Wakeups):
    """No file-system events: as on a network file system, where polling finds other hosts' jobs."""

    def __init__(self, directories, *, events=True, recursive=()):
        super().__init__(directories, events=False)


def test_a_polling_worker_whose_clock_steps_back_still_finds_new_jobs(spool, monkeypatch):
    """The same step back on a file system without events (another host's jobs are found only by
    polling): the worker's last rescan stood half an hour ahead, and it listed pending/ again only
    half an hour later; a job enqueued after the step waited that long."""
    from spoolq.running import worker as worker_mod

    skew = [1800.0]
    real_time, real_ns = time.time, time.time_ns
    monkeypatch.setattr(time, "time", lambda: real_time() + skew[0])
    monkeypatch.setattr(time, "time_ns", lambda: real_ns() + int(skew[0] * 1e9))
    monkeypatch.setattr(worker_mod.watch, "Wakeups", _Polling)
    spool.init()
    spool.set_config("poll_interval", 0.2)
    w = worker_mod.Worker(spool, log=lambda _m: None)
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    try:
        before = spool.enqueue({"command": "true"}).id
        wait_for(lambda: spool.find(before).state == "done", 15, "a job found by a poll on the fast clock")
        skew[0] = 0.0  # NTP steps the clock back
        after = spool.enqueue({"command": "true"}).id
        wait_for(lambda: spool.find(after).state == "done", 15, "a job enqueued after the step")
    finally:
        w.request_stop()
        t.join(15)


@pytest.mark.parametrize("word, pointer", [
    ("remove", "`spoolq schedule rm NAME`"), ("delete", "`spoolq schedule rm NAME`"),
    ("run", "`spoolq schedule fire NAME`"), ("enable", "`spoolq schedule resume NAME`"),
    ("disable", "`spoolq schedule pause NAME`"), ("edit", "--replace"),
])
def test_a_schedule_word_of_other_tools_points_to_spoolq_s(cli, word, pointer):
    """`spoolq schedule remove nightly` answered "did you mean 'resume'?": whoever took the hint
    to remove a paused schedule set it firing again. Words of crontab, systemctl and sidekiq-cron
    within `schedule` point to its command."""
    result = cli("schedule", word, "nightly")
    assert result.exit_code == 2 and pointer in result.output and "did you mean" not in result.output, result.output


@pytest.mark.parametrize(("given", "meant"), [("europe/berlin", "Europe/Berlin"), ("utc", "UTC"),
                                             ("america/new york", "America/New_York")])
def test_a_zone_spelt_another_way_is_named(spool_dir, given, meant):
    """Zone names are read as file names, so case counts: `--tz europe/berlin` was "unknown"
    with no word of what was meant."""
    Spool(spool_dir)
    result = spoolq(spool_dir, "schedule", "add", "nightly", "0 3 * * *", "--cmd", "true", "--tz", given)
    assert result.returncode == 2
    assert f"did you mean '{meant}'?" in result.stderr


def test_a_schedule_for_a_queue_no_running_worker_takes_says_so(spool_dir):
    """Workers started with `--queue fast` never take a schedule's jobs of queue `nightly`: every
    slot fired a job that waited, unseen. `schedule add` now says so when it is the case."""
    spool = Spool(spool_dir)
    workers = Workers(spool_dir, 1, extra=("--queue", "fast"))
    try:
        wait_for(lambda: spool.workers(role="worker"), 20, "the worker to register")
        other = spoolq(spool_dir, "schedule", "add", "n", "0 3 * * *", "--cmd", "true", "--queue", "nightly")
        taken = spoolq(spool_dir, "schedule", "add", "m", "0 3 * * *", "--cmd", "true", "--queue", "fast")
    finally:
        workers.stop()
    assert other.returncode == 0 and taken.returncode == 0
    assert "no running worker takes queue 'nightly'" in other.stderr
    assert "no running worker takes" not in taken.stderr


def test_schedule_list_keeps_its_columns_with_long_names(spool_dir):
    """A name longer than 24 characters pushed the rest of its line out of its columns, and so
    did a NEXT in parentheses (due, but no worker to fire it): the columns now fit what they hold."""
    Spool(spool_dir)
    for name in ("a-long-schedule-name-for-the-nightly-backups", "short"):
        assert spoolq(spool_dir, "schedule", "add", name, "15 2 * * 1-5", "--cmd", "true").returncode == 0
    header, *lines = spoolq(spool_dir, "schedule", "list").stdout.splitlines()
    for title, value in (("CRON", "15 2 * * 1-5"), ("LAST JOB", "-"), ("PAUSED", "no")):
        assert {line.index(value, header.index(title)) for line in lines} == {header.index(title)}, (title, lines)
