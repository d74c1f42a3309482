"""Benchmarks: dagrun against a bare ProcessPoolExecutor loop (`make bench`)."""
