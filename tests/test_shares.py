"""Shares: workers of one queue take different names first, so they do not race for one head."""

from __future__ import annotations

import json
import re
import tracemalloc

import pytest
from hypothesis import given, strategies as st

from conftest import spoolq
from spoolq.format import layout
from spoolq.pending.index import PendingIndex
from spoolq.pending.dealing import STEAL_AFTER, Share, Takers, prefer

SECOND = 10**9


def name(seq_s: float, job_id: str, priority: int = 0, queue: str = layout.DEFAULT_QUEUE) -> str:
    return layout.pending_name(job_id, priority, int(seq_s * SECOND), None, queue)


def first_of_two(names: list[str]) -> PendingIndex:
    """The index of worker w1 of two, holding `names`."""
    index = PendingIndex()
    index.reshare(Share("w1", {"w1": None, "w2": None}))
    for n in names:
        index.add(n)
    return index


owners = st.lists(st.text("abcdef0123456789-", min_size=3, max_size=10), min_size=1, max_size=5, unique=True)
taken = st.one_of(st.none(), st.frozensets(st.sampled_from(["default", "mail", "img"]), max_size=2))


@given(st.data(), owners, st.lists(st.text("0123456789abcdef", min_size=8, max_size=8), min_size=1, max_size=30),
       st.sampled_from(["default", "mail", "img"]))
def test_every_name_is_in_the_share_of_exactly_one_worker_that_takes_its_queue(data, who, ids, queue):
    takers = {owner: data.draw(taken) for owner in who}
    serving = [o for o, qs in takers.items() if qs is None or queue in qs]
    for job_id in ids:
        n = name(1_700_000_000, job_id, queue=queue)
        holders = [o for o in serving if Share(o, takers).mine(queue, n)]
        assert len(holders) == (1 if serving else 0)
        outsider = Share("not-registered", takers)
        assert outsider.mine(queue, n), "a worker not among the takers has the whole queue"


def test_a_worker_alone_on_its_queue_has_all_of_it():
    takers = {"w1": None, "w2": frozenset({"mail"})}
    assert all(Share("w1", takers).mine("img", name(1, f"{i:08x}", queue="img")) for i in range(50))
    mail = [Share("w1", takers).mine("mail", name(1, f"{i:08x}", queue="mail")) for i in range(200)]
    assert 40 < sum(mail) < 160, "two workers take mail: each has about half of it"


@pytest.mark.parametrize("own, theirs, take_theirs", [
    (None, name(5, "b"), True),  # its own share is empty: it helps the others
    (name(5, "a"), None, False),
    (name(5, "a", priority=0), name(9, "b", priority=1), True),  # a higher priority waits for no share
    (name(5, "a", priority=1), name(1, "b", priority=0), False),
    (name(5, "a"), name(5 - STEAL_AFTER - 0.5, "b"), True),  # enqueued well before its own head
    (name(5, "a"), name(5 - STEAL_AFTER + 0.5, "b"), False),  # within the bound: its own first
])
def test_which_head_a_worker_takes(own, theirs, take_theirs):
    assert prefer(own, theirs) is take_theirs


def test_a_worker_takes_its_own_share_first_and_then_helps_with_the_others():
    names = [name(100 + i * 0.001, f"{i:08x}") for i in range(40)]
    index = first_of_two(names)
    popped = [index.pop_ready(1) for _ in names]
    mine = [n for n in names if index.share.mine("default", n)]
    assert 0 < len(mine) < len(names)
    assert popped == mine + [n for n in names if n not in mine]
    assert index.pop_ready(1) is None


def test_another_share_s_job_is_not_passed_over_by_jobs_enqueued_long_after_it():
    """Its worker may be busy with a long job: jobs enqueued STEAL_AFTER later do not overtake it."""
    share = Share("w1", {"w1": None, "w2": None})
    theirs = next(n for n in (name(100, f"{i:08x}") for i in range(100)) if not share.mine("default", n))
    own = [n for n in (name(100 + 2 * STEAL_AFTER, f"{i:08x}") for i in range(100, 200))
           if share.mine("default", n)][:3]
    assert first_of_two([*own, theirs]).pop_ready(1) == theirs


def test_resharing_deals_the_names_again():
    names = [name(100 + i * 0.001, f"{i:08x}") for i in range(20)]
    index = first_of_two(names)
    index.reshare(Share("w1", {"w1": None}))  # w2 has left: the whole queue is w1's, in run order
    assert [index.pop_ready(1) for _ in names] == names


def test_takers_are_the_registered_workers_each_read_once(spool):
    reads = []

    def record(owner):
        reads.append(owner)
        return spool.owners.record(owner)

    w1 = spool.owners.register("worker")
    w2 = spool.owners.register("worker", queues=["mail"])
    sup = spool.owners.register("supervisor")
    takers = Takers(spool.owners.registered, record)
    share = takers.share(w1)
    assert share.takers == {w1: None, w2: frozenset({"mail"})}, "a supervisor takes no job"
    assert sorted(reads) == sorted([w1, w2, sup])
    spool.owners.unregister(w2)
    assert takers.share(w1).takers == {w1: None}
    assert sorted(reads) == sorted([w1, w2, sup]), "a registration is read once"


