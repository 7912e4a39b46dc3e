"""Smoke test of the feature-cache benchmark (``--quick``): the cached grid encodes each image once,
a later cache on the same folder encodes none, and all three paths score alike. No timing is asserted."""

from __future__ import annotations

from protobench.benchmarks.perf import feature_cache_speed


def test_quick_grid_encodes_each_image_once_with_the_cache(capsys):
    report = feature_cache_speed.main(["--quick", "--threads", "1"])
    encoded = {path: run[1] for path, run in report["runs"].items()}
    assert encoded == {"no cache": report["grid"] * report["images"], "cache, cold": report["images"],
                       "cache, from disk": 0}
    assert report["identical"]
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("cache, from disk") for line in lines)
    assert lines[-1].endswith("identical accuracies: True")
