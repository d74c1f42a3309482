"""Executors run attempts and report results; the scheduler talks only to the
Executor protocol in base.py. Backends are registered by name in base.BACKENDS
and built by base.create(name, settings)."""
