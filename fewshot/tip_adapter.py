"""Baselines on the same encoder features as Proto-CLIP: zero-shot CLIP and Tip-Adapter / Tip-Adapter-F
(Zhang et al., "Tip-Adapter: Training-free Adaption of CLIP for Few-shot Classification", ECCV 2022,
following the authors' code gaopengcuhk/Tip-Adapter).

With normalised query features q, text prototypes T (N, d) (:func:`protobench.fewshot.protoclip.text_memory`),
cache keys K (S, d) (the normalised support features, in the code averaged over 10 augmented passes:
:func:`protobench.fewshot.protoclip.visual_memory`) and their one-hot labels V (S, N):

- zero-shot: ``100 * q T^T`` (:func:`zero_shot_logits`);
- Tip-Adapter: ``100 * q T^T + alpha * exp(-beta (1 - q K^T)) V`` (:func:`tip_adapter_logits`);
- Tip-Adapter-F: the same with the keys K fine-tuned (:func:`fine_tune_keys`: cross-entropy, AdamW
  lr 1e-3, eps 1e-4, PyTorch's default weight decay 0.01 as in the code, cosine annealing over all
  steps, batches of 256, 20 epochs; the training features may be several augmented views of the
  support, one per epoch in turn, standing in for the code's fresh augmentation every epoch). The
  code trains at fixed initial values (``init_alpha``, ``init_beta``: 1.17 and 1 for ImageNet) and
  searches (alpha, beta) again for the trained keys afterwards
  (:func:`protobench.fewshot.vl_learners.choose_tip_adapter_f` does so on validation episodes).

:func:`search_tip_adapter` is the code's grid search (beta outer, alpha inner, first strictly
best); the code's default grid is ``tip_grid((7, 3), (200, 20))``. The few-shot ProtoNet baseline
on frozen features is :func:`protobench.fewshot.protonet.prototype_logits` (nearest mean, squared
Euclidean) applied to encoder features.

Departures: the code selects Tip-Adapter-F's epoch on the test set; here the last epoch is kept
unless validation features are given, and then the best on those.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

LOGIT_SCALE = 100.0


def zero_shot_logits(query: torch.Tensor, text_prototypes: torch.Tensor, scale: float = LOGIT_SCALE) -> torch.Tensor:
    """``scale`` x cosine similarity of query (..., Q, d) to text prototypes (..., N, d) -> (..., Q, N)."""
    return scale * F.normalize(query, dim=-1) @ F.normalize(text_prototypes, dim=-1).transpose(-1, -2)


def cache_logits(affinity: torch.Tensor, values: torch.Tensor, beta: float) -> torch.Tensor:
    """``exp(-beta (1 - affinity)) @ values``: affinity (..., Q, S), values (..., S, N) -> (..., Q, N)."""
    return torch.exp(-beta * (1 - affinity)) @ values


def one_hot_values(labels: torch.Tensor, n_way: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The cache values: one-hot rows (..., S, n_way) of labels (..., S) in 0..n_way-1."""
    return F.one_hot(labels.long(), n_way).to(dtype)


