"""Persistent state: checksummed records (records.py), the per-run journal
(journal.py) and the state-directory layout, run ids and locks (runs.py)."""
