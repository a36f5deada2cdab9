"""The store: one spool's files other than its job moves, each kind in its own module.

Owns the spool root with its settings, modes, clocks and job-file reader (store.py), who may do
what in a spool (access.py: its owner changes it, anyone the file system lets read it reads it),
settings (config.py), the trust checks (trust.py), pending/'s shards (shards.py), ids (ids.py),
the workers' registrations (owners.py), the judge of who is gone (judge.py), pause and concurrency
limits (pause.py, slots.py), drop-in rules (dropins.py), Maildir delivery (maildir.py),
quarantine (quarantine.py), job output (output.py) and the attempts log (attempts_log.py). May
import format and system; renames no job file (that is moves').
"""
