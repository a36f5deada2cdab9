"""Measurements of a spool shared by several hosts, on a real GlusterFS (tests/dfs.py) or on any
directory a shared file system mounts: the primitives the capacity model takes (scripts/capacity.py)
and the multi-host rows of scripts/bench.py.

Each "host" is a separate client of the file system (a glusterfs FUSE client of its own, or,
with --dir, one path per host) with its own SPOOLQ_HOST; every worker is a real
`spoolq worker start` process.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

SPOOLQ = [sys.executable, "-m", "spoolq"]
STOP_LINE = re.compile(r"stopped \(claimed (\d+) jobs?, lost (\d+) claims .*listed pending/ (\d+) times, "
                       r"(\d+) polls[^,]*(?:, (\d+) listings taken from sibling)?(?:[^;]*; read (\d+) names)?")


class Unavailable(Exception):
    pass


@contextlib.contextmanager
def gluster_hosts(hosts: int = 2) -> Iterator[list[str]]:
    """Mount points of the 'strict' GlusterFS volume, one per host, on a rig of our own."""
    import pytest
    import dfs

    root = Path(tempfile.mkdtemp(prefix="spoolq-gluster-"))
    rig = dfs.Gluster(root)
    try:
        try:
            rig.start()
            points = [rig.mount("strict", chr(ord("A") + i)) for i in range(hosts)]
        except (pytest.skip.Exception, pytest.fail.Exception) as e:
            raise Unavailable(str(e)) from None
        yield points
    finally:
        rig.close()
        shutil.rmtree(root, ignore_errors=True)


def fresh_spool(points: list[str]) -> list[str]:
    """A new spool on the shared file system: its path as each host sees it."""
    name = f"spool-{os.getpid()}-{time.monotonic_ns()}"
    paths = [os.path.join(p, name) for p in points]
    from spoolq import Spool

    Spool(paths[0])
    return paths


def enqueue(path: str, n: int, command: str = "true") -> None:
    batch = "".join(f'{{"command": "{command}"}}\n' for _ in range(n))
    subprocess.run([*SPOOLQ, "--spool", path, "enqueue", "--batch", "-"], input=batch.encode(), check=True,
                   stdout=subprocess.DEVNULL, env={**os.environ, "SPOOLQ_HOST": "A"})


def drain(paths: list[str], workers_per_host: int, n: int) -> dict:
    """n jobs of `true`, drained by `workers_per_host` burst workers on each host at once."""
    enqueue(paths[0], n)
    started = time.monotonic()
    procs = []
    for i, path in enumerate(paths):
        env = {**os.environ, "SPOOLQ_HOST": chr(ord("A") + i)}
        procs.append(subprocess.Popen([*SPOOLQ, "--spool", path, "worker", "start", "--burst", "--quiet", "--count",
                                       str(workers_per_host)], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True))
    logs = [p.communicate(timeout=3600)[1] for p in procs]
    seconds = time.monotonic() - started
    won = lost = listings = stats = 0
    for log in logs:
        for m in STOP_LINE.finditer(log):
            won, lost = won + int(m[1]), lost + int(m[2])
            listings, stats = listings + int(m[3]), stats + int(m[4])
    return {"jobs": n, "seconds": seconds, "jobs_per_s": n / seconds, "claimed": won,
            "failed_claims_per_claim": lost / max(won, 1), "listings_per_s": listings / seconds,
            "hosts": len(paths), "workers_per_host": workers_per_host}


def trickle(paths: list[str], starts_per_host: int, workers_per_start: int, seconds: float = 15.0,
            rate: float = 10.0, scheduled: int = 2000, shards: int = 0) -> dict:
    """Long-running workers on every host (`starts_per_host` `worker start --count
    workers_per_start` each), fed `rate` jobs a second from host A for `seconds`, beside
    `scheduled` jobs due in an hour (names every listing reads): how often the server lists
    pending/. Two starts of one worker per host list it each on their own; one start of two shares.
    With `shards` (config pending_shards), the scheduled jobs sit in a shard an hour old, as a
    backlog built up over time does."""
    from spoolq import Spool

    spool = Spool(paths[0])
    spool.set_config("poll_interval", 0.5)
    if shards:
        spool.set_config("pending_shards", shards)
        old_backlog(spool, scheduled, time.time() - 3600)
    else:
        batch = "".join('{"command": "true", "delay": 3600}\n' for _ in range(scheduled))
        subprocess.run([*SPOOLQ, "--spool", paths[0], "enqueue", "--batch", "-"], input=batch.encode(), check=True,
                       stdout=subprocess.DEVNULL)
    procs = []
    for i, path in enumerate(paths):
        env = {**os.environ, "SPOOLQ_HOST": chr(ord("A") + i)}
        procs += [subprocess.Popen([*SPOOLQ, "--spool", path, "worker", "start", "--quiet", "--count",
                                    str(workers_per_start)],
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                  for _ in range(starts_per_host)]
    want = starts_per_host * workers_per_start * len(paths)
    deadline = time.monotonic() + 60
    while len([w for w in spool.workers() if w.role == "worker"]) < want and time.monotonic() < deadline:
        time.sleep(0.1)
    started, count = time.monotonic(), 0
    while time.monotonic() - started < seconds:
        spool.enqueue({"command": "true"})
        count += 1
        time.sleep(max(0.0, started + count / rate - time.monotonic()))
    while spool.counts().pending and time.monotonic() - started < seconds + 60:
        time.sleep(0.1)
    elapsed = time.monotonic() - started
    for p in procs:
        p.send_signal(signal.SIGTERM)
    logs = [p.communicate(timeout=120)[1] for p in procs]
    listings = shared = won = names = 0
    for log in logs:
        for m in STOP_LINE.finditer(log):
            won, listings, shared = won + int(m[1]), listings + int(m[3]), shared + int(m[5] or 0)
            names += int(m[6] or 0)
    return {"jobs": count, "claimed": won, "seconds": elapsed, "listings_per_s": listings / elapsed,
            "shared_per_s": shared / elapsed, "names_per_s": names / elapsed, "starts_per_host": starts_per_host,
            "workers_per_start": workers_per_start, "shards": shards}


def old_backlog(spool, n: int, when: float) -> None:
    """n jobs due in a day, written straight into the shard of `when` (as if enqueued then)."""
    from spoolq.format import layout
    from spoolq.store import shards

    shard = os.path.join(spool.layout.pending, shards.shard_of(when, spool.config.pending_shards))
    os.mkdir(shard)
    for _ in range(n):
        job = spool.make_job({"command": "true", "delay": 86400})
        with open(os.path.join(shard, layout.pending_name_of(job)), "wb") as f:
            f.write(job.to_json())


def primitives(paths: list[str], names: int = 2000) -> dict:
    """What one file-system round trip costs, seen from host B: a stat of pending/, a listing
    per name, a claim (a rename won), a lost claim (a rename of a name gone)."""
    a, b = paths[0], paths[-1]
    enqueue(a, names)
    pending_b = os.path.join(b, "pending")
    stat_s = _median_time(lambda: os.stat(pending_b), 200)
    list_s = _median_time(lambda: os.listdir(pending_b), 9)
    claim_dir = os.path.join(b, "processing", "measure")
    os.mkdir(claim_dir)
    entries = sorted(os.listdir(pending_b))[:200]
    claims = []
    for e in entries:
        t = time.perf_counter()
        os.rename(os.path.join(pending_b, e), os.path.join(claim_dir, e))
        claims.append(time.perf_counter() - t)
    lost = []
    for e in entries:
        t = time.perf_counter()
        try:
            os.rename(os.path.join(pending_b, e), os.path.join(claim_dir, e + ".x"))
        except FileNotFoundError:
            pass
        lost.append(time.perf_counter() - t)
    for e in entries:
        os.rename(os.path.join(claim_dir, e), os.path.join(pending_b, e))
    os.rmdir(claim_dir)
    return {"stat_s": stat_s, "list_s_per_name": list_s / names, "list_names": names,
            "claim_s": statistics.median(claims), "lost_claim_s": statistics.median(lost)}


def _median_time(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
