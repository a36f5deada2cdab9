"""Retry policy, pure: after an attempt, where the job goes next and when."""

from __future__ import annotations

from dataclasses import dataclass

from .states import State


@dataclass(frozen=True)
class Decision:
    state: str  # "done", "pending" (to run again at run_at) or "dead"
    run_at: float | None = None


def backoff(failed_attempts: int, base: float, cap: float) -> float:
    """Seconds to wait after failed attempt n: base ** n, capped."""
    try:
        delay = float(base) ** failed_attempts
    except OverflowError:
        return float(cap)
    return min(delay, float(cap))


def decide(*, ok: bool, attempts: int, max_retries: int, now: float, base: float, cap: float) -> Decision:
    """`attempts` counts the attempt just finished. A job runs at most 1 + max_retries times."""
    if ok:
        return Decision(State.DONE)
    if attempts > max_retries:
        return Decision(State.DEAD)
    return Decision(State.PENDING, now + backoff(attempts, base, cap))
