"""Counter-based random numbers for episodes.

Every random number an episode uses is a pure function of ``(seed, episode_index, counter)``:
SplitMix64's output function (Steele, Lea and Flood 2014) applied to a per-episode key plus the
counter times the golden gamma. No state is carried between episodes, so episode 9,999 costs the
same as episode 0, and numbers are identical across processes, DataLoader workers and platforms.
Everything is vectorised over episodes: a batch of episodes draws the same counters in lock-step.
"""

from __future__ import annotations

import numpy as np

_GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_TWO_TO_MINUS_53 = 2.0**-53
MAX_SEED = 2**64 - 1


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * _MIX_1
    z = (z ^ (z >> np.uint64(27))) * _MIX_2
    return z ^ (z >> np.uint64(31))


def check_seed(seed: int) -> int:
    """Return ``seed`` as a Python int after checking it is an integer in [0, 2**64)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    if not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return int(seed)


def episode_keys(seed: int, episode_ids: np.ndarray) -> np.ndarray:
    """One uint64 key per episode, a pure function of (seed, episode id)."""
    seed_key = _mix64(np.array([check_seed(seed)], dtype=np.uint64))
    ids = np.asarray(episode_ids, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return _mix64(seed_key + (ids + np.uint64(1)) * _GOLDEN_GAMMA)


class CounterStream:
    """Hands out uniform numbers in [0, 1) for a batch of episodes, counter block by block.

    Each call to :meth:`uniform` consumes the next ``size`` counters of every episode, so the
    numbers an episode gets depend only on its key and on the order of calls, never on which
    other episodes share the batch.
    """

    def __init__(self, keys: np.ndarray) -> None:
        self.keys = np.asarray(keys, dtype=np.uint64)
        self.next_counter = 0

    def uniform(self, size: int) -> np.ndarray:
        """Float64 array of shape (n_episodes, size), uniform in [0, 1)."""
        counters = np.arange(self.next_counter, self.next_counter + size, dtype=np.uint64)
        self.next_counter += size
        with np.errstate(over="ignore"):
            bits = _mix64(self.keys[:, None] + (counters + np.uint64(1)) * _GOLDEN_GAMMA)
        return (bits >> np.uint64(11)).astype(np.float64) * _TWO_TO_MINUS_53


def sample_distinct(
    u_pick: np.ndarray, u_order: np.ndarray, population: np.ndarray, m: int
) -> np.ndarray:
    """Per row, ``m`` distinct integers from ``[0, population[row])`` in uniformly random order.

    Robert Floyd's algorithm picks a uniform m-subset with ``m`` uniforms per row (``u_pick``,
    shape (rows, m)); a second set of uniforms (``u_order``) then puts it in random order, so
    any prefix of the result (the support set) is itself a uniform sample. O(rows * m^2) work,
    independent of the population size.
    """
    population = np.asarray(population, dtype=np.int64)
    rows = population.shape[0]
    chosen = np.empty((rows, m), dtype=np.int64)
    for step in range(m):
        top = population - m + step  # Floyd: candidate range is [0, top]
        pick = np.minimum((u_pick[:, step] * (top + 1)).astype(np.int64), top)
        seen = (chosen[:, :step] == pick[:, None]).any(axis=1)
        chosen[:, step] = np.where(seen, top, pick)
    order = np.argsort(u_order, axis=1, kind="stable")
    return np.take_along_axis(chosen, order, axis=1)
