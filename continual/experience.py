"""Experiences and streams: what a continual learner is trained and tested on.

A :class:`Stream` is a tuple of :class:`Experience` objects and what they are (scenario, class
order, the seed it was drawn from). Each experience has a ``train`` and a ``test``
:class:`ExperienceData`: rows of tensors shared by the whole stream (held once, on the training
device, never decoded per batch), with an optional batched domain transform (a pixel
permutation, a rotation) applied when a batch is taken.

Labels are *stream labels*: in a class-split stream the ``k``-th class of the class order gets
label ``k``, so the classes seen after experience ``i`` are ``0 .. n_seen - 1`` and experience
``i``'s classes are a contiguous block. ``Stream.class_order`` records the source's label values
behind them, experience by experience. In a domain-incremental stream every experience has the
same classes.

Batches are shuffled by a counter-based permutation of (key, epoch) (:func:`permutation`), so
the order is a pure function of the key: identical in any process, with any worker count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from protobench.fewshot.counter_rng import CounterStream, episode_keys

SCENARIOS = ("class-incremental", "task-incremental", "domain-incremental", "online")


def permutation(n: int, key: int, epoch: int = 0) -> np.ndarray:
    """A permutation of ``range(n)`` (int64), a pure function of ``(key, epoch, n)``.

    Uniform doubles from the counter-based generator (one per position), sorted stably.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    keys = episode_keys(key, np.array([epoch], dtype=np.uint64))
    return np.argsort(CounterStream(keys).uniform(n)[0], kind="stable").astype(np.int64)


@dataclass(frozen=True)
class ExperienceData:
    """One experience's train or test examples: rows ``indices`` of the shared ``images``/``labels``.

    ``images`` is (N, C, H, W) float32 and ``labels`` (N,) int64 stream labels, shared by every
    experience of a stream and kept on one device; ``transform`` (batched, deterministic) maps a
    batch of images to this experience's domain, or is None.
    """

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def take(self, positions: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (transformed) and stream labels of the examples at ``positions`` of this experience."""
        rows = self.indices[positions]
        images = self.images[rows]
        if self.transform is not None:
            images = self.transform(images)
        return images, self.labels[rows]

    def batches(self, batch_size: int, *, key: int | None = None, epoch: int = 0,
                drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Mini-batches ``(images, labels)`` over the experience: in order when ``key`` is None,
        else in the order :func:`permutation` (len, key, epoch) gives."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self)
        order = torch.arange(n) if key is None else torch.from_numpy(permutation(n, key, epoch))
        order = order.to(self.indices.device)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            yield self.take(order[start:start + batch_size])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every example of the experience at once: ``(images, labels)``."""
        return self.take(slice(None))


@dataclass(frozen=True)
class Experience:
    """The ``index``-th experience of a stream.

    ``task_id`` is the experience's task (its index) in class-, task- and domain-incremental
    streams, and None in an online stream, where the learner is told no task and no boundary.
    ``classes`` are the stream labels its examples carry (sorted).
    """

    index: int
    task_id: int | None
    classes: tuple[int, ...]
    train: ExperienceData
    test: ExperienceData


@dataclass(frozen=True)
class Stream:
    """A continual stream: its experiences and what a result records about it.

    ``n_classes`` is the width of the output a learner needs (every class of the stream; for a
    domain-incremental stream, the classes each experience shares). ``class_order`` holds each
    experience's classes as the source's label values (None when every experience has the same
    classes); ``seed`` the key the order or the domain transforms were drawn from (None when
    given explicitly); ``transform`` names the domain shift (``"permuted"``, ``"rotated"``).
    ``task_aware`` says whether a task-aware evaluation (the task id given) differs from the
    task-agnostic one: true for class-split streams.
    """

    name: str
    scenario: str
    experiences: tuple[Experience, ...]
    n_classes: int
    input_shape: tuple[int, ...]
    class_order: tuple[tuple[int, ...], ...] | None
    seed: int | None
    transform: str | None = None
    task_aware: bool = True

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}, got {self.scenario!r}")
        if not self.experiences:
            raise ValueError("a stream needs at least one experience")

    def __len__(self) -> int:
        return len(self.experiences)

    def __iter__(self) -> Iterator[Experience]:
        return iter(self.experiences)

    def __getitem__(self, index: int) -> Experience:
        return self.experiences[index]

    def experience(self, task_id: int) -> Experience:
        """The experience of task ``task_id``, checked: an integer in ``0 .. len(self) - 1`` (no
        negative indexing), else TypeError / IndexError naming the valid range."""
        if isinstance(task_id, bool) or not isinstance(task_id, (int, np.integer)):
            raise TypeError(f"task id must be an integer in 0..{len(self) - 1}, got {task_id!r}")
        if not 0 <= task_id < len(self):
            raise IndexError(f"task id {task_id} is out of range: stream {self.name!r} has {len(self)} "
                             f"experiences, task ids 0..{len(self) - 1}")
        return self.experiences[int(task_id)]

    def spec(self) -> dict:
        """The result file's ``benchmark.stream_spec``."""
        order = None if self.class_order is None else [list(map(int, classes)) for classes in self.class_order]
        return {"scenario": self.scenario, "n_experiences": len(self.experiences), "class_order": order,
                "seed": self.seed, "transform": self.transform}
