"""scripts/bench.py --compare: every other queue that is installed gets its row of each workload
(one enqueue, a drain, idle pickup) beside spoolq's, and one that is not is skipped, saying how to
get it. Tiny sizes: this checks that the rows run, not what they measure."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys

import pytest

from spools import REPO

# tool -> why it would be missing, or None when installed
INSTALLED = {
    "nq": None if shutil.which("nq") else "nq is not installed (Debian package nq)",
    "task-spooler": None if shutil.which("tsp") else "tsp is not installed (Debian package task-spooler)",
    "huey": None if importlib.util.find_spec("huey") else "huey is not installed (pip install -e '.[bench]')",
}
WORKLOADS = ("one enqueue of `true` by {}", "drain: 6 queued `true`, 2 slots, by {}",
             "pickup, idle: job handed in -> command starts, by {}")


@pytest.fixture(scope="module")
def compared() -> tuple[dict[str, dict], str]:
    """One run of `bench.py --only none --compare --quick` at tiny sizes: (rows by name, stderr)."""
    run = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "bench.py"), "--only", "none", "--compare",
                          "--quick", "--compare-jobs", "6", "--latency-samples", "3", "--json"],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stderr
    return {row["name"]: row for row in json.loads(run.stdout)["rows"]}, run.stderr


@pytest.mark.slow
@pytest.mark.parametrize("tool", sorted(tool for tool, missing in INSTALLED.items() if missing is None))
def test_each_installed_tool_has_a_row_of_each_workload_beside_spoolq(compared, tool):
    rows, _ = compared
    for workload in WORKLOADS:
        row = rows.get(workload.format(tool))
        assert row, f"no row {workload.format(tool)!r} in {sorted(rows)}"
        assert row["paired"] and len(row["samples"]) == len(row["reference"]) >= 1
        assert all(math.isfinite(x) and x > 0 for x in row["samples"] + row["reference"])


@pytest.mark.slow
def test_a_tool_that_is_missing_is_named_with_how_to_get_it(compared):
    rows, stderr = compared
    for tool, missing in INSTALLED.items():
        if missing is not None:
            assert f"--compare skips {tool}: not installed" in stderr
            assert not [name for name in rows if name.endswith(f" by {tool}")]


def test_ci_has_the_debian_tools_it_compares_with():
    """.ci/run installs nq and task-spooler (huey is PyPI's, in the bench extra, not the tests')."""
    if os.environ.get("SPOOLQ_REQUIRE_COMPARE") == "1":
        assert INSTALLED["nq"] is None and INSTALLED["task-spooler"] is None, INSTALLED


@pytest.mark.slow
def test_the_pickup_rows_say_both_p90s(compared):
    rows, _ = compared
    pickups = [row for name, row in rows.items() if name.startswith("pickup, idle:")]
    assert pickups or all(INSTALLED.values())
    for row in pickups:
        assert row["extra"]["p90"] >= row["median"] > 0


def test_every_row_set_the_docs_name_is_one_bench_runs():
    """Each `--only` key a command in docs/performance.md gives is a row set of bench.py (an
    unknown key is refused, exit 2), and every row set main() measures is a key --only takes."""
    import re

    bench = open(os.path.join(REPO, "scripts", "bench.py")).read()
    keys = set(re.search(r"ROW_KEYS = \(([^)]*)\)", bench).group(1).replace('"', "").replace(" ", "")
               .replace("\n", "").split(","))
    assert set(re.findall(r'want\("([a-z]+)"\)', bench)) == keys
    docs = open(os.path.join(REPO, "docs", "performance.md")).read()
    named = {key for arg in re.findall(r"--only ([a-z,]+)", docs) for key in arg.split(",")}
    assert named and named - {"none"} <= keys, named - keys
    r = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "bench.py"), "--only", "nosuchrow"],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 2 and "unknown row key nosuchrow" in r.stderr, r.stderr


def test_the_idle_rows_spool_of_done_jobs_is_built_as_workers_leave_one(tmp_path):
    """The idle row's spool of done jobs is copied from one job run for real: it broke once a
    silent job that succeeds at once was left without an output log."""
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    try:
        import idlecost
    finally:
        sys.path.remove(os.path.join(REPO, "scripts"))
    spool_dir = str(tmp_path / "s")
    idlecost.finished_spool([sys.executable, "-m", "spoolq"], spool_dir, 3)
    assert len(os.listdir(os.path.join(spool_dir, "done"))) == 4
    assert sorted(os.listdir(os.path.join(spool_dir, "output"))) == [f"bench{i:07d}.log" for i in range(3)]
