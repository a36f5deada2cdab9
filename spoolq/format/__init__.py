"""The format: what a spool is on disk and what a job is, with no I/O.

Owns the job record and its fields (job.py), the on-disk layout and file-name grammar
(layout.py: its docstring is the format's specification), the states (states.py), which entries
spoolq made (ours.py), who may write what (modes.py), the one syntax of a length of time
(durations.py), the retry policy (retry.py), the one error family (errors.py), JSON through
CPython's accelerator (json_codec.py) and plain stand-ins for the standard library's records and
caches (lean.py), which one enqueue cannot afford to load. Imports nothing of spoolq's outside this package; everything else may import it.
"""
