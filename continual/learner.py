"""The continual learner contract (``typing.Protocol``) and the context the runner hands it.

A continual learner sees a stream one experience at a time (:mod:`protobench.continual.experience`):

- ``train_experience(experience, context)`` trains on it and returns a JSON-serialisable record
  (epochs, examples seen, losses). The context (:class:`ContinualContext`) belongs to the
  runner: the device, the keys that order the batches and draw augmentations, progress. The
  runner saves ``state_dict()`` after every experience; a learner writes no resume code.
- ``predict(x, task_id=None)`` returns logits of shape (n, ``n_classes``): column ``k`` is
  stream label ``k``. The runner scores the argmax over the classes seen so far (task-agnostic)
  or, given ``task_id``, over that experience's classes (task-aware); columns outside are
  ignored, so a learner may leave them at any value. A multi-head learner uses ``task_id`` to
  pick its head. A learner whose logits never depend on ``task_id`` may say so with a class
  attribute ``uses_task_id = False``: the runner then scores both protocols from one ``predict``
  call per batch (without it, one call per protocol).
- ``state_dict()`` / ``load_state_dict(state)`` hold everything needed to continue after the last
  finished experience (weights, optimiser state kept across experiences, Fisher information, a
  frozen teacher, the classes seen), so a resumed run gives identical results.

Factories take ``(input_shape, device, n_classes, **params)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from protobench.fewshot.counter_rng import role_key
from protobench.fewshot.progress import progress_bar

if TYPE_CHECKING:
    import torch

    from protobench.continual.experience import Experience


@runtime_checkable
class ContinualLearner(Protocol):
    """Learns from a stream of experiences; predicts with or without a task id."""

    version: str
    backbone_name: str | None
    pretraining: str | None

    def train_experience(self, experience: Experience, context: ContinualContext) -> dict:
        """Train on one experience; return its training record (JSON-serialisable)."""

    def predict(self, x: torch.Tensor, task_id: int | None = None) -> torch.Tensor:
        """Logits (n, n_classes) of inputs ``x``; column k is stream label k."""

    def state_dict(self) -> dict:
        """Everything needed to continue after the last finished experience."""

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""


@dataclass(frozen=True)
class ContinualContext:
    """What the runner hands ``train_experience``: the device, the experience's random keys, progress.

    ``seed`` is the unit's training key; :meth:`key` derives one key per (purpose, experience,
    epoch), so the batch order and augmentations of experience 3 are the same whether or not the
    run was resumed after experience 2. ``progress`` turns progress reporting on or off.
    """

    device: str
    seed: int
    experience_index: int
    progress: bool = True
    description: str = "train"

    def key(self, purpose: str, epoch: int = 0) -> int:
        """A key for ``purpose`` (``"order"``, ``"augment"``, ...) in this experience and ``epoch``."""
        return role_key(f"{purpose}/experience-{self.experience_index}/epoch-{epoch}", self.seed)

    def progress_bar(self, total: int, unit: str = "batch"):
        """A progress reporter over ``total`` steps, named by ``description``."""
        return progress_bar(total, self.description, unit, enabled=self.progress)

