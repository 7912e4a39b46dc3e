"""Few-shot metric definitions (numpy only): each figure a result file reports, defined once.

Accuracies are fractions in [0, 1], one per episode.
"""

from __future__ import annotations

import math

import numpy as np

MEAN_DEFINITION = "mean(per_episode_accuracy)"
CI95_DEFINITION = "1.96 * sample_std(per_episode_accuracy, ddof=1) / sqrt(n_episodes)"
PAIRED_DEFINITION = "mean(a - b) over identical episodes; ci95 = 1.96 * sample_std(a - b, ddof=1) / sqrt(n)"


def mean_ci95(accuracies) -> tuple[float, float]:
    """Mean and 95% CI half-width (1.96 * sample std / sqrt(n)) of per-episode accuracies."""
    values = np.asarray(accuracies, dtype=np.float64)
    if values.ndim != 1 or values.size < 2:
        raise ValueError("a confidence interval needs a 1-D array of at least two episodes")
    return float(values.mean()), float(1.96 * values.std(ddof=1) / math.sqrt(values.size))


def paired_difference(a, b) -> tuple[float, float]:
    """Mean and 95% CI half-width of ``a - b``, two methods' accuracies on identical episodes."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired accuracies must have the same length, got {a.shape} and {b.shape}")
    return mean_ci95(a - b)
