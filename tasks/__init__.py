"""Benchmark tasks (see the tasks issue)."""
