"""The few-shot learner contracts, as ``typing.Protocol`` classes, and the task a learner scores.

A few-shot learner is one of two kinds, optionally trainable:

- an :class:`EmbeddingLearner` maps images to features (``embed``) and scores episodes from those
  features (``score``); the runner embeds every test image once and scores thousands of
  episodes from the cache, in batches;
- a :class:`PredictingLearner` scores one episode from its images (``predict``).

A :class:`TrainableLearner` also has ``fit(train_source, spec, context) -> TrainingRecord``
(the runner owns checkpoints, validation and progress: see :mod:`protobench.fewshot.training`)
and ``state_dict`` / ``load_state_dict``. Every learner says what it is (:class:`Described`):
``version``, ``backbone_name`` and ``pretraining`` (the data its backbone saw before the
benchmark, or None), which the result file records.

Scoring receives an :class:`EpisodeTask` or :class:`TaskBatch`: the episode's classes as the
source's label ids and, where the source names its classes, their names (text prototypes need
them). Logits are (n_query, n_way), or (B, n_query, n_way) for a batch; larger is more likely.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # torch is not imported by `import protobench.fewshot`
    import torch

    from protobench.fewshot.episodes import EpisodeSpec
    from protobench.fewshot.training import TrainingContext, TrainingRecord


@dataclass(frozen=True)
class TaskBatch:
    """What a learner may know about B episodes besides their images.

    ``classes``: int64 (B, n_way), the source's label of each episode class 0..n_way-1;
    ``class_names``: per episode, the names of those classes in the same order, or None when
    the source does not name its classes.
    """

    n_way: int
    classes: np.ndarray
    class_names: tuple[tuple[str, ...], ...] | None = None

    @classmethod
    def of(cls, classes: np.ndarray, names: list[str] | None) -> TaskBatch:
        """The task batch of episodes with these classes (B, n_way), naming them from ``names``."""
        classes = np.atleast_2d(np.asarray(classes, dtype=np.int64))
        named = None if names is None else tuple(tuple(names[c] for c in row) for row in classes.tolist())
        return cls(int(classes.shape[1]), classes, named)


@dataclass(frozen=True)
class EpisodeTask:
    """One episode's images and what is known about its classes.

    ``support_x`` (S, ...) with ``support_y`` (S,) int64 labels 0..n_way-1; ``query_x`` (Q, ...);
    ``classes`` (n_way,) the source's label ids; ``class_names`` their names or None.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    classes: np.ndarray
    class_names: tuple[str, ...] | None = None

    @property
    def n_way(self) -> int:
        return len(self.classes)


@runtime_checkable
class Described(Protocol):
    """What a result file records about a learner."""

    version: str
    backbone_name: str | None
    pretraining: str | None


@runtime_checkable
class EmbeddingLearner(Described, Protocol):
    """Features once per image, then batched scoring from cached features."""

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Features (n, d) of images (n, C, H, W), without gradients."""

    def score(self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor,
              task: TaskBatch) -> torch.Tensor:
        """Logits (B, Q, n_way) from support features (B, S, d), labels (S,) or (B, S), query (B, Q, d)."""


@runtime_checkable
class PredictingLearner(Described, Protocol):
    """Scores one episode from its images."""

    def predict(self, task: EpisodeTask) -> torch.Tensor:
        """Logits (n_query, n_way) of the episode's query images."""


@runtime_checkable
class TrainableLearner(Protocol):
    """A learner that is meta-trained before it is evaluated, and whose state can be saved."""

    def fit(self, train_source: Any, spec: EpisodeSpec, context: TrainingContext) -> TrainingRecord:
        """Train on episodes of ``spec`` from ``train_source``; the context owns checkpoints,
        validation, progress and the episode budget."""

    def state_dict(self) -> dict:
        """Everything needed to rebuild the trained learner with ``load_state_dict``."""

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""


def protocol_members(protocol: type) -> tuple[str, ...]:
    """The names a protocol requires: its methods and annotated attributes, bases included."""
    names: list[str] = []
    for klass in reversed(protocol.__mro__):
        if klass in (object, Protocol) or not getattr(klass, "_is_protocol", False):
            continue
        names += [n for n in getattr(klass, "__annotations__", {}) if not n.startswith("_")]
        names += [n for n, v in vars(klass).items() if callable(v) and not n.startswith("_")]
    return tuple(dict.fromkeys(names))


def missing_members(learner: Any, kind: str = "fewshot") -> str:
    """Empty when ``learner`` (an instance or a class) satisfies its kind's protocol, else a
    sentence naming what is missing. A class may declare an attribute by annotating it in its body.

    Kind ``fewshot``: :class:`EmbeddingLearner` or :class:`PredictingLearner`; when it has any of
    ``fit``/``state_dict``/``load_state_dict`` it must have all of :class:`TrainableLearner`.
    Kind ``continual``: :class:`protobench.continual.learner.ContinualLearner`.
    """
    declared = {name for klass in getattr(learner, "__mro__", ()) for name in getattr(klass, "__annotations__", {})}

    def lacking(protocol: type) -> list[str]:
        """Members of ``protocol`` that ``learner`` has neither as an attribute nor, for a class, as an
        annotation (an instance attribute its ``__init__`` sets, declared in the class body)."""
        return [name for name in protocol_members(protocol) if not hasattr(learner, name) and name not in declared]

    if kind == "continual":
        from protobench.continual.learner import ContinualLearner

        missing = lacking(ContinualLearner)
        return f"missing {', '.join(missing)}" if missing else ""
    if kind != "fewshot":
        return f"unknown learner kind {kind!r} (known: fewshot, continual)"
    embedding, predicting = lacking(EmbeddingLearner), lacking(PredictingLearner)
    problems = []
    if embedding and predicting:
        problems.append(f"missing {', '.join(embedding)} (EmbeddingLearner) or {', '.join(predicting)} "
                        "(PredictingLearner)")
    trainable = lacking(TrainableLearner)
    if len(trainable) < len(protocol_members(TrainableLearner)) and trainable:
        problems.append(f"missing {', '.join(trainable)} (TrainableLearner: it has some of fit, state_dict, "
                        "load_state_dict but not all)")
    return "; ".join(problems)
