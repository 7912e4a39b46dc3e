"""Speed benchmarks (run as ``python -m protobench.benchmarks.perf.<name>``); ratios against an in-process baseline."""
