"""The continual learner contract (``typing.Protocol``).

A continual learner sees a stream one experience at a time: ``train_experience(experience,
context)`` trains on it (the runner's context owns checkpoints, written after every experience,
progress and the device), and ``predict(x, task_id=None)`` returns logits over every class seen
so far (class-incremental) or, given ``task_id``, over that task's classes (task-incremental).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch


@runtime_checkable
class ContinualLearner(Protocol):
    """Learns from a stream of experiences; predicts with or without a task id."""

    version: str
    backbone_name: str | None
    pretraining: str | None

    def train_experience(self, experience: Any, context: Any) -> dict:
        """Train on one experience; return its training record (JSON-serialisable)."""

    def predict(self, x: torch.Tensor, task_id: int | None = None) -> torch.Tensor:
        """Logits (n, classes) of inputs ``x``; ``task_id`` restricts them to that task's classes."""

    def state_dict(self) -> dict:
        """Everything needed to resume after the last finished experience."""

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""
