"""Signals around a write: held while a publish (or its clean-up) runs, and the signal calls
without the signal module's enum wrapping, which one enqueue has no use for."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def signals_held() -> SignalsHeld:
    """Hold SIGINT, SIGTERM and SIGHUP while the steps inside run, so that they all happen (a
    publish, or the clean-up of one); a signal that arrives meanwhile is delivered after."""
    return SignalsHeld()


class SignalsHeld:
    """The `with` block of signals_held(). (A class, not a contextlib generator: contextlib is
    not worth loading on one enqueue's path.)"""

    __slots__ = ("_old",)

    def __enter__(self) -> None:
        calls = signal_calls()
        self._old = calls.pthread_sigmask(calls.SIG_BLOCK, {calls.SIGINT, calls.SIGTERM, calls.SIGHUP})

    def __exit__(self, *exc: object) -> None:
        calls = signal_calls()
        calls.pthread_sigmask(calls.SIG_SETMASK, self._old)


def signal_calls() -> Any:
    """The signal module's calls and numbers, without its enum wrapping (`enum` is not worth
    loading on one enqueue's path): _signal, which the signal module re-exports, where there is
    one. Its handlers get and give plain ints; SIG_DFL is 0 and SIG_IGN 1 either way."""
    try:
        import _signal as calls
    except ImportError:  # not CPython
        import signal as calls
    return calls
