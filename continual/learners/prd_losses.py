"""The three losses of PRD (Asadi et al., ICML 2023, "Prototype-Sample Relation Distillation").

- :func:`supervised_contrastive_loss`: SupCon (Khosla et al. 2020) over L2-normalised embeddings;
- :func:`prototype_loss`: one minus the cosine between each (detached) feature and its class prototype;
- :func:`relation_distillation_loss`: the KL divergence between the old and the new model's
  softmax-normalised prototype-sample similarities, normalised over the batch's samples (the
  paper's Eq. 5) or over the prototypes (the authors' code).

Every function computes in float32 or wider (:func:`widen`: the runner trains under bfloat16
autocast on CUDA) and returns a scalar tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

DISTILL_AXES = ("samples", "prototypes")


def widen(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, or in its own dtype when wider (float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def supervised_contrastive_loss(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float,
                                base_temperature: float = 0.07) -> torch.Tensor:
    """SupCon of ``embeddings`` (m, d), L2-normalised rows (every view of every image: two views
    of n images give m = 2n rows), with integer ``labels`` (m,).

    For anchor ``i`` with positives ``P(i) = {p != i: y_p = y_i}`` and contrast set ``A(i) = {a != i}``:

        l_i = -(temperature / base_temperature) / |P(i)| * sum_{p in P(i)} log( exp(z_i . z_p / temperature)
                                                                   / sum_{a in A(i)} exp(z_i . z_a / temperature) )

    and the loss is the mean of ``l_i`` over the anchors that have at least one positive. An anchor
    with no positive in the batch contributes nothing (it is neither summed nor counted; the
    authors' code divides by zero there, but with two views every anchor has its other view);
    when no anchor has a positive the loss is 0 (still attached to the graph).
    ``temperature / base_temperature`` is the authors' scaling (``base_temperature`` 0.07).
    """
    if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
        raise ValueError(f"embeddings must be (m, d) and labels (m,), got {tuple(embeddings.shape)} and "
                         f"{tuple(labels.shape)}")
    z = widen(embeddings)
    not_self = ~torch.eye(len(z), dtype=torch.bool, device=z.device)
    positives = (labels[:, None] == labels[None, :]) & not_self
    n_positives = positives.sum(1)
    anchors = n_positives > 0
    if not anchors.any():
        return z.sum() * 0.0
    logits = (z[anchors] @ z.T / temperature).masked_fill(~not_self[anchors], -torch.inf)
    log_prob = logits - logits.logsumexp(1, keepdim=True)
    mean_positive = log_prob.masked_fill(~positives[anchors], 0.0).sum(1) / n_positives[anchors]
    return -(temperature / base_temperature) * mean_positive.mean()


def prototype_loss(features: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """``mean_i (1 - cos(features_i, prototypes[labels_i]))`` for ``features`` (m, d), ``labels`` (m,)
    and ``prototypes`` (C, d).

    The features are detached: the loss trains the prototypes of the labels present (the current
    experience's classes) and nothing else. A zero feature has cosine 0 with every prototype.
    """
    f = F.normalize(widen(features.detach()), dim=1)
    p = F.normalize(widen(prototypes[labels]), dim=1)
    return (1.0 - (f * p).sum(1)).mean()


def relation_distillation_loss(new_features: torch.Tensor, new_prototypes: torch.Tensor,
                               old_features: torch.Tensor, old_prototypes: torch.Tensor, temperature: float,
                               axis: str = "samples", groups: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
    """KL(old || new) between prototype-sample similarity distributions.

    ``new_features`` (m, d): the batch through the trained encoder; ``old_features`` (m, d): the same
    batch through the frozen copy; ``new_prototypes`` (K, d): the current, trainable prototypes of
    the K old classes; ``old_prototypes`` (K, d): the frozen ones. The old side is detached. With
    ``KL(p_old || p_new) = sum p_old (log p_old - log p_new)``:

    - ``axis="samples"`` (the paper's Eq. 5): ``s_ik = cos(f_i, p_k)``; for each old prototype ``k``
      a softmax over the m samples, ``q_k(i) = exp(s_ik / T) / sum_j exp(s_jk / T)``; the loss is
      ``sum_k KL(q_k^old || q_k^new)`` (summed over the old prototypes). ``groups`` is not used.
    - ``axis="prototypes"`` (the authors' code): ``s_ik = f_i . p_k / ||p_k||`` (the feature is NOT
      normalised); for each sample a softmax over the prototypes of one group (one past
      experience's classes: column positions in 0..K-1; None means one group of all K), the KL
      averaged over the samples, summed over the groups.

    No ``T^2`` factor (the authors' code has none).
    """
    if axis not in DISTILL_AXES:
        raise ValueError(f"axis must be one of {', '.join(DISTILL_AXES)}, got {axis!r}")
    new_f, new_p = widen(new_features), F.normalize(widen(new_prototypes), dim=1)
    old_f, old_p = widen(old_features.detach()), F.normalize(widen(old_prototypes.detach()), dim=1)
    if axis == "samples":
        new_log = torch.log_softmax(F.normalize(new_f, dim=1) @ new_p.T / temperature, dim=0)
        old_log = torch.log_softmax(F.normalize(old_f, dim=1) @ old_p.T / temperature, dim=0)
        return (old_log.exp() * (old_log - new_log)).sum()
    new_scores, old_scores = new_f @ new_p.T / temperature, old_f @ old_p.T / temperature
    total = new_f.new_zeros(())
    for group in [range(len(new_p))] if groups is None else groups:
        columns = torch.as_tensor(list(group), dtype=torch.long, device=new_f.device)
        new_log = torch.log_softmax(new_scores[:, columns], dim=1)
        old_log = torch.log_softmax(old_scores[:, columns], dim=1)
        total = total + (old_log.exp() * (old_log - new_log)).sum(1).mean()
    return total
