"""The read side: find one job, list jobs, count them (views.py, places.py, counts.py), and what a
spool did over time (stats.py). Never renames or writes a job file. May import format, system and
store.
"""
