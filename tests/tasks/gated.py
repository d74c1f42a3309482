"""A task a test holds open: it runs until a file appears."""

import os
import time


def until(path, started=None, value="done"):
    if started:
        with open(started, "w") as fh:
            fh.write(str(os.getpid()))
    while not os.path.exists(path):
        time.sleep(0.02)
    return value
