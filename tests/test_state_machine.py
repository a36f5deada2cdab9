"""The job lifecycle as a state machine (hypothesis), and claims racing across threads and processes.

Invariants, checked after every step: each job id is in exactly one state directory; attempts never
exceed 1 + max_retries; what the spool reports matches a model of what happened.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from conftest import examples
from spoolq import LostOwnership, NotRetryable, Spool
from spoolq.format import layout as L

# ---- where every job is, read straight from the directories (not through the Spool API) --------


def job_locations(root: str) -> dict[str, list[str]]:
    """job id -> every state directory it appears in; also catches stray or foreign entries."""
    seen: dict[str, list[str]] = {}
    for entry in os.listdir(os.path.join(root, "pending")):
        parsed = L.parse_pending(entry)
        assert parsed is not None, f"unexpected entry in pending/: {entry}"
        seen.setdefault(parsed.job_id, []).append("pending")
    processing = os.path.join(root, "processing")
    for owner in os.listdir(processing):
        for entry in os.listdir(os.path.join(processing, owner)):
            if entry == L.FENCE_FILE and L.RESCUE_SEP in owner:
                continue  # a rescuer's mark, kept in the emptied directory for a while
            assert entry.endswith(".json") and not entry.startswith((".", "~")), f"stray {owner}/{entry}"
            seen.setdefault(entry[:-5], []).append("processing")
    for state in ("done", "dead"):
        for entry in os.listdir(os.path.join(root, state)):
            assert entry.endswith(".json") and not entry.startswith("."), f"stray {state}/{entry}"
            seen.setdefault(entry[:-5], []).append(state)
    return seen


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def fake_death(spool: Spool, owner: str) -> None:
    """Make a registered owner look like a worker that was SIGKILLed: its pid is gone."""
    path = spool.layout.worker_file(owner)
    with open(path, "rb") as f:
        record = json.loads(f.read())
    record["pid"], record["start"] = dead_pid(), None
    tmp = os.path.join(spool.layout.tmp, L.tmp_name())
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.rename(tmp, path)


# ---- the state machine -----------------------------------------------------------------------


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="spoolq-sm-")
        self.spool = Spool(os.path.join(self.tmp, "spool"))
        self.spool.set_config("backoff_base", 0)  # a retry is due at once (its name still carries the time)
        self.jobs: dict[str, dict] = {}  # id -> {"state", "attempts", "max_retries"}
        self.claims: dict[str, object] = {}  # id -> Claimed, for jobs in processing
        self.stale: list[tuple[str, object]] = []  # claims of owners that were declared dead
        self.live_owners: list[str] = [self.spool.owners.register("worker")]
        self.dead_owners: list[str] = []
        self.names: dict[str, str] = {}  # id -> the last pending name it had
        self.counter = 0

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers

    def _in(self, state: str) -> list[str]:
        return sorted(j for j, m in self.jobs.items() if m["state"] == state)

    def _pending_name(self, job_id: str) -> str:
        names = [e for e in os.listdir(self.spool.layout.pending) if e.endswith(f"@{job_id}.json")]
        assert len(names) == 1, names
        self.names[job_id] = names[0]
        return names[0]

    def _after_failure(self, job_id: str) -> None:
        m = self.jobs[job_id]
        m["attempts"] += 1
        m["state"] = "dead" if m["attempts"] > m["max_retries"] else "pending"

    # -- rules

    @rule(max_retries=st.integers(0, 2), priority=st.integers(-2, 2), delay=st.sampled_from([None, 0, 3600]))
    def enqueue(self, max_retries, priority, delay):
        self.counter += 1
        job_id = f"j{self.counter}"
        spec = {"command": "true", "id": job_id, "max_retries": max_retries, "priority": priority}
        if delay is not None:
            spec["delay"] = delay
        job = self.spool.enqueue(spec)
        assert job.id == job_id and job.attempts == 0
        self.jobs[job_id] = {"state": "pending", "attempts": 0, "max_retries": max_retries}

    @precondition(lambda self: self._in("pending"))
    @rule(data=st.data())
    def claim(self, data):
        job_id = data.draw(st.sampled_from(self._in("pending")))
        owner = data.draw(st.sampled_from(self.live_owners))
        claimed = self.spool.transitions.claim(self._pending_name(job_id), owner)
        assert claimed is not None, "an uncontested claim wins"
        assert claimed.job.id == job_id
        assert claimed.job.running_attempt == self.jobs[job_id]["attempts"] + 1, "the attempt counts from the claim"
        self.jobs[job_id]["state"] = "processing"
        self.claims[job_id] = claimed

    @precondition(lambda self: self.names and any(self.jobs[j]["state"] != "pending" for j in self.names))
    @rule(data=st.data())
    def claim_a_name_that_is_gone(self, data):
        """A stale index entry: another worker got there first. Losing is an answer, not an error."""
        job_id = data.draw(st.sampled_from(sorted(j for j in self.names if self.jobs[j]["state"] != "pending")))
        name = self.names[job_id]
        if os.path.lexists(os.path.join(self.spool.layout.pending, name)):
            return  # the job went back to pending under the very same name (cannot happen: names change)
        assert self.spool.transitions.claim(name, self.live_owners[0]) is None

    @precondition(lambda self: self.claims)
    @rule(data=st.data(), ok=st.booleans())
    def finish(self, data, ok):
        job_id = data.draw(st.sampled_from(sorted(self.claims)))
        claimed = self.claims.pop(job_id)
        decision = self.spool.transitions.finish(claimed, ok=ok, exit_code=0 if ok else 1, error=None if ok else "exit 1")
        if ok:
            self.jobs[job_id]["attempts"] += 1
            self.jobs[job_id]["state"] = "done"
        else:
            self._after_failure(job_id)
        assert decision.state == self.jobs[job_id]["state"]

    @precondition(lambda self: len(self.live_owners) < 4)
    @rule()
    def new_owner(self):
        self.live_owners.append(self.spool.owners.register("worker"))

    @precondition(lambda self: len(self.live_owners) > 1)
    @rule(data=st.data())
    def owner_dies_and_is_recovered(self, data):
        victim = data.draw(st.sampled_from(self.live_owners[1:]))
        self.live_owners.remove(victim)
        self.dead_owners.append(victim)
        fake_death(self.spool, victim)
        held = sorted(j for j, c in self.claims.items() if c.owner == victim)
        rescuer = self.live_owners[0]
        recovered = self.spool.recovery.run(rescuer)
        assert sorted(r.job_id for r in recovered) == held, "every job of the dead owner, and only those"
        for job_id in held:
            self.stale.append((job_id, self.claims.pop(job_id)))
            self._after_failure(job_id)
        for r in recovered:
            assert r.state == self.jobs[r.job_id]["state"]
        assert self.spool.recovery.run(rescuer) == [], "recovery happens once"
        assert not os.path.exists(self.spool.layout.worker_file(victim))

    @precondition(lambda self: self.stale)
    @rule(data=st.data(), ok=st.booleans())
    def a_fenced_owner_wakes_up(self, data, ok):
        """The dead owner was only frozen: its late result must change nothing."""
        job_id, claimed = self.stale.pop(data.draw(st.integers(0, len(self.stale) - 1)))
        with pytest.raises(LostOwnership):
            self.spool.transitions.finish(claimed, ok=ok, exit_code=0 if ok else 1, error=None if ok else "late")

    @precondition(lambda self: self.dead_owners and self._in("pending"))
    @rule(data=st.data())
    def a_fenced_owner_tries_to_claim(self, data):
        job_id = data.draw(st.sampled_from(self._in("pending")))
        owner = data.draw(st.sampled_from(self.dead_owners))
        with pytest.raises(LostOwnership):
            self.spool.transitions.claim(self._pending_name(job_id), owner)

    @precondition(lambda self: self._in("dead"))
    @rule(data=st.data())
    def retry_dead(self, data):
        job_id = data.draw(st.sampled_from(self._in("dead")))
        assert self.spool.retry_dead([job_id]) == [job_id]
        self.jobs[job_id].update(state="pending", attempts=0)
        view = self.spool.find(job_id)
        assert view.state == "pending" and view.job.run_at is None

    @precondition(lambda self: any(m["state"] != "dead" for m in self.jobs.values()))
    @rule(data=st.data())
    def retry_a_job_that_is_not_dead(self, data):
        job_id = data.draw(st.sampled_from(sorted(j for j, m in self.jobs.items() if m["state"] != "dead")))
        with pytest.raises(NotRetryable):
            self.spool.retry_dead([job_id])

    # -- invariants

    @invariant()
    def each_job_in_exactly_one_state(self):
        seen = job_locations(self.spool.root)
        assert set(seen) == set(self.jobs), "no job lost, none invented"
        for job_id, places in seen.items():
            assert len(places) == 1, f"{job_id} is in {places}"
            assert places[0] == self.jobs[job_id]["state"], (job_id, places, self.jobs[job_id])
            assert os.path.exists(self.spool.layout.id_marker(job_id))

    @invariant()
    def the_spool_reports_the_model(self):
        counts = Counter(m["state"] for m in self.jobs.values())
        c = self.spool.counts()
        assert c.pending + c.scheduled == counts["pending"]
        assert (c.processing, c.done, c.dead) == (counts["processing"], counts["done"], counts["dead"])
        for job_id, m in self.jobs.items():
            d = self.spool.find(job_id).to_dict()
            expected = m["attempts"] + (1 if m["state"] == "processing" else 0)
            assert d["attempts"] == expected, (job_id, d, m)
            assert d["attempts"] <= 1 + d["max_retries"], "a job runs at most 1 + max_retries times"
            assert d["state"] in (("pending", "scheduled") if m["state"] == "pending" else (m["state"],))
            if m["state"] == "dead":
                assert d["attempts"] == 1 + d["max_retries"]

    @invariant()
    def no_temp_files_left(self):
        assert os.listdir(self.spool.layout.tmp) == []


Lifecycle.TestCase.settings = settings(max_examples=examples(100), stateful_step_count=40, deadline=None)
test_lifecycle = Lifecycle.TestCase


# ---- racing claims -----------------------------------------------------------------------------

RACE_JOBS = 300


def _enqueue_many(spool: Spool, n: int) -> list[str]:
    jobs = spool.enqueue_many([{"command": "true", "id": f"r{i}"} for i in range(n)])
    return [j.id for j in jobs]


def test_threads_racing_claims_claim_each_job_once(spool):
    ids = _enqueue_many(spool, RACE_JOBS)
    names = spool.views.pending_entries()
    threads, results = 8, {}
    barrier = threading.Barrier(threads)
    owners = [spool.owners.register("worker") for _ in range(threads)]

    def work(i: int) -> None:
        mine = list(names)
        random.Random(i).shuffle(mine)
        barrier.wait()
        results[i] = [c.job.id for name in mine if (c := spool.transitions.claim(name, owners[i])) is not None]

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    claimed = [job_id for got in results.values() for job_id in got]
    assert sorted(claimed) == sorted(ids), "every job claimed exactly once"
    assert spool.views.pending_entries() == []
    for i, owner in enumerate(owners):
        assert sorted(os.listdir(spool.layout.owned(owner))) == sorted(f"{j}.json" for j in results[i])


def _claimer(root: str, names: list[str], seed: int, barrier, out_path: str) -> None:
    spool = Spool(root)
    owner = spool.owners.register("worker")
    mine = list(names)
    random.Random(seed).shuffle(mine)
    barrier.wait()
    got = [c.job.id for name in mine if (c := spool.transitions.claim(name, owner)) is not None]
    with open(out_path, "w") as f:
        json.dump({"owner": owner, "ids": got}, f)


def test_processes_racing_claims_claim_each_job_once(spool, tmp_path):
    ids = _enqueue_many(spool, RACE_JOBS)
    names = spool.views.pending_entries()
    ctx = multiprocessing.get_context("fork")
    n = 4
    barrier = ctx.Barrier(n)
    procs = [ctx.Process(target=_claimer, args=(spool.root, names, i, barrier, str(tmp_path / f"out{i}.json")))
             for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    claimed = []
    for i in range(n):
        with open(tmp_path / f"out{i}.json") as f:
            result = json.load(f)
        claimed.extend(result["ids"])
        assert sorted(os.listdir(spool.layout.owned(result["owner"]))) == sorted(f"{j}.json" for j in result["ids"])
    assert sorted(claimed) == sorted(ids)
    assert Counter(claimed).most_common(1)[0][1] == 1


def test_rescuers_racing_recover_each_job_once(spool):
    """Several workers find the same dead owner at once; the directory rename admits one."""
    ids = _enqueue_many(spool, 50)
    victim = spool.owners.register("worker")
    for name in spool.views.pending_entries():
        assert spool.transitions.claim(name, victim) is not None
    fake_death(spool, victim)
    rescuers = [spool.owners.register("worker") for _ in range(6)]
    barrier = threading.Barrier(len(rescuers))
    results: dict[int, list] = {}

    def work(i: int) -> None:
        barrier.wait()
        results[i] = spool.recovery.run(rescuers[i])

    pool = [threading.Thread(target=work, args=(i,)) for i in range(len(rescuers))]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    recovered = [r.job_id for got in results.values() for r in got]
    assert sorted(recovered) == sorted(ids), "each job recovered exactly once"
    assert sum(1 for got in results.values() if got) == 1
    seen = job_locations(spool.root)
    assert all(places == ["pending"] for places in seen.values()) and set(seen) == set(ids)
    for job_id in ids:
        assert spool.find(job_id).job.attempts == 1, "the interrupted attempt counts"


def test_a_job_half_way_out_of_processing_keeps_its_id(spool):
    """Taken for a move out (.taken.) but not yet moved: find sees it, so its id is never free."""
    # Enqueued by a process that is gone: its id marker names a dead creator, so only finding
    # the job keeps another enqueue from taking the id over.
    subprocess.run([sys.executable, "-m", "spoolq", "--spool", spool.root, "enqueue", "--id", "half", "--cmd",
                    "true"], check=True, capture_output=True)
    job = spool.find("half").job
    owner = spool.owners.register("worker")
    claimed = spool.transitions.claim(L.pending_name_of(job), owner)
    moving = spool.transitions.takes.take_with(claimed.path, job, "pending")
    assert spool.find("half").state == "processing"
    with pytest.raises(Exception, match="already exists"):
        spool.enqueue({"id": "half", "command": "true"})
    spool.transitions.takes.complete(os.path.dirname(claimed.path), moving, job)
    assert spool.find("half").state == "pending"
