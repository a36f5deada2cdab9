"""A worker's slots: the jobs it runs at once (`worker start --slots N`). Each job runs in a
thread of its own from its claim until its outcome is recorded; all else of the worker (the
pending index, claims, admission, the attempts log, hooks) stays in the worker's own thread,
which takes each ended slot's leftovers with collect(). A worker of one slot runs its job in its
own thread, as every worker did before slots.

One process for many jobs costs one registration, heartbeat and interpreter for all of them
(a worker process holds about 10 MB of its own); what it gives up is isolation: a crash of the
worker process (kill -9, the OOM killer) fails the attempt of every job it was running, where
one process a job loses one."""

from __future__ import annotations

import queue
import threading
from typing import Callable

FILES_A_SLOT = 3  # a running job's output pipe, pidfd and output log
FILES_OF_A_WORKER = 64  # its own (registration, .pgroup, attempts log, the spool root held, watches, a claim's job file), with room to spare
After = Callable[[], None]  # what a slot leaves for the worker's own thread to do
Work = Callable[[int], After]  # a job's work in a slot (given its number), done outside the worker's thread


def open_files_needed(slots: int) -> int:
    """The open files a worker of `slots` slots may hold at once, all of them running a job."""
    return FILES_OF_A_WORKER + FILES_A_SLOT * slots


class SlotThreads:
    def __init__(self, slots: int, wake: Callable[[], None]):
        self.slots = slots
        self._wake = wake  # told when a slot ends (the worker may be waiting for one)
        self._free = list(range(slots - 1, -1, -1))  # free slot numbers, the lowest taken first
        self._ended: list[tuple[int, After]] = []  # guarded by _changed
        self._changed = threading.Condition()
        self._inboxes: list[queue.SimpleQueue[Work]] = []  # a slot's next job, given to its thread

    def full(self) -> bool:
        return not self._free

    def idle(self) -> bool:
        return len(self._free) == self.slots

    def start(self, work: Work) -> None:
        """Run `work` in a free slot (there must be one: full() is False)."""
        slot = self._free.pop()
        if self.slots == 1:
            try:
                after = work(slot)
            finally:
                self._free.append(slot)
            after()
            return
        if not self._inboxes:
            self._start_threads()
        self._inboxes[slot].put(work)

    def _start_threads(self) -> None:
        """A thread a slot, for the worker's life, started before its first job: a thread started
        for each job would wait for the interpreter's lock among the running ones (milliseconds
        a job, in the thread that claims)."""
        for slot in range(self.slots):
            self._inboxes.append(queue.SimpleQueue())
            threading.Thread(target=self._serve, args=(slot,), name=f"slot-{slot}", daemon=True).start()

    def _serve(self, slot: int) -> None:
        while True:
            work = self._inboxes[slot].get()
            try:
                after = work(slot)
            except BaseException as e:  # raised again in the worker's thread, which a failure must reach
                after = _raiser(e)
            with self._changed:
                self._ended.append((slot, after))
                self._changed.notify_all()
            self._wake()

    def collect(self) -> None:
        """In the worker's thread: free each slot that ended and do what it left to do (raising
        what a slot raised)."""
        while True:
            with self._changed:
                if not self._ended:
                    return
                slot, after = self._ended.pop(0)
            self._free.append(slot)
            after()

    def wait_all(self) -> None:
        """Until every slot has ended, collecting each as it ends. A stop signal still reaches
        the worker meanwhile (the wait wakes every second), and the jobs ask it (Worker._abort_reason)."""
        while not self.idle():
            with self._changed:
                if not self._ended:
                    self._changed.wait(1.0)
            self.collect()


def _raiser(e: BaseException) -> After:
    def after() -> None:
        raise e
    return after
