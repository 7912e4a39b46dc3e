"""Continual-learning metric definitions (numpy only): each figure a continual result reports, defined once.

Inputs, shared by every function:

- ``R``: the accuracy matrix, shape (T, T), 0-based. ``R[i][j]`` is the accuracy (a fraction in
  [0, 1]) on experience ``j``'s test set after training on experiences ``0..i``.
- ``b``: shape (T,). ``b[j]`` is the accuracy of the untrained model (before experience 0) on
  experience ``j``'s test set; used by forward transfer only.

Which entries each metric reads: average accuracy, average incremental accuracy and backward
transfer read only the lower triangle including the diagonal (``j <= i``); forgetting reads
column ``j`` over every row ``l < T-1`` (Chaudhry et al. 2018, as DESIGN.md defines it, rows
before ``j`` was trained included); forward transfer reads the first upper off-diagonal
``R[j-1][j]`` (accuracy on ``j`` just *before* training on it). The runner therefore evaluates
every experience's test set after each experience, filling the whole matrix, and records the
untrained-model accuracies ``b``.

All results are fractions (accuracy units, not percent). Forgetting, backward and forward transfer
need at least two experiences; with ``T == 1`` they are undefined and returned as ``None``.
"""

from __future__ import annotations

import numpy as np

DEFINITIONS: dict[str, str] = {
    "average_accuracy": "mean_j R[T-1][j]",
    "average_incremental_accuracy": "mean_i (mean_{j<=i} R[i][j])",
    "forgetting": "mean_{j<T-1} (max_{l<T-1} R[l][j] - R[T-1][j])",
    "bwt": "mean_{j<T-1} (R[T-1][j] - R[j][j])",
    "fwt": "mean_{j>=1} (R[j-1][j] - b_j), b_j = accuracy of the untrained model on j",
}
"""Metric name (as the result file's ``metrics`` keys) -> its formula, word for word DESIGN.md."""

TASK_AWARE_AVERAGE_ACCURACY_DEFINITION = "mean_j R_task_aware[T-1][j]"
"""Average accuracy on the task-aware matrix (the task id is given to ``predict``)."""


def accuracy_matrix(R) -> np.ndarray:
    """``R`` as a float64 (T, T) array, T >= 1, finite, every entry in [0, 1]; else ``ValueError``."""
    try:
        matrix = np.asarray(R, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as error:
        raise ValueError(f"accuracy matrix must be a square array of numbers: {error}") from error
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 1:
        raise ValueError(f"accuracy matrix must be square (T, T) with T >= 1, got shape {matrix.shape}")
    _check_accuracies(matrix, "accuracy matrix")
    return matrix


def untrained_accuracy(b, n_experiences: int) -> np.ndarray:
    """``b`` as a float64 (T,) array, finite, every entry in [0, 1]; else ``ValueError``."""
    try:
        values = np.asarray(b, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as error:
        raise ValueError(f"untrained accuracies must be a 1-D array of numbers: {error}") from error
    if values.shape != (n_experiences,):
        raise ValueError(f"untrained accuracies must have shape ({n_experiences},), got {values.shape}")
    _check_accuracies(values, "untrained accuracies")
    return values


def _check_accuracies(values: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{what} must be finite")
    if values.size and (values.min() < 0.0 or values.max() > 1.0):
        raise ValueError(f"{what} must be fractions in [0, 1], got values in [{values.min()}, {values.max()}]")


def average_accuracy(R) -> float:
    """A = mean_j R[T-1][j]: mean accuracy over all experiences after the last one. In [0, 1]."""
    matrix = accuracy_matrix(R)
    return float(matrix[-1].mean())


def average_incremental_accuracy(R) -> float:
    """mean_i (mean_{j<=i} R[i][j]): the average accuracy on the experiences seen so far, averaged
    over the T stages of training. In [0, 1]. Reads the lower triangle including the diagonal."""
    matrix = accuracy_matrix(R)
    return float(np.mean([matrix[i, : i + 1].mean() for i in range(len(matrix))]))


def forgetting(R) -> float | None:
    """Average forgetting (Chaudhry et al. 2018), in [-1, 1], higher means more forgotten.

    mean_{j<T-1} (max_{l<T-1} R[l][j] - R[T-1][j]): for every experience but the last, the best
    accuracy it had after any experience before the final one, minus its final accuracy. As in
    Chaudhry et al. (and DESIGN.md), ``l`` runs over every earlier row, including rows before
    ``j`` was trained; those are usually lower (in class-incremental streams about zero), so
    they rarely decide the maximum. ``None`` when T < 2.
    """
    matrix = accuracy_matrix(R)
    T = len(matrix)
    if T < 2:
        return None
    return float(np.mean(matrix[: T - 1, : T - 1].max(axis=0) - matrix[T - 1, : T - 1]))


def backward_transfer(R) -> float | None:
    """Backward transfer BWT (Lopez-Paz & Ranzato 2017), in [-1, 1]; negative means forgetting.

    mean_{j<T-1} (R[T-1][j] - R[j][j]): final accuracy on each earlier experience minus its
    accuracy right after it was trained. Reads the last row and the diagonal. ``None`` when T < 2.
    """
    matrix = accuracy_matrix(R)
    T = len(matrix)
    if T < 2:
        return None
    return float(np.mean(matrix[T - 1, : T - 1] - np.diag(matrix)[: T - 1]))


def forward_transfer(R, b) -> float | None:
    """Forward transfer FWT (Lopez-Paz & Ranzato 2017), in [-1, 1]; positive means earlier
    experiences helped on later ones before they were trained.

    mean_{j>=1} (R[j-1][j] - b_j): accuracy on experience ``j`` just before training on it minus
    the untrained model's accuracy ``b_j`` on it. Reads the first upper off-diagonal of ``R`` and
    ``b[1:]`` (``b[0]`` is recorded but unused). ``None`` when T < 2.
    """
    matrix = accuracy_matrix(R)
    T = len(matrix)
    baseline = untrained_accuracy(b, T)
    if T < 2:
        return None
    return float(np.mean(np.diag(matrix, k=1) - baseline[1:]))


def continual_metrics(R, b) -> dict[str, float | None]:
    """Every metric of :data:`DEFINITIONS`, keyed as in the result file's ``metrics``.

    ``None`` marks a metric undefined for this T (forgetting, bwt and fwt when T == 1). Raises
    ``ValueError`` when ``R`` is not a (T, T) matrix of accuracies in [0, 1] or ``b`` not (T,).
    """
    matrix = accuracy_matrix(R)
    untrained_accuracy(b, len(matrix))
    values = {
        "average_accuracy": average_accuracy(matrix),
        "average_incremental_accuracy": average_incremental_accuracy(matrix),
        "forgetting": forgetting(matrix),
        "bwt": backward_transfer(matrix),
        "fwt": forward_transfer(matrix, b),
    }
    assert values.keys() == DEFINITIONS.keys()
    return values
