"""Benchmark suites, the evaluation runner and the ``protobench`` command line."""
