#!/usr/bin/env python3
"""Chaos run: enqueue many jobs, run `spoolq worker start --count N`, SIGKILL one worker process
every KILL_INTERVAL seconds for DURATION seconds, then check that nothing was lost.

Every job appends its id to one runs file (O_APPEND), so afterwards we know how often each ran.
Passes when every job is done, none is dead, pending or processing, every job ran at least once,
the re-runs number no more than the kills, and `fsck` finds the spool clean.

    scripts/chaos.py                        # 1,500 jobs, 3 workers, a kill every 150 ms for 5 s
    scripts/chaos.py --jobs 20000 --duration 60 --keep --spool /tmp/chaos

Prints a JSON summary on stdout; exit status 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from spoolq import Spool  # noqa: E402
from spoolq import fsck  # noqa: E402
from spoolq.system import liveness  # noqa: E402

START_WITHIN = 15.0  # seconds for every worker to be up (about 1 s here on the Gluster rig; see "start" in the summary)


def live_workers(spool: Spool, supervisor: int, killed: set[int]) -> list[int]:
    pids = []
    for w in spool.workers():
        if w.role == "worker" and w.extra.get("supervisor") == supervisor and w.pid not in killed:
            if liveness.alive(w.pid):
                pids.append(w.pid)
    return pids


def chaos(spool_dir: str, *, jobs: int, workers: int, kill_interval: float, duration: float,
          timeout: float, backoff: float, seed: int | None = None, dropins: bool = False,
          views: tuple[str, ...] = ()) -> dict:
    """`views`: the same spool as other hosts see it (another mount of a shared file system);
    each gets a supervisor of its own, with its own SPOOLQ_HOST, and the kills pick among all."""
    rng = random.Random(seed)
    spool = Spool(spool_dir)
    spool.set_config("backoff_base", backoff)  # recovered jobs count a failed attempt and back off
    spool.set_config("poll_interval", 0.5)
    # Appends from two clients of a network file system may overwrite each other: with views,
    # the runs file is local (every "host" here is this machine).
    runs = os.path.join(tempfile.mkdtemp(prefix="spoolq-chaos-runs-") if views else spool_dir, "chaos-runs.log")
    open(runs, "a").close()
    command = f'echo "$SPOOLQ_JOB_ID" >> {shlex.quote(runs)}'
    ids = [f"chaos-{n:06d}" for n in range(jobs)]
    t0 = time.monotonic()
    specs = [{"id": i, "command": command, "max_retries": 25} for i in ids]
    if dropins:  # the drop-in protocol: the workers adopt them while they are being killed
        for spec in specs:
            staged = os.path.join(spool.layout.pending, f".{spec['id']}.json")
            with open(staged, "w") as f:
                json.dump(spec, f)
            os.rename(staged, os.path.join(spool.layout.pending, f"{spec['id']}.json"))
    else:
        spool.enqueue_many(specs)
    enqueued = time.monotonic() - t0

    log_path = os.path.join(spool.layout.dir("log"), "chaos-supervisor.log")
    procs = []
    with open(log_path, "ab") as log:
        for n, path in enumerate((spool_dir, *views)):
            env = {**os.environ, "SPOOLQ_HOST": f"chaos{n}"} if views else None
            procs.append(subprocess.Popen([sys.executable, "-m", "spoolq", "--spool", path, "worker", "start",
                                           "--count", str(workers)], stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True, env=env))
    killed: set[int] = set()
    every_worker = lambda: [pid for p in procs for pid in live_workers(spool, p.pid, killed)]  # noqa: E731
    try:
        began = time.monotonic()
        deadline = began + START_WITHIN
        while len(every_worker()) < workers * len(procs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                with open(log_path, errors="replace") as f:
                    tail = f.read()[-2000:]
                raise RuntimeError(f"the workers did not start; {log_path} ends:\n{tail}")
            time.sleep(0.02)
        start = time.monotonic()
        started = start - began
        next_kill = start + kill_interval
        while time.monotonic() < start + duration:
            time.sleep(max(0.0, next_kill - time.monotonic()))
            next_kill += kill_interval
            candidates = every_worker()
            if not candidates:
                continue
            pid = rng.choice(candidates)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            killed.add(pid)
        kill_phase = time.monotonic() - start
        deadline = time.monotonic() + timeout
        while True:
            c = spool.counts()
            if c.pending + c.scheduled + c.processing == 0:
                break
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                break
            time.sleep(0.05)
        drained = time.monotonic() - start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    supervisor_exit = max(abs(p.returncode) for p in procs)
    counts = spool.counts()
    ran: dict[str, int] = {}
    with open(runs) as f:
        for line in f:
            ran[line.strip()] = ran.get(line.strip(), 0) + 1
    done = {e[:-5] for e in os.listdir(spool.layout.done) if e.endswith(".json")}
    lost = sorted(i for i in ids if i not in done)
    never_ran = sorted(i for i in ids if ran.get(i, 0) == 0)
    reruns = sum(n - 1 for n in ran.values() if n > 1)
    problems = [p.to_dict() for p in fsck.check(spool, stale_after=3600)]
    ok = (not lost and not never_ran and counts.done == jobs and counts.dead == 0 and counts.processing == 0
          and counts.pending + counts.scheduled == 0 and reruns <= len(killed) and not problems
          and supervisor_exit == 0)
    return {
        "ok": ok, "jobs": jobs, "workers": workers, "kills": len(killed), "reruns": reruns,
        "done": counts.done, "dead": counts.dead, "processing": counts.processing,
        "pending": counts.pending + counts.scheduled, "lost": lost[:20], "lost_count": len(lost),
        "never_ran": never_ran[:20], "fsck": problems[:20], "supervisor_exit": supervisor_exit,
        "seconds": {"enqueue": round(enqueued, 2), "start": round(started, 2), "kill_phase": round(kill_phase, 2),
                    "drained_after": round(drained, 2)},
        "spool": spool_dir, "supervisor_log": log_path,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=1500, help="jobs to enqueue (default 1500)")
    ap.add_argument("--workers", type=int, default=3, help="worker processes (default 3)")
    ap.add_argument("--kill-interval", type=float, default=0.15, help="seconds between SIGKILLs (default 0.15)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds of killing (default 5)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the queue to drain")
    ap.add_argument("--backoff", type=float, default=0.5, help="the spool's backoff_base (default 0.5)")
    ap.add_argument("--seed", type=int, help="random seed for the choice of victims")
    ap.add_argument("--dropins", action="store_true", help="drop the jobs in as files instead of enqueueing them")
    ap.add_argument("--spool", help="spool directory (default: a fresh temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary spool for inspection")
    ap.add_argument("--view", action="append", default=[], metavar="PATH",
                    help="the same spool seen from another host (another mount); repeatable")
    args = ap.parse_args()
    spool_dir = args.spool or tempfile.mkdtemp(prefix="spoolq-chaos-")
    summary = None
    try:
        summary = chaos(spool_dir, jobs=args.jobs, workers=args.workers, kill_interval=args.kill_interval,
                        duration=args.duration, timeout=args.timeout, backoff=args.backoff, seed=args.seed,
                        dropins=args.dropins, views=tuple(args.view))
    finally:
        if summary is None or not summary["ok"]:
            print(f"spool kept for inspection: {spool_dir}", file=sys.stderr)
        elif not args.spool and not args.keep:
            shutil.rmtree(spool_dir, ignore_errors=True)
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
