"""An example method living outside protobench: nearest class mean on raw pixels.

protobench finds it by the entry point ``raw-pixels`` in the group ``protobench.methods``
(see this package's pyproject.toml); ``protobench run quick --methods raw-pixels`` runs it.
It satisfies :class:`protobench.fewshot.learner.EmbeddingLearner`: ``embed`` and ``score``,
and says what it is (``version``, ``backbone_name``, ``pretraining``).
"""

from __future__ import annotations

import torch

from protobench.fewshot.learner import TaskBatch
from protobench.fewshot.protonet import prototype_logits


class RawPixelPrototypes:
    """No training: an image's features are its pixels; classes are scored by squared distance
    to the mean support image."""

    version = "0.2.0"
    backbone_name = "identity"
    pretraining = None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).float()

    def score(self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor,
              task: TaskBatch) -> torch.Tensor:
        return prototype_logits(support, support_labels, task.n_way, query)


def raw_pixels(input_shape: tuple[int, ...], device: str) -> RawPixelPrototypes:
    """Nearest class mean on raw pixels (an example external method)."""
    return RawPixelPrototypes()
