"""The benchmark harness: ``python -m bench`` (see README.md). Not a test."""
