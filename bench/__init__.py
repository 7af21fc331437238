"""Benchmarks run against a real server process and a real PostgreSQL (not part of the test suite).

`python -m bench.history_flatness --help` shows the one that checks that sending and reading a
history page cost the same whatever the size of a conversation's history.
"""
