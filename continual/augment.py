"""Batched training augmentation on image tensors: random crop with zero padding, horizontal flip.

Runs on a whole (n, C, H, W) batch at once on its device, with randomness from a ``torch.Generator``
seeded by a key (never the global RNG): the same key gives the same crops and flips.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(images: torch.Tensor, key: int, padding: int = 4, flip: bool = True) -> torch.Tensor:
    """``images`` (n, C, H, W), each zero-padded by ``padding`` pixels, cropped back to (H, W) at a
    random offset and, when ``flip``, mirrored left-right with probability 1/2. Offsets and flips
    are drawn on the CPU from a generator seeded with ``key`` (an integer in [0, 2**64))."""
    if images.ndim != 4:
        raise ValueError(f"images must be (n, C, H, W), got shape {tuple(images.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    n, _, height, width = images.shape
    generator = torch.Generator().manual_seed(key % 2**63)
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator)
    mirrored = torch.rand(n, generator=generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    if padding:
        padded = F.pad(images, (padding, padding, padding, padding))
        rows = (offsets[0][:, None] + torch.arange(height)).to(images.device)  # (n, H)
        cols = (offsets[1][:, None] + torch.arange(width)).to(images.device)  # (n, W)
        batch = torch.arange(n, device=images.device)[:, None, None]
        images = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    mirrored = mirrored.to(images.device)
    return torch.where(mirrored[:, None, None, None], images.flip(-1), images).contiguous()
