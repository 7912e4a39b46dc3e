"""Speed benchmarks (run as ``python -m benchmarks.perf.<name>``); ratios against an in-process baseline."""
