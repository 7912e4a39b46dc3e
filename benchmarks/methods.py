"""The built-in methods."""

from __future__ import annotations

from benchmarks.registry import register_method
from fewshot.protonet import PrototypicalNetwork


@register_method("protonet")
def protonet(input_shape: tuple[int, ...], device: str) -> PrototypicalNetwork:
    """Prototypical Networks with a Conv-4 backbone (Snell et al. 2017), trained episodically."""
    return PrototypicalNetwork(in_channels=input_shape[0], device=device)
