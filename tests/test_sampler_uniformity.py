"""Statistical uniformity of EpisodeSampler (fixed seed, so the tests are deterministic).

No scipy: chi-square statistics are computed with numpy and compared with critical values.

* For 39 degrees of freedom the two-sided 0.001 bounds are hard-coded:
  P(chi2_39 < 16.27) = 0.0005 and P(chi2_39 > 74.73) = 0.0005 (scipy.stats.chi2.ppf).
* For larger, data-dependent degrees of freedom we use the Wilson-Hilferty approximation
  chi2_q(k) ~= k (1 - 2/(9k) + z sqrt(2/(9k)))^3, accurate to < 0.1% for k in the hundreds
  (k = 856: 998.76 vs exact 998.73 at z = 3.29).

Sampling without replacement inside an episode makes counts negatively correlated; Pearson's
statistic is then a scaled chi-square. The scale factors are derived where they are used, and
the statistics are corrected so that they follow the nominal chi-square distribution.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from protobench.fewshot import EpisodeSampler, EpisodeSpec

Z_TWO_SIDED_001 = 3.2905  # standard normal 0.9995 quantile
CHI2_39_LOW, CHI2_39_HIGH = 16.27, 74.73

N_CLASSES, N_WAY, N_SHOT, N_QUERY, N_EPISODES = 40, 5, 5, 10, 20_000
PER_CLASS = N_SHOT + N_QUERY


def wilson_hilferty(k: int, z: float) -> float:
    return k * (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3


def test_wilson_hilferty_matches_hardcoded_values():
    assert wilson_hilferty(39, Z_TWO_SIDED_001) == pytest.approx(CHI2_39_HIGH, rel=0.01)
    assert wilson_hilferty(39, -Z_TWO_SIDED_001) == pytest.approx(CHI2_39_LOW, rel=0.01)


@pytest.fixture(scope="module")
def drawn():
    sizes = 20 + np.arange(N_CLASSES) % 6  # 20..25 examples per class
    labels = np.repeat(np.arange(N_CLASSES), sizes)
    labels = labels[np.random.Generator(np.random.PCG64(7)).permutation(len(labels))]
    sampler = EpisodeSampler(labels, EpisodeSpec(N_WAY, N_SHOT, N_QUERY), seed=2024, n_episodes=N_EPISODES)
    return labels, sizes, sampler.batch(0, N_EPISODES)


def test_class_usage_is_uniform(drawn):
    _, _, batch = drawn
    counts = np.bincount(batch.classes.reshape(-1), minlength=N_CLASSES)
    assert counts.sum() == N_EPISODES * N_WAY
    p = N_WAY / N_CLASSES
    expected = N_EPISODES * p
    pearson = ((counts - expected) ** 2 / expected).sum()
    # Var(count) = n p (1-p); with the fixed total the covariance is n p (1-p) 40/39 (I - J/40),
    # so Pearson ~ (1-p) 40/39 * chi2_39: divide that scale out.
    corrected = pearson / ((1 - p) * N_CLASSES / (N_CLASSES - 1))
    assert CHI2_39_LOW < corrected < CHI2_39_HIGH, (corrected, counts)


@pytest.mark.parametrize("position", [0, N_WAY - 1])
def test_class_at_each_episode_position_is_uniform(drawn, position):
    """The class given episode label 0 (or N-1) is uniform: class order is shuffled."""
    _, _, batch = drawn
    counts = np.bincount(batch.classes[:, position], minlength=N_CLASSES)
    expected = N_EPISODES / N_CLASSES  # plain multinomial: Pearson ~ chi2_39
    pearson = ((counts - expected) ** 2 / expected).sum()
    assert CHI2_39_LOW < pearson < CHI2_39_HIGH, (pearson, counts)


def test_example_usage_within_class_is_uniform(drawn):
    labels, sizes, batch = drawn
    class_uses = np.bincount(batch.classes.reshape(-1), minlength=N_CLASSES)
    used = np.concatenate([batch.support.reshape(-1), batch.query.reshape(-1)])
    example_counts = np.bincount(used, minlength=len(labels))
    total, dof = 0.0, 0
    for c in range(N_CLASSES):
        mine = example_counts[labels == c]
        s = sizes[c]
        assert mine.sum() == class_uses[c] * PER_CLASS
        expected = class_uses[c] * PER_CLASS / s
        pearson = ((mine - expected) ** 2 / expected).sum()
        # each use draws m = PER_CLASS of s without replacement: Var = u (m/s)(1 - m/s) and
        # the per-class total is fixed, so Pearson ~ (s-m)/(s-1) * chi2_{s-1}
        total += pearson * (s - 1) / (s - PER_CLASS)
        dof += s - 1
    low, high = wilson_hilferty(dof, -Z_TWO_SIDED_001), wilson_hilferty(dof, Z_TWO_SIDED_001)
    assert low < total < high, (total, dof)


def test_support_probability_given_drawn(drawn):
    """Given an example is drawn, it lands in the support with probability K/(K+Q)."""
    labels, _, batch = drawn
    n = len(labels)
    in_support = np.bincount(batch.support.reshape(-1), minlength=n)
    drawn_count = in_support + np.bincount(batch.query.reshape(-1), minlength=n)
    p = N_SHOT / PER_CLASS
    assert in_support.sum() / drawn_count.sum() == pytest.approx(p)
    assert drawn_count.min() > 1000
    fraction = in_support / drawn_count
    # per example sd is sqrt(p(1-p)/d) ~ 0.011; 5 sd is a rough tolerance
    assert np.abs(fraction - p).max() < 5 * math.sqrt(p * (1 - p) / drawn_count.min())
    # support fraction must not drift with the example's rank within its class (e.g. a
    # Floyd's-algorithm order bias would put high ranks in the query set)
    rank = np.empty(n, dtype=np.int64)
    for c in range(N_CLASSES):
        members = np.flatnonzero(labels == c)
        rank[members] = np.arange(len(members))
    low_rank, high_rank = rank < 10, rank >= 15
    frac_low = in_support[low_rank].sum() / drawn_count[low_rank].sum()
    frac_high = in_support[high_rank].sum() / drawn_count[high_rank].sum()
    assert abs(frac_low - p) < 0.01 and abs(frac_high - p) < 0.01, (frac_low, frac_high)
    # and a chi-square over examples: (s - d p)^2 / (d p (1-p)) ~ chi2_1 each, conservative
    # because the support count within an episode is fixed (hypergeometric, smaller variance)
    stat = (((in_support - drawn_count * p) ** 2) / (drawn_count * p * (1 - p))).sum()
    assert stat < wilson_hilferty(n, Z_TWO_SIDED_001), (stat, n)


@pytest.mark.parametrize(("population", "m"), [(6, 2), (4, 3)])  # rejection path; Floyd path
def test_sample_distinct_is_uniform_over_ordered_samples(population, m):
    from itertools import permutations

    from protobench.fewshot.counter_rng import episode_keys, sample_distinct

    rows = 60_000
    keys = episode_keys(7, np.arange(rows))
    drawn = sample_distinct(keys, np.zeros(rows, dtype=np.uint64), np.full(rows, population), m)
    assert ((drawn >= 0) & (drawn < population)).all()
    assert (np.sort(drawn, axis=1)[:, 1:] != np.sort(drawn, axis=1)[:, :-1]).all()
    outcomes = {p: i for i, p in enumerate(permutations(range(population), m))}
    counts = np.bincount([outcomes[tuple(row)] for row in drawn.tolist()], minlength=len(outcomes))
    expected = rows / len(outcomes)
    chi_square = ((counts - expected) ** 2 / expected).sum()
    dof = len(outcomes) - 1
    # Wilson-Hilferty upper 0.001 quantile of chi-square(dof): z = 3.09
    bound = dof * (1 - 2 / (9 * dof) + 3.09 * np.sqrt(2 / (9 * dof))) ** 3
    assert chi_square < bound, (chi_square, bound)
