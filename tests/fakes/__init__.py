"""Fake upstream servers for tests: they record what they receive and answer from a script."""