def tip_adapter_logits(query: torch.Tensor, keys: torch.Tensor, key_labels: torch.Tensor,
                       text_prototypes: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Tip-Adapter logits (..., Q, N): zero-shot logits plus ``alpha`` x the cache model's.

    query (..., Q, d) is normalised; the keys (..., S, d) are used as given (the code normalises
    them when it builds the cache, and Tip-Adapter-F's trained keys are not re-normalised);
    key_labels (S,) or (..., S) in 0..N-1, N = text_prototypes.shape[-2].
    """
    query = F.normalize(query, dim=-1)
    values = one_hot_values(key_labels.to(query.device), text_prototypes.shape[-2], query.dtype)
    affinity = query @ keys.to(query.dtype).transpose(-1, -2)
    return zero_shot_logits(query, text_prototypes.to(query.dtype)) + alpha * cache_logits(affinity, values, beta)


def tip_grid(scale: tuple[float, float] = (7.0, 3.0), steps: tuple[int, int] = (200, 20)) -> tuple[list[float],
                                                                                                     list[float]]:
    """The code's search lists ``(betas, alphas)``: ``i (scale - 0.1) / steps + 0.1`` for i < steps."""
    betas = [i * (scale[0] - 0.1) / steps[0] + 0.1 for i in range(steps[0])]
    alphas = [i * (scale[1] - 0.1) / steps[1] + 0.1 for i in range(steps[1])]
    return betas, alphas


@dataclass(frozen=True)
class TipSearch:
    """The search's pick and its evidence: ``accuracies[i, j]`` for (``betas[i]``, ``alphas[j]``)."""

    alpha: float
    beta: float
    accuracy: float
    betas: tuple[float, ...]
    alphas: tuple[float, ...]
    accuracies: np.ndarray


def search_tip_adapter(query: torch.Tensor, labels: torch.Tensor, keys: torch.Tensor, key_labels: torch.Tensor,
                       text_prototypes: torch.Tensor, *, betas: Sequence[float] | None = None,
                       alphas: Sequence[float] | None = None) -> TipSearch:
    """The (alpha, beta) with the best validation accuracy of :func:`tip_adapter_logits`.

    Grid: ``betas`` and ``alphas``, by default :func:`tip_grid`'s. Ties go to the first best in
    beta-major order (the code keeps a setting only when strictly better).
    """
    default_betas, default_alphas = tip_grid()
    betas = list(default_betas if betas is None else betas)
    alphas = list(default_alphas if alphas is None else alphas)
    if not betas or not alphas:
        raise ValueError("need at least one beta and one alpha")
    with torch.no_grad():
        query = F.normalize(query.float(), dim=-1)
        values = one_hot_values(key_labels.to(query.device), text_prototypes.shape[-2])
        affinity = query @ keys.float().transpose(-1, -2)
        zero_shot = zero_shot_logits(query, text_prototypes.float())
        labels = labels.to(query.device).long()
        grid = np.zeros((len(betas), len(alphas)))
        for i, beta in enumerate(betas):
            cache = cache_logits(affinity, values, beta)
            for j, alpha in enumerate(alphas):
                grid[i, j] = ((zero_shot + alpha * cache).argmax(-1) == labels).double().mean().item()
    i, j = np.unravel_index(int(np.argmax(grid)), grid.shape)
    return TipSearch(float(alphas[j]), float(betas[i]), float(grid[i, j]), tuple(map(float, betas)),
                     tuple(map(float, alphas)), grid)


@dataclass(frozen=True)
class TipFineTuneRecord:
    """``losses``: mean loss per epoch; ``val_accuracies`` per epoch when validated; ``selected_epoch`` (1-based)."""

    losses: list[float]
    val_accuracies: list[float] | None
    selected_epoch: int


def fine_tune_keys(keys: torch.Tensor, key_labels: torch.Tensor, text_prototypes: torch.Tensor,
                   train_features: torch.Tensor, train_labels: torch.Tensor, alpha: float, beta: float, *,
                   n_epochs: int = 20, generator: torch.Generator, lr: float = 1e-3, eps: float = 1e-4,
                   weight_decay: float = 0.01, batch_size: int = 256,
                   validation: tuple[torch.Tensor, torch.Tensor] | None = None
                   ) -> tuple[torch.Tensor, TipFineTuneRecord]:
    """Tip-Adapter-F: cache keys (S, d) fine-tuned by cross-entropy of :func:`tip_adapter_logits`.

    ``train_features``: (M, d), or (A, M, d) views of the same M training images (epoch e uses
    view e mod A), with ``train_labels`` (M,). Batches are shuffled with ``generator`` (CPU).
    Returns the trained keys (a new tensor; ``keys`` is untouched) and the record; with
    ``validation`` (features, labels) the epoch with the best accuracy is kept (first best, as the
    code's strict comparison), else the last.
    """
    if isinstance(n_epochs, bool) or not isinstance(n_epochs, int) or n_epochs < 1:
        raise ValueError(f"n_epochs must be a positive integer, got {n_epochs!r}")
    views = train_features if train_features.dim() == 3 else train_features[None]
    if views.shape[1] != len(train_labels):
        raise ValueError(f"{views.shape[1]} training features for {len(train_labels)} labels")
    trained = torch.nn.Parameter(keys.detach().float().clone())
    text = F.normalize(text_prototypes.detach().float(), dim=-1)
    steps_per_epoch = -(-views.shape[1] // batch_size)
    optimizer = torch.optim.AdamW([trained], lr=lr, eps=eps, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, n_epochs * steps_per_epoch)
    train_labels = train_labels.long().to(trained.device)
    losses, val_accuracies = [], [] if validation is not None else None
    best = (-1.0, n_epochs, None)
    for epoch in range(1, n_epochs + 1):
        features = views[(epoch - 1) % len(views)].float().to(trained.device)
        order = torch.randperm(len(features), generator=generator).to(trained.device)
        epoch_losses = []
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            logits = tip_adapter_logits(features[batch], trained, key_labels, text, alpha, beta)
            loss = F.cross_entropy(logits, train_labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            epoch_losses.append(loss.item())
        losses.append(float(np.mean(epoch_losses)))
        if validation is not None:
            with torch.no_grad():
                logits = tip_adapter_logits(validation[0].float().to(trained.device), trained, key_labels, text,
                                            alpha, beta)
                val_accuracies.append((logits.argmax(-1).cpu() == validation[1].cpu()).float().mean().item())
            if val_accuracies[-1] > best[0]:
                best = (val_accuracies[-1], epoch, trained.detach().clone())
    final = best[2] if best[2] is not None else trained.detach().clone()
    return final, TipFineTuneRecord(losses, val_accuracies, best[1])
