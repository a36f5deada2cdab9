"""How many files this process may hold open (`ulimit -n`), raised to what it needs."""

from __future__ import annotations

import resource


def make_room(needed: int) -> str | None:
    """Raise this process's soft limit on open files to `needed`, if it is lower and the hard
    limit allows (the processes it starts inherit the raised soft limit). None, or one line
    saying why it cannot."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return None
    if hard != resource.RLIM_INFINITY and hard < needed:
        return f"about {needed} open files are needed; this process may open at most {hard} (`ulimit -Hn`)"
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return None
