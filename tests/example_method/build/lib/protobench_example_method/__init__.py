"""An example method living outside protobench: nearest class mean on raw pixels.

protobench finds it by the entry point ``raw-pixels`` in the group ``protobench.methods``
(see this package's pyproject.toml); ``protobench run quick --methods raw-pixels`` runs it.
"""

from __future__ import annotations

import torch

from fewshot.protonet import prototype_logits


class RawPixelPrototypes:
    """No training: an image's features are its pixels; classes are scored by squared distance
    to the mean support image."""

    version = "0.1.0"
    backbone_name = "identity"
    pretraining = None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).float()

    logits_from_embeddings = staticmethod(prototype_logits)


def raw_pixels(input_shape: tuple[int, ...], device: str) -> RawPixelPrototypes:
    """Nearest class mean on raw pixels (an example external method)."""
    return RawPixelPrototypes()
