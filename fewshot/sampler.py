"""EpisodeSampler: reproducible, random-access episodes from a label array.

The sampler sees only labels, never images. Episode ``i`` is a pure function of
``(seed, i)`` (see :mod:`protobench.fewshot.counter_rng`), so it can be drawn alone, in a vectorised batch,
in any process or DataLoader worker, and always comes out the same.

As a ``batch_sampler`` it yields one list of source indices per episode: support indices
grouped by class, then query indices grouped by class in the same class order.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from protobench.fewshot.counter_rng import CounterStream, check_seed, episode_keys
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


class EpisodeSampler:
    """Draws ``n_episodes`` episodes of ``spec`` from ``labels`` with its own ``seed``.

    Parameters
    ----------
    labels: integer class label of every example (or a source with ``labels``/``targets``).
    spec: :class:`EpisodeSpec` (fixed N-way K-shot Q-query) or :class:`VariableEpisodeSpec`.
    seed: integer in [0, 2**64); the only source of randomness.
    n_episodes: length of the sampler.
    drop_small_classes: classes with fewer examples than an episode needs are an error unless
        this is True, in which case they are left out (and listed in ``dropped_classes``).
    """

    def __init__(
        self,
        labels,
        spec: EpisodeSpec | VariableEpisodeSpec,
        seed: int,
        n_episodes: int,
        *,
        drop_small_classes: bool = False,
    ) -> None:
        if not isinstance(spec, (EpisodeSpec, VariableEpisodeSpec)):
            raise TypeError(f"spec must be an EpisodeSpec or VariableEpisodeSpec, got {type(spec).__name__}")
        if isinstance(n_episodes, bool) or not isinstance(n_episodes, (int, np.integer)) or n_episodes < 1:
            raise ValueError(f"n_episodes must be a positive integer, got {n_episodes!r}")
        self.spec = spec
        self.seed = check_seed(seed)
        self.n_episodes = int(n_episodes)
        labels = check_labels(labels)

        classes, counts = np.unique(labels, return_counts=True)
        small = counts < spec.examples_per_class
        self.dropped_classes = classes[small]
        if small.any() and not drop_small_classes:
            shown = ", ".join(f"{c} ({n})" for c, n in zip(classes[small][:10], counts[small][:10], strict=True))
            more = f" and {small.sum() - 10} more" if small.sum() > 10 else ""
            raise ValueError(
                f"{small.sum()} classes have fewer than the {spec.examples_per_class} examples an "
                f"episode needs per class: {shown}{more} (class (count)). Pass "
                "drop_small_classes=True to leave them out, or lower n_shot/n_query."
            )
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

    def __len__(self) -> int:
        return self.n_episodes

    def _check_range(self, start: int, stop: int) -> None:
        if not 0 <= start <= stop <= self.n_episodes:
            raise IndexError(f"episodes [{start}, {stop}) out of range for a sampler of {self.n_episodes}")

    def __getitem__(self, i: int) -> Episode:
        if i < 0:
            i += self.n_episodes
        self._check_range(i, i + 1)
        if isinstance(self.spec, EpisodeSpec):
            return self.batch(i, i + 1)[0]
        return self._variable_episode(episode_keys(self.seed, np.array([i]))[0])

    def batch(self, start: int, stop: int) -> EpisodeBatch:
        """Episodes ``start..stop-1`` generated at once (fixed specs only)."""
        if not isinstance(self.spec, EpisodeSpec):
            raise TypeError("batch() needs a fixed EpisodeSpec; iterate a variable-spec sampler instead")
        self._check_range(start, stop)
        spec = self.spec
        n_episodes, per_class = stop - start, spec.examples_per_class
        stream = CounterStream(episode_keys(self.seed, np.arange(start, stop)))
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
        support_size = min(spec.max_support, int(np.ceil(beta * contributions).sum()))
        support_size = max(support_size, n_way)
        log_weights = np.log(0.5) + stream.uniform(n_way)[0] * (np.log(2.0) - np.log(0.5))
        weights = np.exp(log_weights) * remaining
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

    def episodes(self, start: int = 0, stop: int | None = None) -> Iterator[Episode]:
        """Iterate episodes ``start..stop-1`` (all by default), generated in vectorised chunks."""
        stop = self.n_episodes if stop is None else stop
        self._check_range(start, stop)
        if not isinstance(self.spec, EpisodeSpec):
            keys = episode_keys(self.seed, np.arange(start, stop))
            return (self._variable_episode(key) for key in keys)
        chunks = (self.batch(first, min(first + _ITER_CHUNK, stop)) for first in range(start, stop, _ITER_CHUNK))
        return (episode for chunk in chunks for episode in chunk)

    def __iter__(self) -> Iterator[list[int]]:
        """One list of source indices per episode (support, then query): a ``batch_sampler``."""
        if not isinstance(self.spec, EpisodeSpec):
            return (episode.indices for episode in self.episodes())
        chunks = (self.batch(first, min(first + _ITER_CHUNK, self.n_episodes))
                  for first in range(0, self.n_episodes, _ITER_CHUNK))
        return (indices for chunk in chunks for indices in np.concatenate([chunk.support, chunk.query], 1).tolist())

    def digest(self) -> str:
        """:func:`episode_digest` of all the sampler's episodes."""
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
