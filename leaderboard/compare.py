"""Paired comparison of two few-shot results evaluated on identical episodes."""

from __future__ import annotations

from dataclasses import dataclass

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
