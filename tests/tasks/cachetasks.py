"""Task callables for the cache tests (tests/test_cache.py)."""

import os

from sidefx import _log


def make(log, name, path, text="made", skip=False):
    """Writes `path` (relative to the spec's folder, the cwd of the test) unless `skip`."""
    _log(log, name)
    if not skip:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w") as fh:
            fh.write(text)
    return name
