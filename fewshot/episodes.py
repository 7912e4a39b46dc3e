"""Episode specifications, episodes, their digest, and their plain-JSON file format.

An episode is a few-shot task: ``n_way`` classes, a support set and a query set of indices into
a labelled source. Indices are grouped by class in the order of ``classes``; labels inside the
episode are 0..N-1 in that same order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

EPISODE_FILE_FORMAT = "protobench.episodes"
EPISODE_FILE_VERSION = 1


@dataclass(frozen=True)
class EpisodeSpec:
    """Fixed N-way K-shot Q-query episodes."""

    n_way: int
    n_shot: int
    n_query: int

    def __post_init__(self) -> None:
        for name in ("n_way", "n_shot", "n_query"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"EpisodeSpec.{name} must be a positive integer, got {value!r}")
        if self.n_way < 2:
            raise ValueError(f"EpisodeSpec.n_way must be at least 2, got {self.n_way}")

    @property
    def examples_per_class(self) -> int:
        return self.n_shot + self.n_query

    @property
    def key(self) -> str:
        """The spec's one canonical name, used in file names, unit names and results:
        ``"5-way-1-shot-15-query"``."""
        return f"{self.n_way}-way-{self.n_shot}-shot-{self.n_query}-query"

    def to_dict(self) -> dict:
        return {"kind": "fixed", "n_way": self.n_way, "n_shot": self.n_shot, "n_query": self.n_query}


@dataclass(frozen=True)
class VariableEpisodeSpec:
    """Meta-Dataset episodes (Triantafillou et al. 2020), variable way and shot.

    The rule of Meta-Dataset's ``EpisodeDescriptionSampler`` (google-research/meta-dataset,
    ``meta_dataset/data/sampling.py``) without a class hierarchy; the defaults are its settings.
    With ``n_c`` the number of examples of class ``c`` (counts of examples, not fractions), an
    episode draws, in this order:

    1. the way ``N``, uniform on the integers ``[min_way, min(max_way, number of classes)]``;
    2. ``N`` distinct classes, uniformly, in random order;
    3. the query count, the same for every class: ``q = min(max_query, min_c floor(n_c / 2))``;
    4. the support-set size
       ``S = min(max_support, sum_c floor(beta * min(max_support_per_class, n_c - q) + 1))``,
       beta ~ U[0, 1) drawn once per episode (the paper writes ``ceil(beta * ...)`` with beta in
       (0, 1]; the two agree unless ``beta * ...`` is an integer, which has probability 0);
    5. the shots ``k_c = min(floor(p_c * (S - N)) + 1, n_c - q)``, where
       ``p_c = n_c exp(a_c) / sum_c' n_c' exp(a_c')`` and ``a_c ~ U(log 0.5, log 2)`` independently:
       proportions follow the class sizes ``n_c`` (not ``n_c - q``), and every class has a shot;
    6. ``k_c + q`` distinct examples of each class, uniformly: the first ``k_c`` support, the rest query.

    Known departures from Meta-Dataset:

    - classes are always chosen uniformly. Meta-Dataset does so too except for ImageNet (the
      classes under one node of the WordNet DAG, so the way is not uniform there) and Omniglot
      (the classes of one alphabet), hierarchies a label array does not carry;
    - the log-weight range (log 0.5, log 2) is fixed; Meta-Dataset configures it
      (``min_log_weight``/``max_log_weight``, with these values in its shipped configs);
    - random numbers come from the sampler's counter-based stream (:mod:`protobench.fewshot.counter_rng`), not
      numpy's ``RandomState``: same distribution, other episodes for a given seed;
    - examples are drawn afresh for each episode; Meta-Dataset reads them from per-class streams
      shuffled through a finite buffer and repeated (``meta_dataset/data/reader.py``).
    """

    min_way: int = 5
    max_way: int = 50
    max_query: int = 10
    max_support: int = 500
    max_support_per_class: int = 100

    def __post_init__(self) -> None:
        if not 2 <= self.min_way <= self.max_way:
            raise ValueError("VariableEpisodeSpec needs 2 <= min_way <= max_way")
        if self.max_query < 1 or self.max_support < self.max_way or self.max_support_per_class < 1:
            raise ValueError("VariableEpisodeSpec needs max_query >= 1, max_support >= max_way")

    @property
    def examples_per_class(self) -> int:
        return 2  # one shot and one query at least

    @property
    def key(self) -> str:
        """The spec's one canonical name: ``"variable-5-50-way-10-query-500-support-100-per-class"``."""
        return (f"variable-{self.min_way}-{self.max_way}-way-{self.max_query}-query-{self.max_support}-support-"
                f"{self.max_support_per_class}-per-class")

    def to_dict(self) -> dict:
        return {
            "kind": "variable",
            "min_way": self.min_way,
            "max_way": self.max_way,
            "max_query": self.max_query,
            "max_support": self.max_support,
            "max_support_per_class": self.max_support_per_class,
        }


def spec_from_dict(data: dict) -> EpisodeSpec | VariableEpisodeSpec:
    """Inverse of ``to_dict`` on either spec."""
    fields = {k: v for k, v in data.items() if k != "kind"}
    if data.get("kind") == "fixed":
        return EpisodeSpec(**fields)
    if data.get("kind") == "variable":
        return VariableEpisodeSpec(**fields)
    raise ValueError(f"unknown episode spec kind {data.get('kind')!r}; expected 'fixed' or 'variable'")


@dataclass(eq=False, slots=True)
class Episode:
    """One episode. All arrays are int64.

    ``classes``: the source's label values, in episode order. ``support``/``query``: indices
    into the source, grouped by class in that order. ``support_labels``/``query_labels``:
    the episode labels 0..N-1 of those indices.
    """

    classes: np.ndarray
    support: np.ndarray
    support_labels: np.ndarray
    query: np.ndarray
    query_labels: np.ndarray

    @property
    def n_way(self) -> int:
        return len(self.classes)

    @property
    def indices(self) -> list[int]:
        """Support then query indices: the batch a DataLoader loads for this episode."""
        return np.concatenate([self.support, self.query]).tolist()

    @classmethod
    def from_groups(cls, classes, support_groups, query_groups) -> Episode:
        """Build an episode from per-class lists of support and query indices."""
        def flatten(groups):
            arrays = [np.asarray(g, dtype=np.int64).reshape(-1) for g in groups]
            labels = np.concatenate([np.full(len(a), c, dtype=np.int64) for c, a in enumerate(arrays)])
            return np.concatenate(arrays), labels

        support, support_labels = flatten(support_groups)
        query, query_labels = flatten(query_groups)
        return cls(np.asarray(classes, dtype=np.int64), support, support_labels, query, query_labels)

    def groups(self, which: str) -> list[list[int]]:
        """Per-class index lists of ``which`` ('support' or 'query')."""
        indices, labels = getattr(self, which), getattr(self, f"{which}_labels")
        return [indices[labels == c].tolist() for c in range(self.n_way)]


@dataclass(frozen=True, eq=False)
class EpisodeBatch:
    """Many fixed-spec episodes as arrays: classes (B, N), support (B, N*K), query (B, N*Q).

    Labels are the same for every episode: ``support_labels`` (N*K,), ``query_labels`` (N*Q,).
    """

    spec: EpisodeSpec
    classes: np.ndarray
    support: np.ndarray
    query: np.ndarray

    @cached_property
    def support_labels(self) -> np.ndarray:
        return np.repeat(np.arange(self.spec.n_way, dtype=np.int64), self.spec.n_shot)

    @cached_property
    def query_labels(self) -> np.ndarray:
        return np.repeat(np.arange(self.spec.n_way, dtype=np.int64), self.spec.n_query)

    def __len__(self) -> int:
        return len(self.classes)

    def __getitem__(self, b: int) -> Episode:
        return Episode(self.classes[b], self.support[b], self.support_labels,
                       self.query[b], self.query_labels)

    def __iter__(self):
        return (self[b] for b in range(len(self)))

    def digest_records(self) -> np.ndarray:
        """The int64 records that :func:`episode_digest` hashes, one row per episode."""
        sizes = np.array([self.support.shape[1], self.query.shape[1]], dtype=np.int64)
        head = np.broadcast_to(sizes, (len(self), 2))
        return np.ascontiguousarray(np.concatenate([head, self.support, self.query], axis=1))


def _episode_record(episode: Episode) -> np.ndarray:
    sizes = np.array([len(episode.support), len(episode.query)], dtype=np.int64)
    return np.concatenate([sizes, episode.support, episode.query]).astype("<i8")


def episode_digest(episodes: Iterable[Episode | EpisodeBatch] | EpisodeBatch) -> str:
    """SHA-256 (hex) over the episodes' index arrays, in order.

    Each episode contributes little-endian int64 values: ``len(support), len(query)``, then the
    support indices, then the query indices. Two results with the same digest were evaluated on
    identical episodes (same images, same class grouping, same order). ``episodes`` may be
    episodes, batches of episodes, or a mix; only the sequence of episodes matters.
    """
    digest = hashlib.sha256()
    for item in [episodes] if isinstance(episodes, EpisodeBatch) else episodes:
        records = item.digest_records() if isinstance(item, EpisodeBatch) else _episode_record(item)
        digest.update(records.astype("<i8").tobytes())
    return digest.hexdigest()


def save_episodes(path: str | Path, episodes: Iterable[Episode], metadata: dict | None = None) -> str:
    """Write episodes as plain JSON (per-class index lists) and return their digest."""
    episodes = list(episodes)
    digest = episode_digest(episodes)
    payload = {
        "format": EPISODE_FILE_FORMAT,
        "version": EPISODE_FILE_VERSION,
        "digest": digest,
        "metadata": metadata or {},
        "episodes": [
            {"classes": e.classes.tolist(), "support": e.groups("support"), "query": e.groups("query")}
            for e in episodes
        ],
    }
    Path(path).write_text(json.dumps(payload))
    return digest


def load_episodes(path: str | Path) -> list[Episode]:
    """Read a file written by :func:`save_episodes`, checking its structure and digest."""
    try:
        payload = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read an episode file: {error}") from error
    if not isinstance(payload, dict) or payload.get("format") != EPISODE_FILE_FORMAT:
        raise ValueError(f"{path}: not a protobench episode file (missing format {EPISODE_FILE_FORMAT!r})")
    if payload.get("version") != EPISODE_FILE_VERSION:
        raise ValueError(f"{path}: episode file version {payload.get('version')!r} is not supported")
    episodes = []
    for number, item in enumerate(payload.get("episodes", [])):
        try:
            classes, support, query = item["classes"], item["support"], item["query"]
            if not len(classes) == len(support) == len(query):
                raise ValueError("classes, support and query must have one entry per class")
            episodes.append(Episode.from_groups(classes, support, query))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: episodes[{number}] is malformed: {error}") from error
    if episode_digest(episodes) != payload.get("digest"):
        raise ValueError(f"{path}: digest does not match the episodes; the file was altered")
    return episodes
