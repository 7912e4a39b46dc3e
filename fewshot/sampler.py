"""EpisodeSampler: reproducible, random-access episodes from a label array.

The sampler sees only labels, never images. Episode ``i`` is a pure function of
``(seed, i)`` (see :mod:`protobench.fewshot.counter_rng`), so it can be drawn alone, in a vectorised batch,
in any process or DataLoader worker, and always comes out the same.

As a ``batch_sampler`` it yields one list of source indices per episode: support indices
grouped by class, then query indices grouped by class in the same class order. Like torch's
``DistributedSampler`` it has ``set_epoch`` and ``rank``/``world_size`` (see :class:`EpisodeSampler`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from protobench.fewshot.counter_rng import CounterStream, check_seed, episode_keys, role_key
from protobench.fewshot.episodes import Episode, EpisodeBatch, EpisodeSpec, VariableEpisodeSpec, episode_digest

_ITER_CHUNK = 2048


def labels_of(source) -> np.ndarray:
    """The label array of a labelled source (its ``labels`` or ``targets``), or of an array."""
    for name in ("labels", "targets"):
        if hasattr(source, name):
            return np.asarray(getattr(source, name))
    return np.asarray(source)


def check_labels(labels) -> np.ndarray:
    """Return labels as a 1-D int64 array, or raise ValueError saying what is wrong."""
    array = labels_of(labels)
    if array.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {array.shape}")
    if array.size == 0:
        raise ValueError("the source is empty: no labels to draw episodes from")
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"labels must be integers, got dtype {array.dtype}; map class names to integers "
            "first (for example with numpy.unique(names, return_inverse=True))"
        )
    return array.astype(np.int64)


def _check_int(name: str, value, low: int, high: int | None, hint: str) -> int:
    """``value`` as an int in [low, high) (no upper bound if ``high`` is None), else TypeError/ValueError."""
    bounds = f"[{low}, {high})" if high is not None else f">= {low}"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer {bounds}, got {value!r}; {hint}")
    if value < low or (high is not None and value >= high):
        raise ValueError(f"{name} must be an integer {bounds}, got {value}; {hint}")
    return int(value)


def _small_classes_message(classes: np.ndarray, counts: np.ndarray, needed: int,
                           class_names: Sequence[str] | None) -> str:
    """The error for classes with fewer than ``needed`` examples: the first ten, by name when
    ``class_names`` names every label ("cat (label 3): 1 example"), else as "3 (1)"."""
    named = class_names is not None and all(0 <= c < len(class_names) for c in classes[:10].tolist())
    if named:
        shown = "; ".join(f"{class_names[c]} (label {c}): {n} example{'' if n == 1 else 's'}"
                          for c, n in zip(classes[:10].tolist(), counts[:10].tolist(), strict=True))
    else:
        shown = ", ".join(f"{c} ({n})" for c, n in zip(classes[:10].tolist(), counts[:10].tolist(), strict=True))
    more = f" and {len(classes) - 10} more" if len(classes) > 10 else ""
    legend = "" if named else " (class (count))"
    return (f"{len(classes)} classes have fewer than the {needed} examples an episode needs per class: "
            f"{shown}{more}{legend}. Pass drop_small_classes=True to leave them out, or lower n_shot/n_query.")


class EpisodeSampler:
    """Draws ``n_episodes`` episodes of ``spec`` from ``labels`` with its own ``seed``.

    Parameters
    ----------
    labels: integer class label of every example (or a source with ``labels``/``targets``).
    spec: :class:`EpisodeSpec` (fixed N-way K-shot Q-query) or :class:`VariableEpisodeSpec`.
    seed: integer in [0, 2**64); the only source of randomness.
    n_episodes: episodes per epoch, over all processes.
    drop_small_classes: classes with fewer examples than an episode needs are an error unless
        this is True, in which case they are left out (and listed in ``dropped_classes``).
    class_names: the name of label c at position c, used only in that error's message (default:
        the source's ``class_names`` when it has them, e.g. an image folder's folder names).
    rank, world_size: this process's index and the number of processes sharing the episodes
        (as ``torch.distributed.get_rank()`` and ``get_world_size()``); defaults 0 and 1.

    Epochs and processes, as with torch's ``DistributedSampler``:

    - ``set_epoch(e)`` switches to the episodes of epoch ``e`` without building a new sampler.
      Epoch 0 (the start) draws episode ``i`` from ``(seed, i)``; epoch ``e > 0`` draws it from
      ``(role_key(f"epoch-{e}", seed), i)``. So epoch 0 is what a sampler without epochs gives,
      and every epoch is a pure function of ``(seed, e)``.
    - ``iter(sampler)`` (one list of source indices per episode) and ``len(sampler)`` cover this
      process's share of the current epoch: episodes ``rank, rank + world_size, ...`` below
      ``n_episodes``. The shares of ranks ``0..world_size-1`` are disjoint and together hold every
      episode exactly once. Unlike ``DistributedSampler`` nothing is padded, so when
      ``world_size`` does not divide ``n_episodes`` the first ``n_episodes % world_size`` ranks
      have one episode more; pick a multiple if every rank must take the same number of steps.
    - ``sampler[i]``, ``batch(a, b)``, ``episodes()`` and ``digest()`` index all ``n_episodes``
      episodes of the current epoch, whatever the rank.
    """

    def __init__(
        self,
        labels,
        spec: EpisodeSpec | VariableEpisodeSpec,
        seed: int,
        n_episodes: int,
        *,
        drop_small_classes: bool = False,
        rank: int = 0,
        world_size: int = 1,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(spec, (EpisodeSpec, VariableEpisodeSpec)):
            raise TypeError(f"spec must be an EpisodeSpec or VariableEpisodeSpec, got {type(spec).__name__}")
        if isinstance(n_episodes, bool) or not isinstance(n_episodes, (int, np.integer)) or n_episodes < 1:
            raise ValueError(f"n_episodes must be a positive integer, got {n_episodes!r}")
        self.spec = spec
        self.seed = check_seed(seed)
        self.n_episodes = int(n_episodes)
        self.world_size = _check_int("world_size", world_size, 1, None,
                                     "pass the number of processes, e.g. torch.distributed.get_world_size()")
        self.rank = _check_int("rank", rank, 0, self.world_size,
                               "pass this process's index, e.g. torch.distributed.get_rank()")
        self.set_epoch(0)
        if class_names is None:
            class_names = getattr(labels, "class_names", None)
        labels = check_labels(labels)

        classes, counts = np.unique(labels, return_counts=True)
        small = counts < spec.examples_per_class
        self.dropped_classes = classes[small]
        if small.any() and not drop_small_classes:
            raise ValueError(_small_classes_message(classes[small], counts[small], spec.examples_per_class,
                                                    class_names))
        keep = ~small
        self.classes = classes[keep]
        self.class_sizes = counts[keep]
        min_way = spec.n_way if isinstance(spec, EpisodeSpec) else spec.min_way
        if len(self.classes) < min_way:
            raise ValueError(
                f"{min_way}-way episodes need at least {min_way} classes with "
                f"{spec.examples_per_class}+ examples; the source has {len(self.classes)}"
            )
        # examples of class c are by_class[starts[c] : starts[c] + class_sizes[c]], in index order
        order = np.argsort(labels, kind="stable")
        in_kept = np.isin(labels[order], self.classes)
        self._by_class = order[in_kept]
        self._starts = np.concatenate([[0], np.cumsum(self.class_sizes)[:-1]]).astype(np.int64)

    def set_epoch(self, epoch: int) -> None:
        """Give the episodes of ``epoch`` (an int >= 0) from now on; epoch 0 is the default."""
        self.epoch = _check_int("epoch", epoch, 0, None, "count epochs from 0 and call set_epoch before each")
        self._epoch_seed = self.seed if self.epoch == 0 else role_key(f"epoch-{self.epoch}", self.seed)

    def _keys(self, episode_ids: np.ndarray) -> np.ndarray:
        """Keys of episodes ``episode_ids`` of the current epoch."""
        return episode_keys(self._epoch_seed, episode_ids)

    def _share(self) -> np.ndarray:
        """Ids of this rank's episodes: rank, rank + world_size, ... below n_episodes."""
        return np.arange(self.rank, self.n_episodes, self.world_size)

    def __len__(self) -> int:
        """Episodes this rank iterates per epoch (all ``n_episodes`` when world_size is 1)."""
        return len(range(self.rank, self.n_episodes, self.world_size))

    def _check_range(self, start: int, stop: int) -> None:
        if not 0 <= start <= stop <= self.n_episodes:
            raise IndexError(f"episodes [{start}, {stop}) out of range for a sampler of {self.n_episodes}")

    def __getitem__(self, i: int) -> Episode:
        if i < 0:
            i += self.n_episodes
        self._check_range(i, i + 1)
        if isinstance(self.spec, EpisodeSpec):
            return self.batch(i, i + 1)[0]
        return self._variable_episode(self._keys(np.array([i]))[0])

    def batch(self, start: int, stop: int) -> EpisodeBatch:
        """Episodes ``start..stop-1`` generated at once (fixed specs only)."""
        if not isinstance(self.spec, EpisodeSpec):
            raise TypeError("batch() needs a fixed EpisodeSpec; iterate a variable-spec sampler instead")
        self._check_range(start, stop)
        return self._fixed_batch(self._keys(np.arange(start, stop)))

    def _fixed_batch(self, keys: np.ndarray) -> EpisodeBatch:
        """The fixed-spec episodes of ``keys`` (one per episode), generated at once."""
        spec = self.spec
        n_episodes, per_class = len(keys), spec.examples_per_class
        stream = CounterStream(keys)
        class_pos = stream.distinct(np.full(n_episodes, len(self.classes)), spec.n_way)
        example_pos = stream.distinct(self.class_sizes[class_pos], per_class)
        rows = class_pos.reshape(-1)
        example_pos = example_pos.reshape(len(rows), per_class)
        indices = self._by_class[self._starts[rows][:, None] + example_pos]
        indices = indices.reshape(n_episodes, spec.n_way, per_class)
        return EpisodeBatch(
            spec=spec,
            classes=self.classes[class_pos],
            support=indices[:, :, : spec.n_shot].reshape(n_episodes, -1),
            query=indices[:, :, spec.n_shot :].reshape(n_episodes, -1),
        )

    def _variable_episode(self, key: np.uint64) -> Episode:
        """The episode of ``key`` under the Meta-Dataset rule stated in :class:`VariableEpisodeSpec`."""
        spec: VariableEpisodeSpec = self.spec
        stream = CounterStream(np.array([key]))
        max_way = min(spec.max_way, len(self.classes))
        n_way = spec.min_way + int(stream.uniform(1)[0, 0] * (max_way - spec.min_way + 1))
        class_pos = stream.distinct(np.array([len(self.classes)]), n_way)[0]
        sizes = self.class_sizes[class_pos]
        n_query = min(spec.max_query, int(sizes.min()) // 2)
        remaining = sizes - n_query
        beta = stream.uniform(1)[0, 0]
        contributions = np.minimum(spec.max_support_per_class, remaining)
        support_size = min(spec.max_support, int(np.floor(beta * contributions + 1).sum()))
        log_weights = np.log(0.5) + stream.uniform(n_way)[0] * (np.log(2.0) - np.log(0.5))
        weights = sizes * np.exp(log_weights)
        shots = np.floor(weights / weights.sum() * (support_size - n_way)).astype(np.int64) + 1
        shots = np.minimum(shots, remaining)
        support_groups, query_groups = [], []
        for c, (pos, shot) in enumerate(zip(class_pos, shots, strict=True)):
            m = int(shot) + n_query
            picked = stream.distinct(sizes[c : c + 1], m)[0]
            examples = self._by_class[self._starts[pos] + picked]
            support_groups.append(examples[:shot])
            query_groups.append(examples[shot:])
        return Episode.from_groups(self.classes[class_pos], support_groups, query_groups)

    def _generate(self, keys: np.ndarray) -> Iterator[Episode | EpisodeBatch]:
        """The episodes of ``keys``: one by one (variable specs) or in vectorised chunks (fixed)."""
        if not isinstance(self.spec, EpisodeSpec):
            return (self._variable_episode(key) for key in keys)
        return (self._fixed_batch(keys[first : first + _ITER_CHUNK]) for first in range(0, len(keys), _ITER_CHUNK))

    def episodes(self, start: int = 0, stop: int | None = None) -> Iterator[Episode]:
        """Iterate episodes ``start..stop-1`` (all by default) of the epoch current at this call."""
        stop = self.n_episodes if stop is None else stop
        self._check_range(start, stop)
        items = self._generate(self._keys(np.arange(start, stop)))
        if not isinstance(self.spec, EpisodeSpec):
            return items
        return (episode for chunk in items for episode in chunk)

    def __iter__(self) -> Iterator[list[int]]:
        """One list of source indices (support, then query) per episode of this rank's share of the
        epoch current at this call: a ``batch_sampler``."""
        items = self._generate(self._keys(self._share()))
        if not isinstance(self.spec, EpisodeSpec):
            return (episode.indices for episode in items)
        return (indices for chunk in items for indices in np.concatenate([chunk.support, chunk.query], 1).tolist())

    def digest(self) -> str:
        """:func:`episode_digest` of all ``n_episodes`` episodes of the current epoch (every rank's)."""
        if isinstance(self.spec, EpisodeSpec):
            chunk = 8192
            return episode_digest(
                self.batch(start, min(start + chunk, self.n_episodes))
                for start in range(0, self.n_episodes, chunk)
            )
        return episode_digest(self.episodes())

    def describe(self) -> dict:
        """What a result file records about this sampler."""
        return {
            "spec": self.spec.to_dict(),
            "seed": self.seed,
            "n_episodes": self.n_episodes,
            "n_classes": int(len(self.classes)),
            "dropped_classes": self.dropped_classes.tolist(),
        }
