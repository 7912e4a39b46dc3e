"""Smoke test of the PRD throughput benchmark (``--quick``, embedded split-digits): one row per learner
and experience, fine-tuning as the ratio's baseline. No timing is asserted."""

from __future__ import annotations

from protobench.benchmarks.perf import prd_throughput


def test_quick_prints_both_learners_on_both_experiences(capsys):
    prd_throughput.main(["--quick"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith(("finetune ", "prd "))]
    assert [(row[0], row[1]) for row in rows] == [("finetune", "1"), ("prd", "1"), ("finetune", "2"), ("prd", "2")]
    assert all(row[-1] == "1.000" for row in rows if row[0] == "finetune")
    assert all(float(row[-2]) > 0 for row in rows)  # images/s
