"""Smoke test of the continual throughput benchmark (``--quick``, embedded split-digits): it runs the
three loops and prints one row each, the harness/Avalanche line, and the harness and bare loop
ending on identical weights. No timing is asserted."""

from __future__ import annotations

import os

import pytest

from protobench.benchmarks.perf import continual_speed


def test_quick_prints_three_rows_and_identical_weights(capsys):
    if os.environ.get("CI") != "true":
        pytest.importorskip("avalanche", reason="avalanche-lib is not installed: pip install 'protobench[avalanche]'")
    continual_speed.main(["--quick"])
    table = capsys.readouterr().out.split("\nsplit-digits experience 0", 1)[1].splitlines()
    labels = ("bare PyTorch loop (baseline)", "harness: FineTune.train_experience",
              "Avalanche Naive (default evaluator, own loader)")
    rows = [line.split() for label in labels for line in table if line.startswith(label)]
    assert len(rows) == 3
    assert rows[0][-1] == "1.000"  # the bare loop is the baseline
    assert sum(line.startswith("harness / Avalanche: ") for line in table) == 1
    assert "harness and bare loop weights after training: max |difference| 0" in table
