"""Variable episodes follow the Meta-Dataset rule (Triantafillou et al. 2020, meta_dataset/data/sampling.py).

The reference is an independent simulation of the rule with ``numpy.random.default_rng``; the
sampler's own counter-based stream must give the same distribution of shots per class.
"""

from __future__ import annotations

import numpy as np
import pytest

from protobench.fewshot import EpisodeSampler, VariableEpisodeSpec

SPEC = VariableEpisodeSpec()  # Meta-Dataset's defaults: 5..50 ways, 10 query, 500 support, 100 per class
SIZES = np.repeat([20, 40, 600], 12)  # examples per class, classes 0..35
N_EPISODES = 2000


def make_labels() -> np.ndarray:
    labels = np.repeat(np.arange(len(SIZES)), SIZES)
    return labels[np.random.default_rng(0).permutation(len(labels))]


def simulate_meta_dataset(sizes: np.ndarray, spec: VariableEpisodeSpec, n_episodes: int, seed: int):
    """(class sizes, shots) of each episode drawn by the Meta-Dataset rule, written from the paper."""
    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(n_episodes):
        n_way = rng.integers(spec.min_way, min(spec.max_way, len(sizes)) + 1)
        n_c = sizes[rng.choice(len(sizes), size=n_way, replace=False)]
        n_query = min(spec.max_query, int((n_c // 2).min()))
        available = n_c - n_query
        beta = rng.uniform()  # [0, 1): floor(beta * x + 1) is ceil(beta' * x) with beta' in (0, 1]
        support_size = min(spec.max_support, int(np.floor(beta * np.minimum(spec.max_support_per_class, available)
                                                          + 1).sum()))
        weights = n_c * np.exp(rng.uniform(np.log(0.5), np.log(2.0), size=n_way))
        share = np.floor(weights / weights.sum() * (support_size - n_way)).astype(np.int64)
        episodes.append((n_c, np.minimum(share + 1, available)))
    return episodes


def sampler_episodes(seed: int):
    """(class sizes, shots) of each episode of our sampler."""
    sampler = EpisodeSampler(make_labels(), SPEC, seed=seed, n_episodes=N_EPISODES)
    return [(SIZES[e.classes], np.bincount(e.support_labels, minlength=e.n_way)) for e in sampler.episodes()]


def mean_shots(episodes, class_size: int) -> tuple[float, float]:
    """Mean shots per appearance of classes of ``class_size`` examples, and its standard error.

    Appearances in one episode share its way and support size, so the episode is the independent
    unit: the mean is a ratio (total shots / appearances over episodes), and its standard error is
    the usual one of a ratio estimator, sqrt(sum (S_e - R A_e)^2 / (n (n - 1))) / mean(A_e).
    """
    totals = np.array([shots[n_c == class_size].sum() for n_c, shots in episodes], dtype=float)
    counts = np.array([(n_c == class_size).sum() for n_c, _ in episodes], dtype=float)
    ratio = totals.sum() / counts.sum()
    n = len(episodes)
    se = np.sqrt(((totals - ratio * counts) ** 2).sum() / (n * (n - 1))) / counts.mean()
    return ratio, se


@pytest.fixture(scope="module")
def ours():
    return sampler_episodes(seed=2020)


@pytest.fixture(scope="module")
def reference():
    return simulate_meta_dataset(SIZES, SPEC, N_EPISODES, seed=2020)


@pytest.mark.parametrize("class_size", [20, 600])
def test_mean_shots_match_meta_dataset(ours, reference, class_size):
    got, got_se = mean_shots(ours, class_size)
    want, want_se = mean_shots(reference, class_size)
    tolerance = 4 * np.hypot(got_se, want_se)  # two independent estimates: 4 standard errors of the difference
    assert abs(got - want) <= tolerance, (
        f"{class_size}-example classes: mean shots {got:.3f} (se {got_se:.3f}) from the sampler, "
        f"{want:.3f} (se {want_se:.3f}) from the Meta-Dataset rule; tolerance {tolerance:.3f}"
    )


def test_query_and_support_limits_are_exact():
    sampler = EpisodeSampler(make_labels(), SPEC, seed=7, n_episodes=300)
    for episode in sampler.episodes():
        n_c = SIZES[episode.classes]
        shots = np.bincount(episode.support_labels, minlength=episode.n_way)
        queries = np.bincount(episode.query_labels, minlength=episode.n_way)
        n_query = min(SPEC.max_query, int((n_c // 2).min()))
        assert SPEC.min_way <= episode.n_way <= min(SPEC.max_way, len(SIZES))
        assert np.all(queries == n_query)
        assert np.all((shots >= 1) & (shots <= n_c - n_query))
        assert episode.n_way <= shots.sum() <= SPEC.max_support