def test_a_garbled_registration_takes_no_share(spool):
    w1 = spool.owners.register("worker")
    with open(spool.layout.worker_file("vm-1-abcdef"), "w") as f:
        f.write('{"role": "worker", "queues": "not a list"}')
    assert Takers(spool.owners.registered, spool.owners.record).share(w1).takers == {w1: None}


@pytest.mark.slow
@pytest.mark.alone
def test_two_burst_workers_seldom_race_for_the_same_job(spool, spool_dir):
    """Without shares each job was tried by both workers: about one lost claim per job. (Alone: beside
    another test on two cores, one worker may start so late that the two race for most of the end of
    the burst; 769 lost claims were seen so, against 20-250 on a machine to itself.)"""
    spool.enqueue_many([{"command": "true"} for _ in range(1000)])
    result = spoolq(spool_dir, "worker", "start", "--count", "2", "--burst", "--quiet", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "burst finished: 1000 jobs in 1000 attempts, 1000 ok" in result.stderr
    lost = [int(n) for n in re.findall(r"lost (\d+) claims? to other workers", result.stderr)]
    # What is left: names the other worker took, tried once one's own share is done, until a
    # listing forgets them (they cost about one listing: index.Pacing).
    assert len(lost) == 2 and sum(lost) < 1000 // 2, result.stderr


def test_a_registered_worker_that_takes_nothing_holds_no_job_back(spool, spool_dir):
    spool.owners.register("worker")  # registered, never claiming: busy with a long job, say
    spool.enqueue_many([{"command": "true"} for _ in range(40)])
    result = spoolq(spool_dir, "worker", "start", "--burst", "--quiet", timeout=60)
    assert result.returncode == 0 and "burst finished: 40 jobs in 40 attempts, 40 ok" in result.stderr, result.stderr


def test_a_pick_after_a_lost_claim_keeps_to_the_bound():
    """After a lost claim a worker picks among its first few names: never one enqueued more than
    STEAL_AFTER after another share's waiting head."""
    share = Share("w1", {"w1": None, "w2": None})
    ids = [f"{i:08x}" for i in range(400)]
    theirs = next(n for n in (name(100.5, i) for i in ids) if not share.mine("default", n))
    own_early = next(n for n in (name(100, i) for i in ids) if share.mine("default", n))
    own_late = [n for n in (name(100 + 5 * STEAL_AFTER, i) for i in ids) if share.mine("default", n)][:7]
    for _ in range(30):
        assert first_of_two([theirs, own_early, *own_late]).pop_ready(1, spread=8) == own_early


def test_a_share_nobody_takes_is_helped_after_a_second_and_then_in_run_order():
    """Its worker is busy with a long job (or dead, not yet recovered): a batch's names, enqueued
    together, must not all wait for the other worker's whole share."""
    names = [name(100 + i * 0.001, f"{i:08x}") for i in range(60)]
    index = first_of_two(names)
    theirs = [n for n in names if not index.share.mine("default", n)]
    t = 5_000_000
    taken = [index.pop_ready(t), index.pop_ready(t + 500)]
    assert not set(taken) & set(theirs), "within the second: its own share first"
    helped = index.pop_ready(t + int(STEAL_AFTER * 1000))
    assert helped == theirs[0], "the other share's head has waited a second"
    index.claimed(helped, True)  # won: nobody else takes that share
    popped = [index.pop_ready(t + 2000) for _ in range(6)]
    assert popped == sorted(set(names) - set(taken) - {helped})[:6], "helping: every share's names in run order"
    lost = next(p for p in popped if p in theirs)
    index.claimed(lost, False)  # its worker is back: it took that one
    after = [index.pop_ready(t + 2000) for _ in range(3)]
    assert not any(p in theirs for p in after), "its own share first again"


def write_registration(spool, record: dict) -> None:
    """A registration as another worker (or someone in the spool's group) would leave it."""
    with open(spool.layout.worker_file(record["owner"]), "w") as f:
        json.dump(record, f)


def share_and_memory(spool, me: str) -> tuple[Share, int]:
    """`me`'s share as a new Takers deals it, and the bytes that Takers keeps to do so. A first
    Takers, kept meanwhile, has interned the names already: the interpreter's table of interned
    strings, which grows by doubling (a MB or more, once a process has interned many names), is
    then never grown inside the measure, where it was counted as kept or not by the test's order."""
    warm = Takers(spool.owners.registered, spool.owners.record).share(me)
    tracemalloc.start()
    try:
        share = Takers(spool.owners.registered, spool.owners.record).share(me)
        return share, tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
        del warm


def test_registrations_with_too_many_or_invalid_queues_take_no_share(spool):
    """Every worker reads every registration and keeps what a share needs: a record spoolq would
    not write (workers/ is writable by the spool's group) is not counted, and costs no memory."""
    from spoolq.pending.dealing import MAX_QUEUES

    me = spool.owners.register("worker")
    record = spool.owners.record(me)
    hostile = {f"vm-1-{k:06x}": [f"{k:x}{i:x}" for i in range(7500)] for k in range(10)}
    hostile["vm-2-000000"] = [f"q{i}" for i in range(MAX_QUEUES + 1)]
    hostile["vm-3-000000"] = ["mail", ".hidden"]
    for owner, queues in hostile.items():
        write_registration(spool, {**record, "owner": owner, "queues": queues})
    share, kept = share_and_memory(spool, me)
    assert share.takers == {me: None}
    assert kept < 1_000_000, f"{kept / 1e6:.1f} MB kept"


def of_share(mine: bool, seq_s: float, queue: str = layout.DEFAULT_QUEUE, count: int = 1, start: int = 0) -> list[str]:
    """`count` names enqueued at `seq_s`, of w1's share (`mine`) or of w2's, w1 and w2 taking every queue."""
    share = Share("w1", {"w1": None, "w2": None})
    names = (name(seq_s, f"{i:08x}", queue=queue) for i in range(start, start + 10_000))
    return [n for n in names if share.mine(queue, n) == mine][:count]


def test_a_busy_share_s_head_is_helped_within_seconds_beside_a_queue_whose_slots_are_full(spool):
    """w2 is busy with a long job. A job of w2's share waits in `limited`, whose one slot is held;
    w1's own jobs are of `default`, limited to 4 (free). The loop below is worker._loop's and
    _claim_and_run's, with the real Admission: a job it cannot get a slot for is put back and its
    queue passed over until a slot is given back. The other shares' first name takes turns
    between the two; w2's head in `default` must still be helped within seconds."""
    from spoolq.running.admission import Admission

    spool.slots.set_limit("limited", 1)
    spool.slots.set_limit(layout.DEFAULT_QUEUE, 4)
    assert spool.slots.take("limited", spool.owners.register("worker")) is not None  # held by a long job
    me = spool.owners.register("worker")
    admission = Admission(spool, None, lambda: True, lambda _: None)
    stuck, waiting = of_share(False, 100.0, "limited")[0], of_share(False, 100.1)[0]
    index = first_of_two([stuck, waiting, *of_share(True, 100.2, count=200, start=1000)])
    now, ran = 10_000_000, 0
    while ran < 50:  # each of w1's jobs takes 2 s
        got = index.pop_ready(now, 1, admission.blocked())
        go, slot = admission.slot_for(got, me)
        if not go:
            assert got == stuck
            index.add(got)
            continue
        if got == waiting:
            break
        index.claimed(got, True)
        ran += 1
        now += 2000
        admission.give_back(slot)
    assert got == waiting and ran <= 3, f"w2's head waited behind {ran} of w1's jobs ({ran * 2} s)"


def test_a_pick_among_another_share_s_first_names_keeps_to_the_bound_too():
    own_head, theirs_early = of_share(True, 100.0)[0], of_share(False, 98.0)[0]  # theirs: 2 s before
    theirs_late = of_share(False, 700.0, count=7, start=5000)  # 10 minutes after own_head
    picks = {first_of_two([own_head, theirs_early, *theirs_late]).pop_ready(1, spread=8) for _ in range(40)}
    assert picks <= {theirs_early, own_head}


def test_a_retry_is_not_taken_from_another_share_for_its_old_place_alone():
    """A retry keeps its place (its sequence) but became ready at its due time: not long waiting."""
    own_head = of_share(True, 100.0)[0]
    theirs = of_share(False, 50.0)[0].replace(".0000000000000@", f".{int(100.2 * 1000):013d}@")
    assert prefer(own_head, theirs) is False and prefer(own_head, of_share(False, 50.0)[0]) is True


def test_workers_naming_the_same_queues_keep_one_copy_of_them(spool):
    """`worker start --count 64 --queue <1000 queues>`: every worker reads every registration."""
    widest = [f"{i:04d}".ljust(64, "q") for i in range(1000)]
    me = spool.owners.register("worker", queues=widest)
    record = spool.owners.record(me)
    for k in range(63):
        write_registration(spool, {**record, "owner": f"vm-{k}-abcdef"})
    share, kept = share_and_memory(spool, me)
    assert len(share.takers) == 64 and kept < 1_000_000, f"{kept / 1e6:.1f} MB kept"


def test_a_registration_that_could_not_be_read_is_read_again(spool):
    me = spool.owners.register("worker")
    other = spool.owners.register("worker")
    fails = {other}

    def record(owner):
        if owner in fails:
            fails.discard(owner)
            return {}  # what registration() gives for a file it could not read (EMFILE, say)
        return spool.owners.record(owner)

    takers = Takers(spool.owners.registered, record)
    assert set(takers.share(me).takers) == {me}
    assert set(takers.share(me).takers) == {me, other}
