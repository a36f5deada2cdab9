"""The wake-up source: file-system events as "this name arrived" (watchdog's only home).

Events are a hint, never the truth: the worker also rescans on poll_interval, because
inotify can overflow, and another host's writes to a shared file system produce none.
"""

from __future__ import annotations

import os
import queue
from typing import Callable


class Wakeups:
    """Names that land in the watched directories, delivered to one waiting thread."""

    def __init__(self, directories: list[str], log: Callable[[str], None] = lambda _m: None, *,
                 events: bool = True, recursive: tuple[str, ...] = ()):
        """`events=False`: no observer at all, only timeouts and pokes (mode "none"). Directories
        in `recursive` are watched with their sub-directories (pending/'s shards)."""
        self._queue: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._log = log
        self._observer = None
        self.mode = "polling" if events else "none"
        self.failure: str | None = None
        if not events:
            return
        try:
            self._observer = _start_observer(directories, self._on_event, recursive)
            self.mode = "events"
        except Exception as e:  # no inotify here, or out of watches: polling still works
            self.failure = f"{type(e).__name__}: {e}"

    def _on_event(self, path: str) -> None:
        try:
            self._queue.put((os.path.dirname(path), os.path.basename(path)))
        except Exception as e:  # never let the observer thread die silently
            self.failure = f"{type(e).__name__}: {e}"

    def poke(self) -> None:
        """Wake the waiting thread now (safe in a signal handler: SimpleQueue.put is reentrant)."""
        try:
            self._queue.put(("", ""))
        except Exception:
            pass  # only an early wake-up is lost: the wait still ends at its timeout

    def wait(self, timeout: float) -> list[tuple[str, str]]:
        """Block until something arrives or `timeout` seconds pass; returns (directory, name) pairs."""
        out: list[tuple[str, str]] = []
        try:
            out.append(self._queue.get(timeout=max(0.0, timeout)))
        except queue.Empty:
            return out
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out

    def check(self) -> str | None:
        """If the event machinery has died, switch to polling and say why (once)."""
        if self.mode != "events":
            return None  # polling, or no events asked for
        alive = self._observer is not None and self._observer.is_alive() and all(
            e.is_alive() for e in getattr(self._observer, "emitters", ()))
        if alive and self.failure is None:
            return None
        self.mode = "polling"
        reason = self.failure or "the event observer thread stopped"
        self.close()
        return reason

    def close(self) -> None:
        if self._observer is not None:
            try:
                self._observer.stop()
                self._observer.join(timeout=2)
            except Exception:
                pass
            self._observer = None


def _start_observer(directories: list[str], callback: Callable[[str], None], recursive: tuple[str, ...]):
    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers.inotify import InotifyEmitter, InotifyObserver
    from watchdog.observers.inotify_c import InotifyConstants as C

    class ArrivalEmitter(InotifyEmitter):
        """Asks inotify only for arrivals. Without IN_MOVED_FROM, a claim that renames a job out
        of pending/ cannot park an unpaired move in watchdog's 0.5 s move-grouping queue and hold
        up the next arrival behind it."""

        def get_event_mask_from_filter(self):  # type: ignore[override]
            return C.IN_MOVED_TO | C.IN_CLOSE_WRITE | C.IN_CREATE | C.IN_DELETE_SELF

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            if event.is_directory:
                return
            path = event.dest_path or event.src_path
            callback(os.fsdecode(path))

    observer = InotifyObserver()
    observer._emitter_class = ArrivalEmitter  # the documented hook is the constructor; this is its value
    handler = Handler()
    for directory in directories:
        observer.schedule(handler, directory, recursive=directory in recursive)
    observer.start()
    return observer
