"""Training state that belongs to the caller (the runner), not to the learner.

A trainable learner's ``fit(train_source, spec, context)`` reads its budget and its seed from a
:class:`TrainingContext`, resumes from ``context.load_checkpoint()``, calls
``context.save_checkpoint(state)`` whenever ``context.checkpoint_due(done)`` says so (every
``checkpoint_every`` episodes and at each validation), validates when ``context.validation_due``
says so, reports progress through ``context.progress_bar``, and returns a
:class:`TrainingRecord`. No learner writes resume code of its own: a context without a
checkpoint path simply never saves.

Units: episodes are counted from 1 (``done`` = episodes finished); seconds are wall time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from protobench.fewshot.progress import progress_bar


@dataclass
class TrainingRecord:
    """What a training run did: episodes run, the episode whose weights were kept (chosen on
    validation, else the last), wall seconds without validation, and the curve (one dict per
    validation or checkpoint: episode, train_loss, lr, seconds, val_accuracy when validated)."""

    episodes: int
    selected_episode: int
    train_seconds: float
    curve: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainingContext:
    """The budget, seed, checkpointing, validation and progress of one training run.

    ``n_episodes``: training episodes; ``seed``: the key the training episodes are drawn with;
    ``device``: where the learner trains; ``validate(learner) -> accuracy`` (or None) runs every
    ``validate_every`` episodes and at the end; ``checkpoint_path`` (or None) is where resumable
    state is written every ``checkpoint_every`` episodes, atomically.
    """

    n_episodes: int
    seed: int
    device: str = "cpu"
    validate: Callable[[Any], float] | None = None
    validate_every: int = 500
    checkpoint_path: Path | None = None
    checkpoint_every: int = 100
    progress: bool = True
    description: str = "train"

    def __post_init__(self) -> None:
        for name in ("n_episodes", "validate_every", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainingContext.{name} must be a positive integer, got {value!r}")

    def validation_due(self, done: int) -> bool:
        """Whether to validate after ``done`` episodes (every ``validate_every``, and at the end)."""
        return self.validate is not None and (done % self.validate_every == 0 or done == self.n_episodes)

    def checkpoint_due(self, done: int) -> bool:
        """Whether to save resumable state after ``done`` episodes (every ``checkpoint_every``,
        at each validation, never after the last episode: the caller keeps the final weights)."""
        if self.checkpoint_path is None or done >= self.n_episodes:
            return False
        return done % self.checkpoint_every == 0 or self.validation_due(done)

    def load_checkpoint(self) -> dict | None:
        """The state saved by an interrupted run of this training, or None."""
        if self.checkpoint_path is None or not Path(self.checkpoint_path).is_file():
            return None
        import torch

        return torch.load(self.checkpoint_path, map_location=self.device, weights_only=True)

    def save_checkpoint(self, state: dict) -> None:
        """Write ``state`` to ``checkpoint_path`` atomically (a temporary file, then a rename)."""
        if self.checkpoint_path is None:
            return
        import torch

        path = Path(self.checkpoint_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".writing")
        torch.save(state, partial)
        partial.replace(path)

    def discard_checkpoint(self) -> None:
        """Remove the resumable state once the training has finished."""
        if self.checkpoint_path is not None:
            Path(self.checkpoint_path).unlink(missing_ok=True)

    def progress_bar(self, initial: int = 0):
        """A progress reporter over the training episodes, named by ``description``."""
        return progress_bar(self.n_episodes, self.description, "ep", initial=initial, enabled=self.progress)
