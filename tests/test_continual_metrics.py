"""Continual metrics: hand-computed values on small matrices, undefined cases, input validation."""

from __future__ import annotations

import numpy as np
import pytest

from protobench.continual.metrics import (
    DEFINITIONS,
    average_accuracy,
    average_incremental_accuracy,
    backward_transfer,
    continual_metrics,
    forgetting,
    forward_transfer,
)

# R[i][j]: accuracy on experience j after training experience i; b[j]: untrained model on j.
R3 = [
    [0.90, 0.20, 0.10],
    [0.70, 0.80, 0.30],
    [0.50, 0.60, 0.95],
]
B3 = [0.10, 0.15, 0.05]

# By hand:
#   A   = (0.50 + 0.60 + 0.95) / 3                        = 2.05 / 3
#   AIA = (0.90 + (0.70 + 0.80) / 2 + 2.05 / 3) / 3       = 7 / 9
#   forgetting = ((max(0.90, 0.70) - 0.50) + (0.80 - 0.60)) / 2 = (0.40 + 0.20) / 2 = 0.30
#   BWT = ((0.50 - 0.90) + (0.60 - 0.80)) / 2             = -0.30
#   FWT = ((0.20 - 0.15) + (0.30 - 0.05)) / 2             = 0.15
EXPECTED3 = {
    "average_accuracy": 2.05 / 3,
    "average_incremental_accuracy": 7 / 9,
    "forgetting": 0.30,
    "bwt": -0.30,
    "fwt": 0.15,
}


def test_each_metric_on_a_hand_computed_three_experience_matrix():
    assert average_accuracy(R3) == pytest.approx(EXPECTED3["average_accuracy"], abs=1e-12)
    assert average_incremental_accuracy(R3) == pytest.approx(EXPECTED3["average_incremental_accuracy"], abs=1e-12)
    assert forgetting(R3) == pytest.approx(EXPECTED3["forgetting"], abs=1e-12)
    assert backward_transfer(R3) == pytest.approx(EXPECTED3["bwt"], abs=1e-12)
    assert forward_transfer(R3, B3) == pytest.approx(EXPECTED3["fwt"], abs=1e-12)


def test_continual_metrics_returns_every_defined_metric_as_plain_floats():
    values = continual_metrics(R3, B3)
    assert values.keys() == DEFINITIONS.keys()
    assert all(type(v) is float for v in values.values())
    assert values == pytest.approx(EXPECTED3, abs=1e-12)


def test_definitions_are_the_design_formulas():
    assert DEFINITIONS["average_accuracy"] == "mean_j R[T-1][j]"
    assert DEFINITIONS["average_incremental_accuracy"] == "mean_i (mean_{j<=i} R[i][j])"
    assert DEFINITIONS["bwt"] == "mean_{j<T-1} (R[T-1][j] - R[j][j])"
    assert DEFINITIONS["fwt"].startswith("mean_{j>=1} (R[j-1][j] - b_j)")
    assert "max_{l<T-1} R[l][j]" in DEFINITIONS["forgetting"]


def test_forgetting_takes_the_maximum_over_every_earlier_row_as_in_design():
    # R[0][1] = 0.85 (before experience 1 was trained) is the column maximum: DESIGN.md's max_{l<T-1}
    R = [[0.90, 0.85, 0.10], [0.70, 0.80, 0.30], [0.50, 0.60, 0.95]]
    assert forgetting(R) == pytest.approx(((0.90 - 0.50) + (0.85 - 0.60)) / 2, abs=1e-12)


def test_forgetting_is_negative_when_an_experience_improves_later():
    R = [[0.50, 0.10], [0.60, 0.90]]
    assert forgetting(R) == pytest.approx(-0.10, abs=1e-12)
    assert backward_transfer(R) == pytest.approx(0.10, abs=1e-12)
    assert forward_transfer(R, [0.0, 0.1]) == pytest.approx(0.0, abs=1e-12)


def test_single_experience_leaves_transfer_and_forgetting_undefined():
    values = continual_metrics([[0.7]], [0.1])
    assert values == {"average_accuracy": 0.7, "average_incremental_accuracy": 0.7,
                      "forgetting": None, "bwt": None, "fwt": None}


def test_only_the_lower_triangle_and_first_upper_diagonal_are_read():
    rng = np.random.default_rng(0)
    R = np.array(R3)
    noisy = R.copy()
    noisy[0, 2] = rng.uniform()  # above the first upper off-diagonal: read by nothing
    assert continual_metrics(noisy, B3) == continual_metrics(R, B3)
    upper = R.copy()
    upper[np.triu_indices(3, k=1)] = rng.uniform(size=3)
    for metric in (average_accuracy, average_incremental_accuracy, forgetting, backward_transfer):
        assert metric(upper) == metric(R)


def test_perfect_learner_without_forgetting():
    R = np.tril(np.ones((4, 4)))
    values = continual_metrics(R, np.zeros(4))
    assert values == {"average_accuracy": 1.0, "average_incremental_accuracy": 1.0,
                      "forgetting": 0.0, "bwt": 0.0, "fwt": 0.0}


@pytest.mark.parametrize(
    ("R", "match"),
    [
        ([], "square"),
        ([[]], "square"),
        ([0.5, 0.5], "square"),
        ([[0.5, 0.5]], "square"),
        ([[0.5, 0.5], [0.5]], "square array of numbers"),
        (np.zeros((2, 2, 2)), "square"),
        ([["a", "b"], ["c", "d"]], "square array of numbers"),
        ([[0.5, float("nan")], [0.5, 0.5]], "finite"),
        ([[0.5, float("inf")], [0.5, 0.5]], "finite"),
        ([[0.5, 1.5], [0.5, 0.5]], r"\[0, 1\]"),
        ([[0.5, -0.1], [0.5, 0.5]], r"\[0, 1\]"),
        ([[10**400]], "numbers"),
    ],
)
def test_invalid_accuracy_matrices_are_rejected(R, match):
    for metric in (average_accuracy, average_incremental_accuracy, forgetting, backward_transfer):
        with pytest.raises(ValueError, match=match):
            metric(R)
    with pytest.raises(ValueError, match=match):
        continual_metrics(R, [0.1, 0.1])


@pytest.mark.parametrize(
    ("b", "match"),
    [
        ([0.1, 0.1], r"shape \(3,\)"),
        ([[0.1, 0.1, 0.1]], r"shape \(3,\)"),
        ([0.1, float("nan"), 0.1], "finite"),
        ([0.1, 2.0, 0.1], r"\[0, 1\]"),
        (["x", "y", "z"], "numbers"),
    ],
)
def test_invalid_untrained_accuracies_are_rejected(b, match):
    with pytest.raises(ValueError, match=match):
        forward_transfer(R3, b)
    with pytest.raises(ValueError, match=match):
        continual_metrics(R3, b)


def test_untrained_accuracies_are_checked_even_when_fwt_is_undefined():
    with pytest.raises(ValueError, match=r"shape \(1,\)"):
        forward_transfer([[0.5]], [0.1, 0.2])
