"""How many files this process may hold open (`ulimit -n`), raised to what it needs."""

from __future__ import annotations

import resource


def make_room(needed: int) -> int | None:
    """Raise this process's soft limit on open files to `needed`, if it is lower and the hard
    limit allows (the processes it starts inherit the raised soft limit). None, or the hard limit
    that is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return None
    if hard != resource.RLIM_INFINITY and hard < needed:
        return hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return None
