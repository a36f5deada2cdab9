"""Moves: every rename of a job file, one transition each, and nothing else.

Owns the transition table (transitions.py), how a job leaves an owner's directory so that an
owner and its rescuer never both move it (handoff.py), every move into done/ or dead/ and the
waiters it wakes (finishing.py), enqueue (enqueue.py), dependencies (dependencies.py), cancel
(cancel.py), retry, requeue and purge of finished jobs (finished_jobs.py) and taking back a dead
owner's jobs (recovery.py). May import format, system, store and reading.
"""
