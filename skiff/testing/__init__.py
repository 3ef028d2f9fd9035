"""Helpers for Skiff's tests and benchmarks: real daemons as processes, polled waits."""
