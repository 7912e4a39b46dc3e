"""What the continual baselines share: a backbone with a linear head, trained by SGD one experience at a time.

:func:`train_epochs` is the training loop (mini-batches in the order the context's keys give,
optional augmentation, a loss the learner supplies, SGD steps); :class:`SGDLearner` is the base of
the baselines (fine-tuning, joint training, EWC, LwF): its model, output masking, prediction and
state. A subclass changes what it must (:meth:`SGDLearner.loss`, :meth:`SGDLearner.consolidate`,
the state) and nothing else.

Output masking. Labels are stream labels, so the classes seen after an experience are
``0 .. n_seen - 1`` (every class in a domain-incremental stream). The cross-entropy is taken over

- ``mask="seen"`` (default): the columns of the classes seen so far, the current experience's
  included (columns of classes not seen yet get no gradient);
- ``mask="experience"``: only the current experience's columns (the "labels trick": the old
  classes' head rows get no gradient from the new data);
- ``mask="all"``: every column, seen or not (what Avalanche's ``Naive`` does).

Masked columns get logit minus infinity before the softmax, so their probability and gradient are
exactly zero (``weight_decay`` still shrinks their head rows).

Randomness: batch order from ``context.key("order", epoch)`` (:meth:`ExperienceData.batches`);
augmentation of step ``s`` of epoch ``e`` from ``role_key(f"step-{s}", context.key("augment", e))``.
The global generators are never used while training (the initial weights come from them, at
construction: the runner seeds them inside ``torch.random.fork_rng``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from protobench.continual.augment import random_crop_flip
from protobench.continual.backbones import build_backbone
from protobench.continual.experience import Experience, ExperienceData
from protobench.continual.learner import ContinualContext
from protobench.fewshot.counter_rng import role_key

MASKS = ("seen", "experience", "all")
PREDICT_BATCH = 1024  # rows per forward pass in predict


class Classifier(nn.Module):
    """A backbone followed by a linear head with ``n_classes`` outputs (column k = stream label k)."""

    def __init__(self, backbone: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def augment_key(context: ContinualContext, epoch: int, step: int) -> int:
    """The key of step ``step``'s augmentation in epoch ``epoch`` of the context's experience."""
    return role_key(f"step-{step}", context.key("augment", epoch))


def train_epochs(model: nn.Module, data: ExperienceData, context: ContinualContext, *, epochs: int,
                 batch_size: int, optimizer: torch.optim.Optimizer,
                 loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                 augment: bool) -> dict:
    """Train ``model`` (in train mode) for ``epochs`` passes over ``data``.

    Each step: a mini-batch ``(x, y)`` in the order of ``context.key("order", epoch)``, augmented
    with :func:`random_crop_flip` when ``augment``, ``loss(model(x), x, y)`` (a scalar), backward,
    ``optimizer.step()``. The loop reads no value back from the device except once per epoch (the
    epoch's mean loss, from the losses it keeps as device tensors).

    Returns the record: ``epochs``, ``steps``, ``examples`` (examples seen, all epochs), ``loss``
    (mean per-example loss of the last epoch, as the loss function gives it) and ``seconds``
    (wall time).
    """
    n = len(data)
    if n == 0:
        raise ValueError(f"experience {context.experience_index} has no training examples")
    device = next(model.parameters()).device
    steps_per_epoch = math.ceil(n / batch_size)
    batch_sizes = torch.full((steps_per_epoch,), float(batch_size), device=device)
    batch_sizes[-1] = n - (steps_per_epoch - 1) * batch_size
    started = time.perf_counter()
    model.train()
    with context.progress_bar(epochs * steps_per_epoch) as bar:
        for epoch in range(epochs):
            losses = []
            batches = data.batches(batch_size, key=context.key("order", epoch), epoch=epoch)
            for step, (x, y) in enumerate(batches):
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if augment:
                    x = random_crop_flip(x, augment_key(context, epoch, step))
                value = loss(model(x), x, y)
                optimizer.zero_grad(set_to_none=True)
                value.backward()
                optimizer.step()
                losses.append(value.detach())
                bar.update(1)
            mean_loss = (torch.stack(losses).float() @ batch_sizes).item() / n
            bar.set_postfix(loss=f"{mean_loss:.4f}")
    return {"epochs": epochs, "steps": epochs * steps_per_epoch, "examples": epochs * n, "loss": mean_loss,
            "seconds": round(time.perf_counter() - started, 3)}


def check_number(name: str, value, *, low: float = 0.0, low_open: bool = False, high: float = math.inf,
                 integer: bool = False) -> None:
    """ValueError unless ``value`` is a finite number (an int when ``integer``) in the stated range."""
    kind = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not kind or not math.isfinite(value) or value < low or value > high \
            or (low_open and value == low):
        bounds = f"{'>' if low_open else '>='} {low}" + ("" if high == math.inf else f" and <= {high}")
        raise ValueError(f"{name} must be {'an integer' if integer else 'a number'} {bounds}, got {value!r}")


class SGDLearner:
    """A backbone (:func:`build_backbone`) and a linear head, trained by plain SGD one experience at a time.

    ``train_experience`` trains on the experience's training data (:func:`train_epochs`, a new
    SGD optimiser per experience: momentum buffers are not carried across experiences), then
    calls :meth:`consolidate`. ``predict`` returns the head's logits. Subclasses override
    :meth:`loss` and :meth:`consolidate`, and extend :meth:`state_dict`.
    """

    uses_task_id = False  # predict ignores task_id: the runner scores both protocols from one call

    version = "1"
    pretraining = None
    backbone_name: str  # set by __init__

    def __init__(self, input_shape: tuple[int, ...], device: str, n_classes: int, *, backbone: str = "mlp",
                 epochs: int = 1, batch_size: int = 64, lr: float = 0.01, momentum: float = 0.0,
                 weight_decay: float = 0.0, augment: bool = False, mask: str = "seen") -> None:
        check_number("n_classes", n_classes, low=1, integer=True)
        check_number("epochs", epochs, low=1, integer=True)
        check_number("batch_size", batch_size, low=1, integer=True)
        check_number("lr", lr, low_open=True)
        check_number("momentum", momentum)
        check_number("weight_decay", weight_decay)
        if mask not in MASKS:
            raise ValueError(f"mask must be one of {', '.join(MASKS)}, got {mask!r}")
        if not isinstance(augment, bool):
            raise ValueError(f"augment must be true or false, got {augment!r}")
        self.device = torch.device(device)
        self.n_classes, self.backbone_name = n_classes, backbone
        self.epochs, self.batch_size, self.augment, self.mask = epochs, batch_size, augment, mask
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.model = Classifier(build_backbone(backbone, tuple(input_shape)), n_classes).to(self.device)
        self.n_seen = 0  # classes 0 .. n_seen - 1 have been trained on
        self.output_mask = torch.zeros(n_classes, device=self.device)  # 0 where trained, -inf where masked

    def train_experience(self, experience: Experience, context: ContinualContext) -> dict:
        """Train on ``experience.train`` (see the module docstring for masking), then consolidate."""
        self.see(experience.classes)
        record = self.fit(experience.train, experience.classes, context)
        self.consolidate(experience.train, context)
        return record

    def see(self, classes: Iterable[int]) -> None:
        """Count ``classes`` (stream labels) as seen; ValueError if one is outside the head."""
        classes = list(classes)
        if not classes or min(classes) < 0 or max(classes) >= self.n_classes:
            raise ValueError(f"experience classes {classes} must be non-empty and within 0..{self.n_classes - 1} "
                             f"(n_classes={self.n_classes})")
        self.n_seen = max(self.n_seen, max(classes) + 1)

    def fit(self, data: ExperienceData, classes: Iterable[int], context: ContinualContext) -> dict:
        """Set the output mask for ``classes`` and train the model on ``data`` with a new SGD optimiser."""
        trained = {"seen": range(self.n_seen), "experience": list(classes), "all": range(self.n_classes)}[self.mask]
        self.output_mask = torch.full((self.n_classes,), -math.inf, device=self.device)
        self.output_mask[list(trained)] = 0.0
        optimizer = torch.optim.SGD(self.model.parameters(), lr=self.lr, momentum=self.momentum,
                                    weight_decay=self.weight_decay)
        return train_epochs(self.model, data, context, epochs=self.epochs, batch_size=self.batch_size,
                            optimizer=optimizer, loss=self.loss, augment=self.augment)

    def loss(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the masked logits (``logits + output_mask``) against stream labels ``y``."""
        return F.cross_entropy(logits + self.output_mask, y)

    def consolidate(self, data: ExperienceData, context: ContinualContext) -> None:
        """What to keep at the end of an experience trained on ``data`` (nothing, for fine-tuning)."""

    def predict(self, x: torch.Tensor, task_id: int | None = None) -> torch.Tensor:
        """Float32 logits (n, n_classes) on the learner's device, in eval mode (one head: ``task_id``
        is not used; the runner restricts the argmax to the task's classes)."""
        self.model.eval()
        with torch.no_grad():
            return torch.cat([self.model(chunk.to(self.device)).float() for chunk in x.split(PREDICT_BATCH)])

    def state_dict(self) -> dict:
        """The model's weights and the number of classes seen."""
        return {"model": self.model.state_dict(), "n_seen": self.n_seen}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output; ValueError when ``state`` is another learner's."""
        missing = sorted(set(self.state_dict()) - set(state))
        if missing:
            raise ValueError(f"not a {type(self).__name__} state: it lacks {', '.join(missing)}")
        self.model.load_state_dict(state["model"])
        self.n_seen = int(state["n_seen"])
