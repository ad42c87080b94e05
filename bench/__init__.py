"""Benchmarks that run against a live server (not part of the test suite)."""
