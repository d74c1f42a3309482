"""Caching across runs (issue 13): a task whose key (key.py) matches a stored
entry (store.py) completes at once with that entry's output; plug.py is what
the scheduler and the run's event stream see of it; spec.py parses the keys."""
