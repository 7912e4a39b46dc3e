"""Paired comparisons: two few-shot results on identical episodes, or two continual configurations
paired by seed on identical streams."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from protobench.fewshot.metrics import PAIRED_DEFINITION, mean_ci95, paired_difference
from protobench.leaderboard.identity import configuration_of


@dataclass(frozen=True)
class Comparison:
    """Two results on the same ``n_episodes`` episodes: each one's mean accuracy with its 95% CI
    half-width (``mean_a``, ``ci95_a``; ``mean_b``, ``ci95_b``), and the paired ``difference`` =
    mean over episodes of (accuracy of A - accuracy of B), with its own 95% CI half-width ``ci95``.

    Accuracies are fractions in [0, 1]. ``method_a`` and ``method_b`` are the methods'
    configurations (their leaderboard rows, see :func:`protobench.leaderboard.identity.configuration_of`).
    The paired interval is usually much narrower than either mean's, because the episodes'
    difficulty cancels out of the difference.
    """

    method_a: str
    method_b: str
    n_episodes: int
    mean_a: float
    ci95_a: float
    mean_b: float
    ci95_b: float
    difference: float
    ci95: float
    definition: str = PAIRED_DEFINITION

    @property
    def significant(self) -> bool:
        """True when the 95% interval of the difference excludes zero."""
        return abs(self.difference) > self.ci95


def compare_results(a: dict, b: dict) -> Comparison:
    """Compare two validated few-shot results; ValueError unless their episode digests match.

    Both means and the difference are computed from ``evidence.per_episode_accuracy`` (which the
    validator has checked against the files' reported metrics).
    """
    for name, result in (("A", a), ("B", b)):
        if result.get("kind") != "fewshot":
            raise ValueError(f"{name} is not a few-shot result; compare needs per-episode accuracies")
    if a["episodes"]["digest"] != b["episodes"]["digest"]:
        raise ValueError(
            "the two results were not evaluated on identical episodes (episode digests differ: "
            f"{a['episodes']['digest'][:12]}... vs {b['episodes']['digest'][:12]}...); rerun both with the same "
            "benchmark, test setting and seed"
        )
    accuracies_a, accuracies_b = a["evidence"]["per_episode_accuracy"], b["evidence"]["per_episode_accuracy"]
    mean_a, ci95_a = mean_ci95(accuracies_a)
    mean_b, ci95_b = mean_ci95(accuracies_b)
    difference, ci95 = paired_difference(accuracies_a, accuracies_b)
    return Comparison(method_a=configuration_of(a), method_b=configuration_of(b), n_episodes=a["episodes"]["n"],
                      mean_a=mean_a, ci95_a=ci95_a, mean_b=mean_b, ci95_b=ci95_b, difference=difference, ci95=ci95)


CONTINUAL_METRICS = ("average_accuracy", "task_aware_average_accuracy", "average_incremental_accuracy", "forgetting",
                     "bwt")
"""Metrics a continual comparison reports (those both sides have), in order."""
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
"""Student's t 0.975 quantile by degrees of freedom (n seeds - 1); 1.96 beyond 10."""


@dataclass(frozen=True)
class ContinualComparison:
    """Two continual configurations on the same streams, paired by seed.

    ``seeds``: the root seeds both sides ran (each pair on an identical stream: same stream spec
    and class order). ``metrics``: {name: (per-seed values of A, per-seed values of B, per-seed
    differences A - B)} as fractions, in the order of ``seeds``. :meth:`summary` gives a metric's
    mean of A, of B, the mean difference and the half-width of its 95% t interval over seeds
    (``nan`` with one seed).
    """

    method_a: str
    method_b: str
    seeds: tuple[int, ...]
    metrics: dict[str, tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]]

    def summary(self, name: str) -> tuple[float, float, float, float]:
        """(mean of A, mean of B, mean difference A - B, 95% t half-width of the difference) for metric ``name``."""
        a, b, differences = (np.asarray(values, dtype=np.float64) for values in self.metrics[name])
        n = differences.size
        half_width = (T_975.get(n - 1, 1.96) * differences.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        return float(a.mean()), float(b.mean()), float(differences.mean()), float(half_width)


def compare_continual(results_a: list[dict], results_b: list[dict]) -> ContinualComparison:
    """Pair validated continual results of two configurations by root seed; ValueError when a side
    mixes configurations or repeats a seed, a seed lacks its partner, or a pair's streams differ."""
    sides = []
    for name, results in (("A", results_a), ("B", results_b)):
        if not results or any(r.get("kind") != "continual" for r in results):
            raise ValueError(f"{name}: give one or more continual result files (one per seed)")
        configurations = {configuration_of(r) for r in results}
        if len(configurations) > 1:
            raise ValueError(f"{name} mixes configurations {', '.join(sorted(configurations))}: give one per side")
        by_seed = {}
        for result in results:
            seed = result["seeds"]["seed"]
            if seed in by_seed:
                raise ValueError(f"{name} has two files for seed {seed}")
            by_seed[seed] = result
        sides.append((configurations.pop(), by_seed))
    (method_a, by_seed_a), (method_b, by_seed_b) = sides
    if set(by_seed_a) != set(by_seed_b):
        raise ValueError(f"the two sides ran different seeds ({sorted(by_seed_a)} vs {sorted(by_seed_b)}): pair them")
    seeds = tuple(sorted(by_seed_a))
    for seed in seeds:
        if by_seed_a[seed]["benchmark"]["stream_spec"] != by_seed_b[seed]["benchmark"]["stream_spec"]:
            raise ValueError(f"seed {seed}: the two results were run on different streams (stream specs differ)")
    metrics = {}
    for name in CONTINUAL_METRICS:
        values = [[by_seed[seed]["metrics"].get(name, {}).get("value") for seed in seeds]
                  for by_seed in (by_seed_a, by_seed_b)]
        if any(v is None for side in values for v in side):
            continue
        a, b = (tuple(float(v) for v in side) for side in values)
        metrics[name] = (a, b, tuple(x - y for x, y in zip(a, b, strict=True)))
    return ContinualComparison(method_a, method_b, seeds, metrics)
