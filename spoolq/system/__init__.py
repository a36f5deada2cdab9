"""The operating system, behind names that say what each call means to a spool.

Owns the system calls with durability or ownership meaning (fsio.py), processes and their
liveness (liveness.py), running one command (runner.py, direct_exec.py), file-system events (watch.py,
watchdog's only home), what kind of file system a spool is on (mounts.py), spool locks
(locks.py, filelock's only home), a small file read again only when it changes
(cached_file.py), the service manager's notifications (notify.py) and the process's limit
on open files (open_files.py). May import format only.
"""
