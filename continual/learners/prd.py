"""PRD: Prototype-Sample Relation Distillation (Asadi et al., ICML 2023), a replay-free continual learner.

Model. An encoder (:func:`build_backbone`; the paper uses a CIFAR ResNet-18 with 512 features),
a projection head ``Linear(d, h), ReLU, Linear(h, h), ReLU, Linear(h, 128)`` (no batch norm, as in
the authors' code, with h = 512 there) and one prototype per class of the stream, a vector in the
encoder's feature space (initialised like ``nn.Linear``'s weight: uniform in +-1/sqrt(d)).

Training, on each batch ``(x, y)`` of the current experience (no stored data of past ones):

1. two augmented views of every image (:func:`augment_view`), encoded together (2n rows);
2. ``supcon``: :func:`supervised_contrastive_loss` of the L2-normalised projections (temperature
   ``supcon_temperature``, scaled by T/0.07 as in the authors' code);
3. ``prototype``: :func:`prototype_loss` of the detached features against their class prototypes
   (it trains the current experience's prototypes only);
4. ``distill`` (from the second experience on): :func:`relation_distillation_loss` between the
   frozen copy of the encoder and prototypes kept at the end of the previous experience (the old
   side) and the current encoder with the current, trainable prototypes of the old classes (the
   new side), over both views; ``distill_axis="samples"`` (default, the paper's Eq. 5: per old
   prototype, a softmax over the batch's samples of exp(cos / T)) or ``"prototypes"`` (the
   authors' code: per sample, a softmax over one past experience's prototypes of
   ``feature . p / ||p||`` / T, summed over past experiences, batch mean). Both take
   ``KL(old || new) = sum p_old (log p_old - log p_new)``, the direction of the authors' code.
   ``teacher_mode="eval"`` (default) runs the frozen encoder with BatchNorm's running statistics;
   ``"train"`` with the batch's statistics, as the authors' code does (it leaves the copy in train
   mode); here the copy's running statistics are not updated (they are never read in train mode).

The loss is ``supcon + prototypes_coef * prototype + distill_coef * distill``; ``distill_coef=0``
is the ablation without distillation (the frozen copy is kept but never run). Scale: on the
``"samples"`` axis the logits are cosines in [-1, 1], so at the default ``distill_temperature=2``
(the authors', tuned for their ``"prototypes"`` scores, which grow with the feature norm) the
softmax over a batch is nearly uniform and the term is small (1e-4 to 1e-3 on split-digits);
lower temperatures make it bite.

Optimiser. One SGD for the whole stream, as in the authors' code (momentum buffers carry over from
one experience to the next): encoder and projection head at ``lr`` with ``momentum`` and
``weight_decay``; prototypes at ``prototype_lr`` with no momentum and no weight decay (so a
prototype no loss touches never moves). The authors' code declares ``prototypes_lr = 0.01`` but
its per-epoch schedule (``adjust_learning_rate``) sets every parameter group's rate to the main
rate, so its prototypes in fact train at ``lr``; set ``prototype_lr`` equal to ``lr`` to reproduce
that. No step decay: the authors decay by 0.1 at epochs 120 and 160, which CPU budgets of one or
two epochs per experience never reach.

Prediction. ``predict(x)`` returns the cosine similarity between the normalised encoder feature
and every normalised prototype (the authors' class-incremental classifier), with minus infinity in
the columns of classes not trained yet (an untrained prototype is never scored; before any
training every column is minus infinity). The runner restricts the columns to the task's classes
for task-aware scoring, so ``task_id`` changes nothing.

Augmentation (:func:`augment_view`), batched on tensors with keyed generators: random crop with
``crop_padding`` pixels of zero padding and a horizontal flip with probability 1/2
(:func:`random_crop_flip`); on 3-channel images only, then colour jitter with probability 0.8
(brightness, then contrast, then saturation, a fixed order; each factor uniform in [0.6, 1.4],
torchvision's definitions, images in [0, 1]; no hue, as in the authors' CIFAR pipeline) and
grayscale with probability 0.2. 1-channel images get the crop and flip only. The key of view
``v`` of step ``s`` in epoch ``e`` is ``role_key(f"view-{v}", augment_key(context, e, s))``.

Other differences from the authors' code: one prototype matrix over the stream's classes (they
keep one bias-free linear head per task, initialised the same way); the frozen copy holds the
encoder only (they copy the projection head too, which the distillation never uses); their crop
is kornia's and their colour jitter kornia's ``ColorJitter``; the default backbone is ``"mlp"``,
as for the other learners here (``"resnet18-reduced"``, 160 features, is the nearest to theirs).

Randomness comes from the context's keys only (batch order, augmentation); the global generators
are used once, at construction, for the initial weights (the runner seeds them).
"""

