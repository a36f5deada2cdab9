"""A worker's view of pending/: what to claim next without listing the directory (index.py),
kept current by events and listings (rescans.py), one listing shared by the workers of one
`worker start` (listing.py), and which names each worker tries first (dealing.py). Used by
running only. May import format, system, store and spool.
"""
