"""The image's health check: healthy (exit 0) while a worker of this container is registered in
the spool and keeps its lease, its last heartbeat younger than lease_timeout; otherwise exit 1,
saying why in one line. A worker that hangs, or whose spool has become unwritable, is unhealthy
before another host takes its job over."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import time

from spoolq.format.layout import host_name


def spoolq(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "spoolq", *args], capture_output=True, text=True, timeout=15)
    if done.returncode != 0:
        sys.exit(f"unhealthy: spoolq {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def main() -> None:
    here = host_name()
    lease = float(spoolq("config", "get", "lease_timeout"))
    beats = [datetime.datetime.fromisoformat(w["heartbeat"]).timestamp()
             for w in json.loads(spoolq("worker", "list", "--json")) if w.get("host") == here]
    if not beats:
        sys.exit(f"unhealthy: no worker of {here} is registered in the spool")
    age = time.time() - max(beats)
    if age > lease:
        sys.exit(f"unhealthy: the last heartbeat of {here} was {age:.0f}s ago (lease_timeout {lease:g}s)")
    print(f"healthy: {len(beats)} worker(s) of {here}, last heartbeat {age:.1f}s ago")


if __name__ == "__main__":
    main()
