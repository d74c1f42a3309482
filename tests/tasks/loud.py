"""A module that prints while it is imported."""

print("hello from import")


def f():
    return 1
