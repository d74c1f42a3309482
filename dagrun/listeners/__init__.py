"""Listeners on the run's event stream (events.py), one module each."""
