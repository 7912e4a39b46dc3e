"""scikit-learn's bundled handwritten digits (8x8, 1,797 images): the no-download default."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from protobench.fewshot.datasets.tensor import TensorSource


def load_digits_source(image_size: int = 28) -> TensorSource:
    """All ten digit classes, upsampled to ``image_size`` and scaled to [0, 1]; label = digit."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return TensorSource(images.contiguous(), digits.target, [str(d) for d in range(10)])
