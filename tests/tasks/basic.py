"""Well-behaved task callables used across the tests."""

import os
import time


def const(value=None):
    return value


def numbers(n=3):
    return list(range(1, n + 1))


def total(xs):
    return sum(xs)


def double(xs):
    return [x * 2 for x in xs]


def combine(a, b):
    return {"a": a, "b": b}


def add(x, y=0):
    return x + y


def sleep(seconds=1.0, value=None):
    time.sleep(seconds)
    return value


def env():
    return {k: os.environ.get(k) for k in ("DAGRUN_RUN_ID", "DAGRUN_TASK_ID", "DAGRUN_ATTEMPT")}


def chatty():
    print("this goes to stdout of the task")
    os.write(1, b"raw fd 1 write\n")
    return "done"


def log_order(path, name):
    with open(path, "a") as fh:
        fh.write(name + "\n")
    return name


def not_json():
    return {1, 2, 3}


def fail(message="boom"):
    raise ValueError(message)


def big_list(n=15000):
    return [f"item-{i:08d}" for i in range(n)]


def echo_len(data):
    return len(data)


def close_fds_and_sleep(seconds=30):
    os.closerange(3, 1024)
    time.sleep(seconds)


def nan():
    return {"x": float("nan")}


def attempt_unless_flag(flag):
    if os.path.exists(flag):
        raise ConnectionError("service down")
    return int(os.environ["DAGRUN_ATTEMPT"])
