"""Benchmarks: one script per claim, each writing its figures into BENCHMARKS.md."""
