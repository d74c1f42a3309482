"""Task callables of tests/test_map.py."""

import os
import time


def square(x, log=None, sleep=0.0):
    if log:
        with open(log, "a") as fh:
            fh.write(f"{os.environ['DAGRUN_MAP_INDEX']} {x}\n")
    time.sleep(sleep)
    return x * x


def where(x):
    return {"index": int(os.environ["DAGRUN_MAP_INDEX"]), "attempt":
            int(os.environ["DAGRUN_ATTEMPT"]), "x": x}


def flaky(x, marks):
    """Fails the first attempt of element x == 2 (a mark file per element)."""
    mark = os.path.join(marks, f"seen-{x}")
    if x == 2 and not os.path.exists(mark):
        open(mark, "w").close()
        raise RuntimeError(f"first try of {x}")
    return x


def bad(x, broken=(3,)):
    if x in broken:
        raise ValueError(f"bad element {x}")
    return x


def fixable(x, marks):
    """Fails while the file `marks`/fixed-X is missing."""
    if not os.path.exists(os.path.join(marks, f"fixed-{x}")):
        raise ValueError(f"not fixed: {x}")
    return x


def numbers(n):
    return list(range(n))


def total(values):
    return sum(v for v in values if v is not None)


def noop(x):
    return None
