"""Benchmarks run against a live cluster (``pienode bench ...``)."""
