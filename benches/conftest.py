"""pytest-benchmark suite: ``pytest benches --benchmark-only`` (see README)."""