from __future__ import annotations

import copy
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from protobench.continual.augment import random_crop_flip
from protobench.continual.backbones import build_backbone
from protobench.continual.experience import Experience, ExperienceData
from protobench.continual.learner import ContinualContext
from protobench.continual.learners.prd_losses import (
    DISTILL_AXES,
    prototype_loss,
    relation_distillation_loss,
    supervised_contrastive_loss,
)
from protobench.continual.learners.training import PREDICT_BATCH, augment_key, check_number
from protobench.fewshot.counter_rng import role_key

TEACHER_MODES = ("eval", "train")
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale
JITTER_STRENGTH = 0.4  # brightness, contrast and saturation factors uniform in [1 - 0.4, 1 + 0.4]
JITTER_PROBABILITY = 0.8
GRAYSCALE_PROBABILITY = 0.2


def to_grayscale(images: torch.Tensor) -> torch.Tensor:
    """Luma ``0.2989 R + 0.587 G + 0.114 B`` of (n, 3, H, W) images: (n, 1, H, W)."""
    weights = torch.tensor(GRAY_WEIGHTS, dtype=images.dtype, device=images.device)
    return (images * weights[:, None, None]).sum(1, keepdim=True)


def jitter_colour(images: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor,
                  saturation: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) images in [0, 1] with per-image factors (n,) applied in this order, each result
    clamped to [0, 1] (torchvision's definitions):

    - brightness: ``b * x``;
    - contrast: ``c * x + (1 - c) * mean``, the mean of the image's grayscale;
    - saturation: ``s * x + (1 - s) * grayscale(x)``.
    """
    def per_image(factor: torch.Tensor) -> torch.Tensor:
        return factor.to(images.device, images.dtype)[:, None, None, None]

    x = (images * per_image(brightness)).clamp(0.0, 1.0)
    c = per_image(contrast)
    x = (c * x + (1 - c) * to_grayscale(x).mean(dim=(1, 2, 3), keepdim=True)).clamp(0.0, 1.0)
    s = per_image(saturation)
    return (s * x + (1 - s) * to_grayscale(x)).clamp(0.0, 1.0)


def augment_view(images: torch.Tensor, key: int, padding: int = 4) -> torch.Tensor:
    """One random view of (n, C, H, W) images in [0, 1], a pure function of ``key``.

    :func:`random_crop_flip` with ``role_key("crop", key)``; then, for C = 3 only, from a generator
    seeded with ``role_key("colour", key)``: which images are jittered (probability 0.8), their
    brightness, contrast and saturation factors (uniform in [0.6, 1.4]) and which images turn gray
    (probability 0.2, drawn after the jitter; a gray image is repeated over the three channels).
    """
    views = random_crop_flip(images, role_key("crop", key), padding=padding)
    if images.shape[1] != 3:
        return views
    n = len(images)
    generator = torch.Generator().manual_seed(role_key("colour", key) % 2**63)
    jittered = (torch.rand(n, generator=generator) < JITTER_PROBABILITY).to(images.device)
    factors = 1.0 + JITTER_STRENGTH * (2.0 * torch.rand(3, n, generator=generator) - 1.0)
    gray = (torch.rand(n, generator=generator) < GRAYSCALE_PROBABILITY).to(images.device)
    views = torch.where(jittered[:, None, None, None], jitter_colour(views, *factors), views)
    return torch.where(gray[:, None, None, None], to_grayscale(views).expand_as(views), views)


def projection_head(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    """``Linear(in, hidden), ReLU, Linear(hidden, hidden), ReLU, Linear(hidden, out)``, no batch norm."""
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, out_features))


def frozen_copy(encoder: nn.Module, mode: str) -> nn.Module:
    """A copy of ``encoder`` with gradients off, in eval mode or (``mode="train"``) in train mode with
    BatchNorm using the batch's statistics without updating its running ones."""
    copied = copy.deepcopy(encoder).requires_grad_(False).train(mode == "train")
    for module in copied.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.track_running_stats = mode == "eval"
    return copied


class PRD:
    """Prototype-Sample Relation Distillation; see the module docstring.

    ``PRD(input_shape, device, n_classes, *, backbone="mlp", epochs=1, batch_size=64, lr=0.1,
    momentum=0.9, weight_decay=1e-4, prototype_lr=0.01, supcon_temperature=0.2, prototypes_coef=1.0,
    distill_coef=1.0, distill_temperature=2.0, distill_axis="samples", teacher_mode="eval",
    projection_hidden=512, projection_dim=128, augment=True, crop_padding=4)``; the defaults are the
    authors' (``augment=False`` trains on two identical views, for tests and ablations).
    """

    uses_task_id = False  # predict ignores task_id: the runner scores both protocols from one call

    version = "1"
    pretraining = None
    backbone_name: str  # set by __init__

    def __init__(self, input_shape: tuple[int, ...], device: str, n_classes: int, *, backbone: str = "mlp",
                 epochs: int = 1, batch_size: int = 64, lr: float = 0.1, momentum: float = 0.9,
                 weight_decay: float = 1e-4, prototype_lr: float = 0.01, supcon_temperature: float = 0.2,
                 prototypes_coef: float = 1.0, distill_coef: float = 1.0, distill_temperature: float = 2.0,
                 distill_axis: str = "samples", teacher_mode: str = "eval", projection_hidden: int = 512,
                 projection_dim: int = 128, augment: bool = True, crop_padding: int = 4) -> None:
        for name, value in (("n_classes", n_classes), ("epochs", epochs), ("batch_size", batch_size),
                            ("projection_hidden", projection_hidden), ("projection_dim", projection_dim)):
            check_number(name, value, low=1, integer=True)
        check_number("crop_padding", crop_padding, integer=True)
        for name, value in (("lr", lr), ("prototype_lr", prototype_lr), ("supcon_temperature", supcon_temperature),
                            ("distill_temperature", distill_temperature)):
            check_number(name, value, low_open=True)
        for name, value in (("momentum", momentum), ("weight_decay", weight_decay),
                            ("prototypes_coef", prototypes_coef), ("distill_coef", distill_coef)):
            check_number(name, value)
        if distill_axis not in DISTILL_AXES:
            raise ValueError(f"distill_axis must be one of {', '.join(DISTILL_AXES)}, got {distill_axis!r}")
        if teacher_mode not in TEACHER_MODES:
            raise ValueError(f"teacher_mode must be one of {', '.join(TEACHER_MODES)}, got {teacher_mode!r}")
        if not isinstance(augment, bool):
            raise ValueError(f"augment must be true or false, got {augment!r}")
        self.device = torch.device(device)
        self.n_classes, self.backbone_name = n_classes, backbone
        self.epochs, self.batch_size, self.augment, self.crop_padding = epochs, batch_size, augment, crop_padding
        self.lr, self.prototype_lr = lr, prototype_lr
        self.supcon_temperature, self.distill_temperature = supcon_temperature, distill_temperature
        self.prototypes_coef, self.distill_coef = prototypes_coef, distill_coef
        self.distill_axis, self.teacher_mode = distill_axis, teacher_mode
        self.encoder = build_backbone(backbone, tuple(input_shape)).to(self.device)
        features = self.encoder.out_features
        self.projection = projection_head(features, projection_hidden, projection_dim).to(self.device)
        bound = 1.0 / math.sqrt(features)
        self.prototypes = nn.Parameter(torch.empty(n_classes, features).uniform_(-bound, bound).to(self.device))
        self.optimizer = torch.optim.SGD(
            [{"params": [*self.encoder.parameters(), *self.projection.parameters()]},
             {"params": [self.prototypes], "lr": prototype_lr, "momentum": 0.0, "weight_decay": 0.0}],
            lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.past_classes: list[list[int]] = []  # each finished experience's classes (distinct sets, in order)
        self.teacher: nn.Module | None = None  # the encoder frozen at the end of the last experience
        self.teacher_prototypes: torch.Tensor | None = None  # (n_classes, d), frozen with it

    # --- classes ------------------------------------------------------------------------------
    @property
    def seen(self) -> list[int]:
        """The classes trained so far (sorted stream labels)."""
        return sorted({c for classes in self.past_classes for c in classes})

    def check_classes(self, classes) -> list[int]:
        """``classes`` as a sorted list; ValueError unless non-empty and within 0..n_classes - 1."""
        classes = sorted(int(c) for c in classes)
        if not classes or classes[0] < 0 or classes[-1] >= self.n_classes:
            raise ValueError(f"experience classes {classes} must be non-empty and within 0..{self.n_classes - 1} "
                             f"(n_classes={self.n_classes})")
        return classes

    # --- training -----------------------------------------------------------------------------
    def train_experience(self, experience: Experience, context: ContinualContext) -> dict:
        """Train on ``experience.train``, then freeze a copy of the encoder and the prototypes.

        The record: ``epochs``, ``steps``, ``examples`` (images seen, all epochs; each gives two
        views), ``loss``, ``supcon``, ``prototype`` and ``distill`` (per-image means over the last
        epoch; ``distill`` None when it was not computed: first experience or ``distill_coef=0``),
        ``prototype_drift`` (mean over the old classes of 1 - cos(prototype before, after) this
        experience; None on the first), ``prototype_lr`` and ``seconds``.
        """
        classes = self.check_classes(experience.classes)
        old = self.seen
        before = self.prototypes.detach().clone()
        record = self.fit(experience.train, context, old)
        drift = None
        if old:
            rows = torch.tensor(old, device=self.device)
            drift = (1.0 - F.cosine_similarity(before[rows], self.prototypes.detach()[rows], dim=1)).mean().item()
        if classes not in self.past_classes:
            self.past_classes.append(classes)
        self.teacher = frozen_copy(self.encoder, self.teacher_mode)
        self.teacher_prototypes = self.prototypes.detach().clone()
        return record | {"prototype_drift": drift, "prototype_lr": self.prototype_lr}

    def fit(self, data: ExperienceData, context: ContinualContext, old: list[int]) -> dict:
        """``epochs`` passes over ``data`` (batches in the order of ``context.key("order", epoch)``),
        distilling towards the frozen copy on the ``old`` classes; per-term means of the last epoch."""
        n = len(data)
        if n == 0:
            raise ValueError(f"experience {context.experience_index} has no training examples")
        distill = self.teacher is not None and self.distill_coef > 0 and bool(old)
        position = {c: i for i, c in enumerate(old)}
        targets = (torch.tensor(old, device=self.device),
                   [[position[c] for c in classes] for classes in self.past_classes]) if distill else None
        steps_per_epoch = math.ceil(n / self.batch_size)
        weights = torch.full((steps_per_epoch,), float(self.batch_size), device=self.device)
        weights[-1] = n - (steps_per_epoch - 1) * self.batch_size
        started = time.perf_counter()
        self.encoder.train()
        self.projection.train()
        with context.progress_bar(self.epochs * steps_per_epoch) as bar:
            for epoch in range(self.epochs):
                terms = []
                batches = data.batches(self.batch_size, key=context.key("order", epoch), epoch=epoch)
                for step, (x, y) in enumerate(batches):
                    x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                    values = self.losses(x, y, augment_key(context, epoch, step), targets)
                    total = values[0] + self.prototypes_coef * values[1] + self.distill_coef * values[2]
                    self.optimizer.zero_grad(set_to_none=True)
                    total.backward()
                    self.optimizer.step()
                    terms.append(torch.stack([total.detach(), *(v.detach() for v in values)]))
                    bar.update(1)
                means = ((weights @ torch.stack(terms).float()) / n).tolist()
                bar.set_postfix(loss=f"{means[0]:.4f}")
        return {"epochs": self.epochs, "steps": self.epochs * steps_per_epoch, "examples": self.epochs * n,
                "loss": means[0], "supcon": means[1], "prototype": means[2], "distill": means[3] if distill else None,
                "seconds": round(time.perf_counter() - started, 3)}

    def losses(self, x: torch.Tensor, y: torch.Tensor, key: int, old: tuple[torch.Tensor, list[list[int]]] | None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(supcon, prototype, distill)`` on a batch ``(x, y)``, the views drawn with ``key``.

        ``old`` is None (``distill`` is then 0, not computed) or the old classes (a tensor of stream
        labels) and the past experiences' classes as positions in it (the groups of the
        ``"prototypes"`` axis)."""
        if self.augment:
            views = [augment_view(x, role_key(f"view-{v}", key), self.crop_padding) for v in (0, 1)]
        else:
            views = [x, x]
        inputs, labels = torch.cat(views), y.repeat(2)
        features = self.encoder(inputs)
        embeddings = F.normalize(self.projection(features).float(), dim=1)
        supcon = supervised_contrastive_loss(embeddings, labels, self.supcon_temperature)
        proto = prototype_loss(features, labels, self.prototypes)
        if old is None:
            return supcon, proto, torch.zeros((), device=self.device)
        with torch.no_grad():
            old_features = self.teacher(inputs)
        rows, groups = old
        distill = relation_distillation_loss(features, self.prototypes[rows], old_features,
                                             self.teacher_prototypes[rows], self.distill_temperature,
                                             self.distill_axis, groups)
        return supcon, proto, distill

    # --- prediction ---------------------------------------------------------------------------
    def predict(self, x: torch.Tensor, task_id: int | None = None) -> torch.Tensor:
        """Float32 (n, n_classes): cos(encoder feature, prototype) per class, minus infinity for the
        classes not trained yet; the encoder in eval mode. ``task_id`` is not used."""
        self.encoder.eval()
        logits = torch.full((len(x), self.n_classes), -math.inf, device=self.device)
        seen = self.seen
        if not seen:
            return logits
        columns = torch.tensor(seen, device=self.device)
        with torch.no_grad():
            prototypes = F.normalize(self.prototypes[columns].float(), dim=1)
            scores = torch.cat([F.normalize(self.encoder(chunk.to(self.device)).float(), dim=1) @ prototypes.T
                                for chunk in x.split(PREDICT_BATCH)])
        logits[:, columns] = scores
        return logits

    # --- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Encoder, projection head, prototypes, optimiser (momentum buffers), the past experiences'
        classes, and the frozen encoder and prototypes (None before the first experience). No data."""
        return {"encoder": self.encoder.state_dict(), "projection": self.projection.state_dict(),
                "prototypes": self.prototypes.detach().clone(), "optimizer": self.optimizer.state_dict(),
                "past_classes": [list(c) for c in self.past_classes],
                "teacher": None if self.teacher is None else self.teacher.state_dict(),
                "teacher_prototypes": self.teacher_prototypes}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output; ValueError when ``state`` is another learner's."""
        missing = sorted(set(self.state_dict()) - set(state))
        if missing:
            raise ValueError(f"not a {type(self).__name__} state: it lacks {', '.join(missing)}")
        self.encoder.load_state_dict(state["encoder"])
        self.projection.load_state_dict(state["projection"])
        with torch.no_grad():
            self.prototypes.copy_(state["prototypes"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.past_classes = [[int(c) for c in classes] for classes in state["past_classes"]]
        self.teacher, self.teacher_prototypes = None, None
        if state["teacher"] is not None:
            self.teacher = frozen_copy(self.encoder, self.teacher_mode)
            self.teacher.load_state_dict(state["teacher"])
            self.teacher_prototypes = state["teacher_prototypes"].to(self.device)
