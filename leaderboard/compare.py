"""Paired comparison of two few-shot results evaluated on identical episodes."""

from __future__ import annotations

from dataclasses import dataclass

from protobench.fewshot.metrics import PAIRED_DEFINITION, paired_difference


@dataclass(frozen=True)
class Comparison:
    """``difference`` = mean accuracy of A minus B over the same episodes, with its 95% CI."""

    method_a: str
    method_b: str
    n_episodes: int
    difference: float
    ci95: float
    definition: str = PAIRED_DEFINITION

    @property
    def significant(self) -> bool:
        """True when the 95% interval excludes zero."""
        return abs(self.difference) > self.ci95


def compare_results(a: dict, b: dict) -> Comparison:
    """Compare two validated few-shot results; ValueError unless their episode digests match."""
    for name, result in (("A", a), ("B", b)):
        if result.get("kind") != "fewshot":
            raise ValueError(f"{name} is not a few-shot result; compare needs per-episode accuracies")
    if a["episodes"]["digest"] != b["episodes"]["digest"]:
        raise ValueError(
            "the two results were not evaluated on identical episodes (episode digests differ: "
            f"{a['episodes']['digest'][:12]}... vs {b['episodes']['digest'][:12]}...); rerun both with the same "
            "benchmark, test setting and seed"
        )
    difference, ci95 = paired_difference(a["evidence"]["per_episode_accuracy"], b["evidence"]["per_episode_accuracy"])
    return Comparison(a["method"]["name"], b["method"]["name"], a["episodes"]["n"], difference, ci95)
