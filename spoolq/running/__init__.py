"""Running: the worker loop and what surrounds it.

Owns the loop (worker.py) and a burst's retries (burst.py), what it may claim now (admission.py), one attempt of a job
(attempt.py), its heartbeat (heartbeat.py), hooks (hooks.py), its periodic duties (duties.py):
schedules (schedules.py, fired_slots.py), retention (retention.py) and the metrics textfile
(metrics.py); process supervision (supervisor.py), what workers say on stderr (log_lines.py),
and the queue names a spool knows (known_queues.py: one that nothing named is most likely a
typo). May import everything below it: format, system, store, reading, moves, pending, spool.
"""
