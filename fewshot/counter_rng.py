"""Counter-based random numbers for episodes.

Every random number an episode uses is a pure function of ``(seed, episode_index, counter)``:
SplitMix64's output function (Steele, Lea and Flood 2014) applied to a per-episode key plus the
counter times the golden gamma. No state is carried between episodes, so episode 9,999 costs the
same as episode 0, and numbers are identical across processes, DataLoader workers and platforms.
Everything is vectorised over episodes: a batch of episodes draws the same counters in lock-step.
"""

from __future__ import annotations

import hashlib

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


def role_key(role: str, seed: int) -> int:
    """The key of one role (``"train"``, ``"val"``, ``"test"``, ``"init"``, ...) under a root ``seed``.

    A pure function of the pair: the first 8 bytes (little-endian) of
    ``sha256("protobench/<role>/<seed>")``, an integer in [0, 2**64). Roles never share a key
    and no key is the root seed plus an offset (numpy's advice for parallel streams), so the
    episodes of different roles, and of different seeds, are independent.
    """
    if not isinstance(role, str) or not role:
        raise ValueError(f"role must be a non-empty string, got {role!r}")
    payload = f"protobench/{role}/{check_seed(seed)}".encode()
    return int.from_bytes(hashlib.sha256(payload).digest()[:8], "little")


def episode_keys(seed: int, episode_ids: np.ndarray) -> np.ndarray:
    """One uint64 key per episode, a pure function of (seed, episode id)."""
    seed_key = _mix64(np.array([check_seed(seed)], dtype=np.uint64))
    ids = np.asarray(episode_ids, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return _mix64(seed_key + (ids + np.uint64(1)) * _GOLDEN_GAMMA)


_REJECTION_ROUNDS = 32
_MIN_ACCEPTANCE = 0.25


def _uniform(keys: np.ndarray, first_counter, size: int) -> np.ndarray:
    """Uniforms in [0, 1) at counters ``first_counter + [0, size)`` of each key: float64 (R, size).

    ``first_counter`` is one int or one per key. Counter c of key k is ``mix64(k + (c + 1) * gamma)``.
    """
    with np.errstate(over="ignore"):
        start = keys + (np.asarray(first_counter, dtype=np.uint64) + np.uint64(1)) * _GOLDEN_GAMMA
        bits = _mix64(start[:, None] + np.arange(size, dtype=np.uint64) * _GOLDEN_GAMMA)
    return (bits >> np.uint64(11)).astype(np.float64) * _TWO_TO_MINUS_53


def distinct_window(m: int) -> int:
    """Counters that one :func:`sample_distinct` row may use for a sample of size ``m``."""
    return m * (_REJECTION_ROUNDS + 2)


def sample_distinct(row_keys: np.ndarray, row_offsets: np.ndarray, population: np.ndarray, m: int) -> np.ndarray:
    """Per row, ``m`` distinct integers from ``[0, population[row])``, in uniformly random order.

    Row ``r`` draws only from counters ``row_offsets[r] + [0, distinct_window(m))`` of key
    ``row_keys[r]``, so its result never depends on the other rows. Two exact methods:

    - rejection, when a draw of ``m`` independent integers is distinct with probability at
      least 1/4: draw, keep the row if it has no repeat, else redraw from the next counters
      (uniform over ordered samples without replacement; up to 32 rounds);
    - otherwise (or after 32 failed rounds), Robert Floyd's algorithm for a uniform m-subset,
      put in random order by sorting random keys.
    """
    population = np.asarray(population, dtype=np.int64)
    offsets = np.asarray(row_offsets, dtype=np.uint64)
    chosen = np.empty((population.shape[0], m), dtype=np.int64)
    sizes, size_of_row = np.unique(population, return_inverse=True)
    acceptance = np.prod(1.0 - np.arange(m)[None, :] / sizes[:, None], axis=1)[size_of_row]
    pending = np.flatnonzero(acceptance >= _MIN_ACCEPTANCE)
    for round_number in range(_REJECTION_ROUNDS):
        if pending.size == 0:
            break
        every_row = pending.size == population.shape[0]
        keys, first, n = (row_keys, offsets, population) if every_row else (
            row_keys[pending], offsets[pending], population[pending])
        draws = (_uniform(keys, first + np.uint64(round_number * m), m) * n[:, None]).astype(np.int64)
        ordered = np.sort(draws, axis=1)
        repeated = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
        chosen[pending[~repeated]] = draws[~repeated]
        pending = pending[repeated]
    floyd = np.union1d(np.flatnonzero(acceptance < _MIN_ACCEPTANCE), pending)
    if floyd.size:
        keys, first = row_keys[floyd], offsets[floyd] + np.uint64(_REJECTION_ROUNDS * m)
        chosen[floyd] = _floyd(_uniform(keys, first, m), _uniform(keys, first + np.uint64(m), m), population[floyd], m)
    return chosen


def _floyd(u_pick: np.ndarray, u_order: np.ndarray, population: np.ndarray, m: int) -> np.ndarray:
    """Robert Floyd's uniform m-subset per row, then shuffled by sorting the keys ``u_order``."""
    rows = population.shape[0]
    chosen = np.empty((m, rows), dtype=np.int64)  # step-major: each step writes one contiguous row
    for step in range(m):
        top = population - m + step  # Floyd: candidate range is [0, top]
        pick = np.minimum((u_pick[:, step] * (top + 1)).astype(np.int64), top)
        seen = (chosen[:step] == pick).any(axis=0)
        chosen[step] = np.where(seen, top, pick)
    order = np.argsort(u_order, axis=1, kind="stable")
    return np.take_along_axis(chosen.T, order, axis=1)


class CounterStream:
    """Random draws for a batch of episodes, each from its own key, counter block by block.

    Every draw consumes the next counters of every episode, so the numbers an episode gets
    depend only on its key and on the order of draws, never on the other episodes in the batch.
    """

    def __init__(self, keys: np.ndarray) -> None:
        self.keys = np.asarray(keys, dtype=np.uint64)
        self.next_counter = 0

    def _reserve(self, size: int) -> int:
        offset = self.next_counter
        self.next_counter += size
        return offset

    def uniform(self, size: int) -> np.ndarray:
        """Float64 array of shape (n_episodes, size), uniform in [0, 1)."""
        return _uniform(self.keys, self._reserve(size), size)

    def distinct(self, population: np.ndarray, m: int) -> np.ndarray:
        """``m`` distinct integers below each entry of ``population`` (n_episodes,) or
        (n_episodes, k), in random order: int64 of shape ``population.shape + (m,)``."""
        population = np.asarray(population, dtype=np.int64)
        per_episode = 1 if population.ndim == 1 else population.shape[1]
        window = distinct_window(m)
        offset = self._reserve(window * per_episode)
        row_keys = np.repeat(self.keys, per_episode)
        row_offsets = offset + window * np.tile(np.arange(per_episode, dtype=np.uint64), len(self.keys))
        chosen = sample_distinct(row_keys, row_offsets, population.reshape(-1), m)
        return chosen.reshape(*population.shape, m)
