"""Task objects in --json carry more fields than these (timings, and more to come):
tests that compare a whole task object compare its core."""

CORE = ("state", "attempts", "output", "error")


def core(task):
    return {k: task[k] for k in CORE}
