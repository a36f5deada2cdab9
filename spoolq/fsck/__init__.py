"""fsck: check a spool against its on-disk format (layout.py) and repair what is safe to repair.

Core only: no click, no printing. ``check()`` returns the problems it found, each saying what
(if anything) was done about it; the CLI prints them.

Invariants checked:

* the layout's directories exist (and are directories), in a directory that is a spool (one
  holding other files and none of a spool's is reported, and nothing is created in it);
* every job file parses, names the id its file name says, is a regular singly linked file
  owned by a trusted uid;
* every file in ``pending/`` and the Maildir is one a worker will take (maildir.py: a stray is
  reported, never moved);
* every ``processing/<owner>`` directory has a live owner;
* no job id is in more than one place (state);
* every job has its ``ids/<id>`` marker and every marker has a job (or a quarantine record);
* every waiting job has an edge for each job it waits for, waits for no job that is gone, and
  is not left waiting once they have finished; every edge has a waiting job (or an enqueue at work);
* every quarantined ``dead/+<qid>.json`` has its reason in ``quarantine/``, and every reason
  record has its file;
* no stale temp files (``tmp/``, and the dot-temp files spoolq writes in ``processing/<owner>/``
  and ``dead/``) or stale worker registrations; no lock (``locks/``) held for over
  locks.LONG_HELD seconds (reported with its holder, never taken from it), no earlier spoolq's
  lock files;
* nothing spoolq owns is more open than the configured modes (private unless group_access),
  judged only once config.json is read (a refused one leaves it unknown whether the spool is shared).

Repairs are only the safe ones: recover dead owners (``Recovery.run``, exactly what a worker
would do), quarantine files that can never run (bytes kept, reason recorded), remove stale temp
files, an earlier spoolq's lock files, stale registrations, orphan markers and orphan reason records,
recreate missing markers and reason records, create missing directories, narrow modes, judge a
waiting job as a finish would (released, or dead naming what it waited for), make a missing edge,
remove a stale one. Nothing a live worker holds is touched, and no job file is ever deleted.

Anything that may belong to an operation still in flight (temp files, markers, reason records)
counts as stale only once older than ``stale_after``.
"""

from __future__ import annotations

from ..format.states import State
from ..spool import Spool
from .housekeeping import HousekeepingChecks
from .jobs import JobChecks
from .report import KINDS, STALE_AFTER, Problem, Report
from .waiting import WaitingChecks

__all__ = ["check", "Problem", "KINDS", "STALE_AFTER"]


def check(spool: Spool, *, repair: bool = False, stale_after: float = STALE_AFTER,
          now: float | None = None) -> list[Problem]:
    """Check every invariant of the spool's format; with `repair`, fix what is safe to fix."""
    report = Report(spool, repair, stale_after, now)
    house = HousekeepingChecks(report)
    jobs = JobChecks(report)
    house.check_config()  # first: the modes of any directory a repair creates come from it
    if not house.check_layout():
        return report.problems
    if not report.given_now:
        report.fs_now = spool.store.fs_clock()  # ages are judged on the file system's clock
    house.check_registrations()  # before check_owners: recovery would drop stale ones unreported
    house.check_batches()  # before the markers: a cut batch's jobs still in tmp/ hold theirs
    jobs.check_owners()
    jobs.check_pending()
    jobs.check_strays()
    jobs.check_live_processing()
    jobs.check_finished(State.DONE)
    jobs.check_finished(State.DEAD)
    WaitingChecks(report, jobs).check()
    house.check_reasons()
    jobs.check_duplicates()
    jobs.check_markers()
    house.check_tmp()
    house.check_locks()
    house.check_modes()
    return report.problems
