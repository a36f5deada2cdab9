"""`--queue` on the commands that only read (`list`, `dlq list`, `stats`), as on `pause`, `resume`
and `worker start`: given again, or as Q,Q, every queue named counts. Repeated, it kept the last
one alone (click's way), so a script's `list --queue a --queue b` showed b's jobs as if they
were all, and said nothing."""

from __future__ import annotations

import json

import pytest

from conftest import spoolq
from spoolq import Spool


@pytest.fixture
def three_queues(spool_dir):
    spool = Spool(spool_dir)
    for queue in ("a", "b", "c"):
        spool.enqueue({"id": f"job-{queue}", "command": "false", "queue": queue, "max_retries": 0})
    return spool_dir


def ids(result) -> list[str]:
    assert result.returncode == 0, result.stderr
    return sorted(view["id"] for view in json.loads(result.stdout))


@pytest.mark.parametrize("words", [("--queue", "a", "--queue", "b"), ("--queue", "a,b"), ("--queue", "b , a")])
def test_list_takes_every_queue_named(three_queues, words):
    assert ids(spoolq(three_queues, "list", *words, "--json")) == ["job-a", "job-b"]


def test_list_says_which_queues_had_nothing(three_queues):
    result = spoolq(three_queues, "list", "--state", "done", "--queue", "a", "--queue", "b")
    assert result.returncode == 0
    assert "no done jobs of queues a, b" in result.stderr + result.stdout


def test_a_bad_name_among_several_is_refused_before_reading(three_queues):
    result = spoolq(three_queues, "list", "--queue", "a", "--queue", "../b")
    assert result.returncode == 2
    assert "invalid queue '../b'" in result.stderr


def test_dlq_list_and_stats_take_every_queue_named(three_queues):
    r = spoolq(three_queues, "worker", "start", "--burst", "-q")
    assert r.returncode == 0, r.stderr
    assert ids(spoolq(three_queues, "dlq", "list", "--queue", "c", "--queue", "a", "--json")) == ["job-a", "job-c"]
    stats = spoolq(three_queues, "stats", "--queue", "a", "--queue", "b", "--json")
    assert stats.returncode == 0, stats.stderr
    figures = json.loads(stats.stdout)
    assert sorted(figures["queues"]) == ["a", "b"]
    assert figures["total"]["dead"] == 2


def test_the_api_takes_several_queues_too(three_queues):
    """`Spool.stats(queue=...)` takes a name or several (here the queues' ready jobs alone: no
    attempt has run)."""
    spool = Spool(three_queues)
    stats = spool.stats(3600, queue={"a", "c"})
    assert set(stats.queues) == {"a", "c"}
    assert set(spool.stats(3600, queue="a").queues) == {"a"}
