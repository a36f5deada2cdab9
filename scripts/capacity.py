#!/usr/bin/env python3
"""How many hosts can one spool serve? A capacity model fed with measured primitives.

    scripts/capacity.py --measure               # bring up the GlusterFS rig, measure, print the table
    scripts/capacity.py --measure --save p.json # ... and keep the measured primitives
    scripts/capacity.py --load p.json           # the table from primitives measured before
    scripts/capacity.py --dir /mnt/a /mnt/b     # measure a shared file system you mount (one path per host)

Primitives, seen from one client: a stat of pending/ (t_stat), a listing per name (t_name), a
claim (t_claim, a rename won), a lost claim (t_lost), and the throughput the server sustains
with 2 hosts x 2 workers draining jobs of `true` (S, jobs/s; failed claims per claim f).

The model, per hosts H x workers per host W (n = H*W), backlog P, poll interval p, job length d:
- failed claims per claim f = min(f2x2 * (n-1)/3, t_name*P/t_lost + 1): measured with 4 workers,
  taken to grow with the workers racing, held down by the listing a worker takes once its lost
  claims cost as much as a listing (which forgets every name taken);
- server time per job = 1/S + (f - f2x2) * 2 * t_lost (each further lost claim, and the listing it
  buys); busy listings are held to 1% of the server's time, all workers together;
- jobs/s = min(n / (d + 1/S1), 0.99 / server time per job), S1 being one worker's rate;
- idle polling keeps the server busy n * t_stat / p of the time (one stat per poll per worker; a
  listing only when pending/ changed);
- while pending/ changes at every poll (idle workers, jobs arriving), each host lists it once a
  poll, its workers sharing the listing: the server is busy listing H * t_name * P / p of the time;
- a job enqueued on another host starts after p/2 + t_stat + t_name*P + t_claim on average
  (idle workers; p more at worst); on the same host, file-system events: milliseconds.
- sharded (config pending_shards = w seconds, spoolq/shards.py), same scenario: writers touch
  pending/ after each write, so an idle poll is still one stat. A poll after arrivals (each
  worker's own) stats pending/ and the ~2 shards written since its last look and lists the one
  that changed: the names left there, A = min(P, jobs/s * p) for workers that keep up; it lists
  pending/ itself (S names: its shards, 3600 / w for a backlog enqueued within the hour; a day's
  worth keeps 86400 / w) at most every TOP_EVERY seconds; and each host lists all P names every
  T = min(3600, max(p, 100 * t_name * P * n)) seconds (the workers' pacing, shared by a host's
  workers). The server is busy n * (3 t_stat + t_name A + t_name S p / max(p, TOP_EVERY)) / p +
  H * t_name * P / T of the time, and a job from another host starts after p/2 + 3 t_stat +
  t_name A + t_claim.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

HOSTS = (1, 2, 10, 25, 50, 100)
SHARD_S = 60  # pending_shards in the model (the README's advice)
TOP_EVERY = 5.0  # rescans.Arrivals.TOP_EVERY
FULL_EVERY = 3600.0  # index.Pacing.SHARDED_FULL_EVERY


def measure(points: list[str]) -> dict:
    import multihost

    prims = multihost.primitives(multihost.fresh_spool(points))
    one = multihost.drain(multihost.fresh_spool(points[:1]), 1, 200)
    two_by_two = multihost.drain(multihost.fresh_spool(points[:2]), 2, 400)
    return {**prims, "one_worker_jobs_per_s": one["jobs_per_s"], "jobs_per_s_2x2": two_by_two["jobs_per_s"],
            "failed_claims_per_claim_2x2": two_by_two["failed_claims_per_claim"],
            "listings_per_s_2x2": two_by_two["listings_per_s"]}


def predict(m: dict, hosts: int, workers: int, backlog: int, poll: float, job_s: float) -> dict:
    n = hosts * workers
    list_s = m["list_s_per_name"] * max(backlog, 1)
    f2 = m["failed_claims_per_claim_2x2"]
    # Failed claims per claim: measured with 4 workers racing, taken to grow with the racers, and
    # held down by the listing a worker takes once its lost claims cost as much as one.
    f = 0.0 if n == 1 else min(f2 * (n - 1) / 3, list_s / m["lost_claim_s"] + 1)
    # Server time per job: as measured at 2 x 2, plus each further lost claim and the listing it buys.
    server_s = 1 / m["jobs_per_s_2x2"] + max(0.0, f - f2) * 2 * m["lost_claim_s"]
    idle_load = n * m["stat_s"] / poll  # every worker idle: one stat per poll
    server_jobs = 0.99 / server_s  # busy listings: 1% of the server's time, all workers together
    per_worker = 1 / (job_s + 1 / m["one_worker_jobs_per_s"])
    jobs_per_s = min(n * per_worker, server_jobs)
    return {"hosts": hosts, "workers": n, "backlog": backlog, "jobs_per_s": jobs_per_s,
            "bound": "workers" if n * per_worker <= server_jobs else "server", "failed_claims_per_claim": f,
            "idle_server_load": idle_load, "listing_load": hosts * list_s / poll,
            "pickup_s": poll / 2 + m["stat_s"] + list_s + m["claim_s"], **sharded(m, hosts, n, backlog, poll, jobs_per_s)}


def sharded(m: dict, hosts: int, n: int, backlog: int, poll: float, jobs_per_s: float) -> dict:
    """The same spool with pending/ in shards of SHARD_S seconds."""
    t_name = m["list_s_per_name"]
    arrived_s = t_name * min(backlog, jobs_per_s * poll)
    top_s = t_name * min(backlog, 3600 / SHARD_S) * poll / max(poll, TOP_EVERY)
    full_s = t_name * max(backlog, 1)
    full_every = min(FULL_EVERY, max(poll, 100 * full_s * n))
    poll_s = 3 * m["stat_s"] + arrived_s
    return {"sharded_listing_load": n * (poll_s + top_s) / poll + hosts * full_s / full_every,
            "sharded_pickup_s": poll / 2 + poll_s + m["claim_s"]}


def _share(load: float) -> str:
    return "over 100% (polls stretch)" if load > 1 else f"{load:.0%}"


def table(m: dict, workers: int, poll: float, job_s: float) -> str:
    out = ["| hosts | workers | backlog | jobs/s | bound by | failed claims per claim | server busy polling idle "
           "| server busy listing while pending/ changes | pickup from another host (s) "
           f"| the same, pending/ sharded ({SHARD_S} s) | pickup, sharded (s) |",
           "| ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for backlog in (1_000, 100_000):
        for hosts in HOSTS:
            r = predict(m, hosts, workers, backlog, poll, job_s)
            out.append(f"| {hosts} | {r['workers']} | {backlog:,} | {r['jobs_per_s']:.1f} | {r['bound']} | "
                       f"{r['failed_claims_per_claim']:.2f} | {r['idle_server_load']:.0%} | {_share(r['listing_load'])} | "
                       f"{r['pickup_s']:.2f} | {_share(r['sharded_listing_load'])} | {r['sharded_pickup_s']:.2f} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--measure", action="store_true", help="measure on a GlusterFS rig of our own")
    ap.add_argument("--dir", nargs="+", help="measure here instead: the same shared directory, one path per host")
    ap.add_argument("--load", help="primitives saved by --save")
    ap.add_argument("--save", help="write the measured primitives here")
    ap.add_argument("--workers", type=int, default=4, help="workers per host")
    ap.add_argument("--poll", type=float, default=1.0, help="poll_interval, seconds")
    ap.add_argument("--job", type=float, default=1.0, help="job length, seconds")
    a = ap.parse_args()
    if a.load:
        with open(a.load) as f:
            m = json.load(f)
    elif a.dir:
        m = measure(a.dir)
    elif a.measure:
        import multihost

        try:
            with multihost.gluster_hosts(2) as points:
                m = measure(points)
        except multihost.Unavailable as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    else:
        ap.error("say --measure, --dir or --load")
    if a.save:
        with open(a.save, "w") as f:
            json.dump(m, f, indent=1)
    print("measured: " + ", ".join(f"{k} {v:.3g}" for k, v in m.items() if isinstance(v, float)))
    print(f"model: {a.workers} workers per host, poll_interval {a.poll:g} s, jobs of {a.job:g} s\n")
    print(table(m, a.workers, a.poll, a.job))
    return 0


if __name__ == "__main__":
    sys.exit(main())
