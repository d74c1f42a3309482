"""Listeners on a run's event stream (see dagrun/events.py)."""
