"""The continual leaderboard: metrics over seeds, the ranking rule on final average accuracy, the page."""

from __future__ import annotations

import copy

import numpy as np
from test_validate_continual import TASK_AWARE3, continual_result

from protobench.continual.metrics import continual_metrics
from protobench.leaderboard.continual_board import continual_markdown, continual_tables
from protobench.leaderboard.page import render_page
from protobench.leaderboard.validate import validate_result


def seeded(R, seed: int, label: str, task_aware=None, split: str = "test") -> dict:
    """A valid continual result of configuration ``label`` for root seed ``seed``."""
    result = continual_result(R=R, task_aware=task_aware)
    result["method"]["configuration"] = label
    result["seeds"] = {"seed": seed, "train": 100 + seed}
    result["benchmark"]["split"] = split
    assert validate_result(result) == []
    return result


def matrix(final: list[float]) -> list[list[float]]:
    """A 3x3 accuracy matrix whose last row is ``final`` (earlier rows fixed)."""
    return [[0.9, 0.0, 0.0], [0.5, 0.9, 0.0], list(final)]


def test_rows_summarise_seeds_and_rank_by_average_accuracy():
    strong = [seeded(matrix([0.80, 0.82, 0.90]), s, "strong") for s in (0, 1, 2)]
    strong[1] = seeded(matrix([0.78, 0.80, 0.92]), 1, "strong")
    weak = [seeded(matrix([0.0, 0.0, 0.95]), s, "weak") for s in (0, 1)]
    tables, skipped = continual_tables([*weak, *strong])
    assert skipped == []
    (table,) = tables
    assert table.ranked_on == "average_accuracy"
    assert [row["configuration"] for row in table.rows] == ["strong", "weak"]
    assert [row["rank"] for row in table.rows] == [1.0, 2.0]
    finals = [np.mean(r["evidence"]["accuracy_matrix"][-1]) for r in strong]
    mean, std = table.rows[0]["metrics"]["average_accuracy"]
    assert np.isclose(mean, np.mean(finals)) and np.isclose(std, np.std(finals, ddof=1))
    forgetting = [continual_metrics(r["evidence"]["accuracy_matrix"], r["evidence"]["untrained_accuracy"])
                  ["forgetting"] for r in strong]
    assert np.isclose(table.rows[0]["metrics"]["forgetting"][0], np.mean(forgetting))
    assert table.rows[0]["n_seeds"] == 3 and table.rows[0]["seeds"] == [0, 1, 2]
    assert np.allclose(table.rows[1]["mean_matrix"], matrix([0.0, 0.0, 0.95]))
    assert table.rows[0]["metrics"]["task_aware_average_accuracy"] is None  # no task-aware matrix in these files


def test_overlapping_rows_tie_and_share_a_rank():
    a = [seeded(matrix(f), s, "a") for s, f in enumerate(([0.6, 0.6, 0.6], [0.7, 0.7, 0.7]))]
    b = [seeded(matrix(f), s, "b") for s, f in enumerate(([0.62, 0.62, 0.62], [0.66, 0.66, 0.66]))]
    (table,), _ = continual_tables([*a, *b])
    assert [row["rank"] for row in table.rows] == [1.5, 1.5]  # 1.96 * sqrt(s1^2/2 + s2^2/2) > 0.01


def test_validation_runs_and_repeated_seeds_are_left_out():
    kept = seeded(matrix([0.5, 0.5, 0.5]), 0, "m")
    again = seeded(matrix([0.9, 0.9, 0.9]), 0, "m")
    tuning = seeded(matrix([0.9, 0.9, 0.9]), 1, "m", split="val (held out from train)")
    (table,), skipped = continual_tables([kept, again, tuning])
    assert table.rows[0]["n_seeds"] == 1 and np.isclose(table.rows[0]["metrics"]["average_accuracy"][0], 0.5)
    reasons = sorted(item.reason for item in skipped)
    assert "validation split" in reasons[1] and "a second file of seed 0" in reasons[0]


def test_task_incremental_streams_rank_on_task_aware_accuracy():
    def task_il(final_aware, seed, label):
        result = seeded(matrix([0.9, 0.9, 0.9]), seed, label, task_aware=[*TASK_AWARE3[:2], final_aware])
        result["benchmark"]["stream_spec"]["scenario"] = "task-incremental"
        result["benchmark"]["protocol"] = "task-incremental, 3 experiences"
        return result

    low = task_il([0.5, 0.5, 0.5], 0, "low")
    high = task_il([0.99, 0.99, 0.99], 0, "high")
    (table,), _ = continual_tables([low, high])
    assert table.ranked_on == "task_aware_average_accuracy"
    assert [row["configuration"] for row in table.rows] == ["high", "low"]


def test_markdown_and_page_show_every_row_with_its_heatmap():
    results = [seeded(matrix([0.8, 0.8, 0.8]), s, "ewc-lambda-100") for s in (0, 1)]
    hostile = copy.deepcopy(results[0])
    hostile["method"]["configuration"] = "x<script>y"
    hostile["seeds"]["seed"] = 7
    tables, _ = continual_tables([*results, hostile])
    text = continual_markdown(tables)
    assert "| ewc-lambda-100 | finetune | 80.00 ± 0.00 |" in text
    assert "<script>" not in text
    page, problems = render_page([*results, hostile])
    assert problems == []
    assert page.count('alt="accuracy matrix, ') == 2 and "<script>y" not in page
    assert "mean of 2 seed(s)" in page
